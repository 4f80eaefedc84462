import itertools

import numpy as np
import pytest
import torch

from forecasting.model import DataShape, ModelConfig, TemporalAttentionLSTM, monotone, pinball_loss
from forecasting.settings import ModelSettings
from forecasting.train import gather_windows

B, L, F, K = 16, 12, 5, 3
CONFIGS = [
    dict(
        attention=a,
        attention_kind=kind,
        attention_heads=heads,
        input_attention=ia,
        quantiles=q,
        ticker_embedding=e,
        num_layers=layers,
    )
    for a, (kind, heads), ia, q, e, layers in itertools.product(
        [True, False], [("additive", 1), ("dot", 1), ("dot", 4)], [False, True], [(), (0.1, 0.5, 0.9)], [0, 4], [1, 2]
    )
    if a or (kind, heads) == ("additive", 1)  # the attention kind only matters with attention on
]


def build(**overrides) -> TemporalAttentionLSTM:
    torch.manual_seed(0)
    arch = ModelSettings(hidden_size=16, attention_size=8, **overrides)
    config = ModelConfig(arch, DataShape(n_features=F, n_horizons=K, lookback=L, n_tickers=3))
    return TemporalAttentionLSTM(config)


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_shapes_and_weights_for_every_configuration(overrides):
    model = build(**overrides)
    out = model(torch.randn(B, L, F), torch.randint(0, 4, (B,)))
    assert out.mean.shape == (B, K)
    if overrides["attention"]:
        assert out.attention.shape == (B, L) and torch.all(out.attention >= 0)
        torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(B))
    else:
        assert out.attention is None
    if overrides["input_attention"]:
        assert out.feature_attention.shape == (B, F) and torch.all(out.feature_attention >= 0)
        torch.testing.assert_close(out.feature_attention.sum(dim=1), torch.ones(B))
    else:
        assert out.feature_attention is None
    if overrides["quantiles"]:
        assert out.quantiles.shape == (B, K, 3)
        assert torch.all(out.quantiles[..., 1:] >= out.quantiles[..., :-1])  # never cross
    else:
        assert out.quantiles is None


def test_attention_off_is_a_plain_lstm():
    model = build(attention=False)
    assert model.attention is None and model.input_attention is None and isinstance(model.encoder, torch.nn.LSTM)
    assert model.head[0].in_features == 16  # the last state only, no context


def test_attention_is_not_trivially_uniform_and_reaches_early_steps():
    model = build().eval()
    x = torch.randn(4, L, F, requires_grad=True)
    out = model(x)
    assert out.attention.std(dim=1).mean() > 0
    out.mean.sum().backward()
    assert x.grad[:, 0].abs().sum() > 0  # the first step of the window reaches the output


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(attention_kind="dot", attention_heads=2),
        dict(input_attention=True),
        dict(quantiles=(0.1, 0.5, 0.9), ticker_embedding=4),
        dict(bidirectional=True),
        dict(self_attention=True, attention_heads=4),
        dict(bidirectional=True, self_attention=True, attention=False),
    ],
)
def test_the_model_can_overfit_a_tiny_batch(overrides):
    """It can learn: 32 fixed samples are memorised to a small fraction of their variance."""
    model = build(dropout=0.0, **overrides)
    torch.manual_seed(1)
    x, y, tickers = torch.randn(32, L, F), torch.randn(32, K), torch.randint(1, 4, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    levels = torch.tensor(overrides.get("quantiles", ()))
    target = 0.05 * y.var().item()
    for step in range(400):  # at most 400 steps; it stops once memorised
        out = model(x, tickers)
        loss = pinball_loss(out.quantiles, y, levels) if out.quantiles is not None else torch.mean((out.mean - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 19 and torch.mean((model(x, tickers).mean - y) ** 2).item() < target:
            break
    mse = torch.mean((model(x, tickers).mean - y) ** 2).item()
    assert mse < target


def test_the_quantile_head_learns_quantiles_and_forecasts_their_median():
    """Targets drawn from a skewed law (exponential: 10% 0.105, median 0.693, mean 1, 90% 2.303) that the inputs
    say nothing about: trained on the pinball loss, the head finds the quantiles, and the point forecast is the
    median, not the mean."""
    model = build(dropout=0.0, quantiles=(0.1, 0.5, 0.9))
    g = torch.Generator().manual_seed(3)
    levels = torch.tensor([0.1, 0.5, 0.9])
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    x = torch.randn(256, L, F, generator=g)
    for _ in range(150):
        y = torch.empty(256, K).exponential_(generator=g)  # fresh draws: nothing to memorise
        loss = pinball_loss(model(x).quantiles, y, levels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model.eval()(torch.randn(2000, L, F, generator=g))
    fresh = torch.empty(2000, K).exponential_(generator=g)
    below = [(fresh < out.quantiles[..., q]).float().mean().item() for q in range(3)]
    assert below == pytest.approx([0.1, 0.5, 0.9], abs=0.04)  # measured 0.098, 0.487, 0.897
    assert out.mean.mean().item() == pytest.approx(np.log(2), abs=0.1)  # the median; the mean would be 1.0


def test_monotone_and_pinball_by_hand():
    q = monotone(torch.tensor([[0.0, -5.0, 5.0]]))
    assert torch.all(q[..., 1:] > q[..., :-1])
    # target 1.0 against quantile forecasts 0 at levels 0.1 and 0.9: 0.1*1 and 0.9*1 -> mean 0.5
    loss = pinball_loss(torch.zeros(1, 1, 2), torch.ones(1, 1), torch.tensor([0.1, 0.9]))
    assert loss.item() == pytest.approx(0.5)
    loss = pinball_loss(torch.zeros(1, 1, 2), -torch.ones(1, 1), torch.tensor([0.1, 0.9]))
    assert loss.item() == pytest.approx(0.5)  # 0.9*1 and 0.1*1


def test_gather_windows_matches_the_strided_view():
    from numpy.lib.stride_tricks import sliding_window_view

    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    view = sliding_window_view(X, 4, axis=0).transpose(0, 2, 1)
    ends = np.array([3, 10, 19])
    got = gather_windows(torch.from_numpy(X), torch.from_numpy(ends), 4).numpy()
    np.testing.assert_array_equal(got, view[ends - 3])


@pytest.mark.parametrize(
    "overrides",
    [
        dict(bidirectional=True),
        dict(self_attention=True, attention_heads=4),
        dict(bidirectional=True, self_attention=True),
    ],
)
def test_the_seed_variants_read_the_whole_window_and_keep_its_shapes(overrides):
    """A bidirectional encoder and a self-attention block: same outputs and attention shapes as the base model,
    every day of the window reaches the forecast, and the parts they add exist (so the setting is not ignored)."""
    model = build(**overrides).eval()
    x = torch.randn(B, L, F, requires_grad=True)
    out = model(x)
    assert out.mean.shape == (B, K) and out.attention.shape == (B, L)
    out.mean.sum().backward()
    assert (x.grad.abs().sum(dim=(0, 2)) > 0).all()  # the first and the last day both matter
    base = sum(p.numel() for p in build().parameters())
    assert sum(p.numel() for p in model.parameters()) > base
    assert (model.merge is not None) == overrides.get("bidirectional", False)
    assert (model.block is not None) == overrides.get("self_attention", False)


def test_self_attention_needs_heads_that_divide_the_hidden_size():
    with pytest.raises(ValueError, match="divisible"):
        ModelSettings(hidden_size=10, self_attention=True, attention_heads=4)
