"""TemporalAttentionLSTM: optional input attention, an LSTM encoder, temporal attention over its
states, and one head that emits every horizon (and quantiles) at once.

Shapes: B batch, L lookback, F features, H hidden size, K horizons, Q quantiles, A attention width.
With `attention=False` (and no input attention) the same class is a plain LSTM: the ablation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from forecasting.settings import ModelSettings


@dataclass(frozen=True)
class DataShape:
    """What the data fixes about a network: how many inputs, outputs and tickers, and the window length."""

    n_features: int
    n_horizons: int
    lookback: int = 0  # needed by input attention (it scores each variable's whole window)
    n_tickers: int = 0  # embedding rows besides index 0, which stands for "unknown ticker"


@dataclass(frozen=True)
class ModelConfig:
    """A network = the hyperparameters a user chose (`ModelSettings`, their one source of truth, defaults and
    validation included) + the shape of the data it reads. Nothing here has a default of its own."""

    arch: ModelSettings
    shape: DataShape

    def to_dict(self) -> dict:
        return {"arch": self.arch.model_dump(mode="json"), "shape": asdict(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict) -> ModelConfig:
        if "arch" not in raw:  # checkpoint format 2 (nightcast 0.2) stored one flat dict
            shape_keys = {f.name for f in fields(DataShape)}
            raw = {
                "arch": {k: v for k, v in raw.items() if k not in shape_keys},
                "shape": {k: v for k, v in raw.items() if k in shape_keys},
            }
        return cls(ModelSettings.model_validate(raw["arch"]), DataShape(**raw["shape"]))


class Forecast(NamedTuple):
    mean: torch.Tensor  # (B, K) point forecast (the median when quantiles are on)
    attention: torch.Tensor | None  # (B, L) temporal weights, sum to 1 over L
    quantiles: torch.Tensor | None = None  # (B, K, Q), non-decreasing along Q
    feature_attention: torch.Tensor | None = None  # (B, F) input weights, sum to 1 over F


class InputAttention(nn.Module):
    """Scores each input variable from its whole window (as DA-RNN's input stage does) and reweights it.

    DA-RNN also conditions on the previous encoder state, which forces a step-by-step
    LSTMCell loop; scoring once per window keeps the encoder a fused LSTM.
    """

    def __init__(self, lookback: int, width: int):
        super().__init__()
        self.project = nn.Linear(lookback, width)
        self.score = nn.Linear(width, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x (B, L, F)
        series = x.transpose(1, 2)  # (B, F, L): one row per input variable
        weights = torch.softmax(self.score(torch.tanh(self.project(series))).squeeze(-1), dim=1)  # (B, F)
        return x * weights.unsqueeze(1) * x.shape[-1], weights  # scaled so uniform weights change nothing


class AdditiveAttention(nn.Module):
    """Bahdanau attention over encoder states with the last state as query."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.keys = nn.Linear(hidden, width, bias=False)
        self.query = nn.Linear(hidden, width)
        self.score = nn.Linear(width, 1, bias=False)

    def forward(self, states: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # states (B, L, H), query (B, H)
        energy = torch.tanh(self.keys(states) + self.query(query).unsqueeze(1))  # (B, L, A)
        weights = torch.softmax(self.score(energy).squeeze(-1), dim=1)  # (B, L)
        return torch.bmm(weights.unsqueeze(1), states).squeeze(1), weights  # (B, H), (B, L)


class DotProductAttention(nn.Module):
    """Scaled dot-product attention, `heads` heads, last state as the single query."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.out = nn.Linear(hidden, hidden)

    def forward(self, states: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, H = states.shape
        q = self.q(query).view(B, self.heads, 1, self.head_dim)  # (B, h, 1, d)
        k = self.k(states).view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, h, L, d)
        v = self.v(states).view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, h, L, d)
        weights = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, dim=-1)  # (B, h, 1, L)
        context = (weights @ v).reshape(B, H)  # (B, H)
        return self.out(context), weights.squeeze(2).mean(dim=1)  # (B, H), (B, L) averaged over heads


class SelfAttentionBlock(nn.Module):
    """Multi-head self-attention over the encoder states, then a position-wise feed-forward layer, each with a
    residual connection and layer norm (post-norm, as in the original transformer). Every state is a day of the
    window, which holds only the past: attending across it in both directions stays causal."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attend = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * hidden, hidden)
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        # states (B, L, H)
        attended, _ = self.attend(states, states, states, need_weights=False)
        states = self.norm1(states + attended)
        return self.norm2(states + self.ffn(states))  # (B, L, H)


class TemporalAttentionLSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        a, shape = config.arch, config.shape
        self.input_attention = InputAttention(shape.lookback, a.attention_size) if a.input_attention else None
        between_layers = a.dropout if a.num_layers > 1 else 0.0
        self.encoder = nn.LSTM(
            shape.n_features,
            a.hidden_size,
            a.num_layers,
            batch_first=True,
            dropout=between_layers,
            bidirectional=a.bidirectional,
        )
        # both directions' states (2H) back to H, so that everything after the encoder is the same network
        self.merge = nn.Linear(2 * a.hidden_size, a.hidden_size) if a.bidirectional else None
        self.block = SelfAttentionBlock(a.hidden_size, a.attention_heads, a.dropout) if a.self_attention else None
        if not a.attention:
            self.attention = None
        elif a.attention_kind == "dot":
            self.attention = DotProductAttention(a.hidden_size, a.attention_heads)
        else:
            self.attention = AdditiveAttention(a.hidden_size, a.attention_size)
        self.embedding = nn.Embedding(shape.n_tickers + 1, a.ticker_embedding) if a.ticker_embedding else None
        head_in = a.hidden_size * (2 if a.attention else 1) + a.ticker_embedding
        self.n_outputs = max(len(a.quantiles), 1)
        self.head = nn.Sequential(
            nn.Linear(head_in, a.hidden_size),
            nn.GELU(),
            nn.Dropout(a.dropout),
            nn.Linear(a.hidden_size, shape.n_horizons * self.n_outputs),
        )

    def forward(self, x: torch.Tensor, ticker: torch.Tensor | None = None) -> Forecast:
        # x (B, L, F); ticker (B,) embedding index, 0 = unknown
        feature_weights = None
        if self.input_attention is not None:
            x, feature_weights = self.input_attention(x)  # (B, L, F), (B, F)
        states, _ = self.encoder(x)  # (B, L, H), or (B, L, 2H) read both ways
        if self.merge is not None:
            states = self.merge(states)  # (B, L, H)
        if self.block is not None:
            states = self.block(states)  # (B, L, H)
        last = states[:, -1]  # (B, H)
        parts, weights = [last], None
        if self.attention is not None:
            context, weights = self.attention(states, last)  # (B, H), (B, L)
            parts.insert(0, context)
        if self.embedding is not None:
            index = ticker if ticker is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)
            parts.append(self.embedding(index))  # (B, E)
        out = self.head(torch.cat(parts, dim=1))  # (B, K * Q)
        if not self.config.arch.quantiles:
            return Forecast(out, weights, None, feature_weights)
        quantiles = monotone(out.view(len(out), self.config.shape.n_horizons, self.n_outputs))  # (B, K, Q)
        return Forecast(quantiles[..., self.median_index], weights, quantiles, feature_weights)

    @property
    def median_index(self) -> int:
        levels = self.config.arch.quantiles
        return min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))


def monotone(raw: torch.Tensor) -> torch.Tensor:
    """Non-crossing quantiles: the first output, then cumulative softplus increments along the last axis."""
    return torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(F.softplus(raw[..., 1:]), dim=-1)], dim=-1)


def pinball_loss(
    quantiles: torch.Tensor, target: torch.Tensor, levels: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean quantile (pinball) loss; quantiles (B, K, Q), target (B, K), levels (Q,); `weight` (B,) weights
    the rows (a padded batch's filler rows have weight 0)."""
    error = target.unsqueeze(-1) - quantiles  # (B, K, Q)
    loss = torch.maximum(levels * error, (levels - 1) * error)
    if weight is None:
        return loss.mean()
    return (loss.flatten(1).mean(dim=1) * weight).sum() / weight.sum()
