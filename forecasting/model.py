"""TemporalAttentionLSTM: an LSTM encoder, temporal attention over its states, one multi-horizon head.

Shapes: B batch, L lookback, F features, H hidden size, K horizons.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    n_features: int
    n_horizons: int
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.1
    attention: bool = True
    attention_size: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


class Forecast(NamedTuple):
    mean: torch.Tensor  # (B, K) scaled forward log returns, one per horizon
    attention: torch.Tensor | None  # (B, L) weights over the lookback, None without attention


class TemporalAttention(nn.Module):
    """Additive (Bahdanau) attention over encoder states with the last state as query."""

    def __init__(self, hidden_size: int, attention_size: int):
        super().__init__()
        self.keys = nn.Linear(hidden_size, attention_size, bias=False)
        self.query = nn.Linear(hidden_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def forward(self, states: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # states (B, L, H), query (B, H)
        energy = torch.tanh(self.keys(states) + self.query(query).unsqueeze(1))  # (B, L, A)
        weights = torch.softmax(self.score(energy).squeeze(-1), dim=1)  # (B, L), sums to 1 over L
        context = torch.bmm(weights.unsqueeze(1), states).squeeze(1)  # (B, H)
        return context, weights


class TemporalAttentionLSTM(nn.Module):
    """LSTM encoder + temporal attention; `attention=False` gives the plain-LSTM ablation."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = nn.LSTM(
            c.n_features,
            c.hidden_size,
            c.num_layers,
            batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        self.attention = TemporalAttention(c.hidden_size, c.attention_size) if c.attention else None
        head_in = 2 * c.hidden_size if c.attention else c.hidden_size
        self.head = nn.Sequential(
            nn.Linear(head_in, c.hidden_size), nn.GELU(), nn.Dropout(c.dropout), nn.Linear(c.hidden_size, c.n_horizons)
        )

    def forward(self, x: torch.Tensor) -> Forecast:
        # x (B, L, F)
        states, _ = self.encoder(x)  # (B, L, H)
        last = states[:, -1]  # (B, H)
        if self.attention is None:
            return Forecast(self.head(last), None)
        context, weights = self.attention(states, last)  # (B, H), (B, L)
        return Forecast(self.head(torch.cat([context, last], dim=1)), weights)  # (B, K)
