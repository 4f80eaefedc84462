import numpy as np
import pytest
import torch

from forecasting.model import ModelConfig, TemporalAttentionLSTM
from forecasting.train import gather_windows


@pytest.mark.parametrize("layers", [1, 2])
def test_attention_weights_are_a_distribution_over_the_lookback(layers):
    torch.manual_seed(0)
    model = TemporalAttentionLSTM(
        ModelConfig(n_features=6, n_horizons=5, hidden_size=16, num_layers=layers, attention_size=8)
    )
    out = model(torch.randn(32, 40, 6))
    assert out.mean.shape == (32, 5)
    assert out.attention.shape == (32, 40)
    assert torch.all(out.attention >= 0)
    torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(32))
    assert out.attention.std(dim=1).mean() > 0  # not trivially uniform


def test_attention_off_is_a_plain_lstm():
    model = TemporalAttentionLSTM(ModelConfig(n_features=4, n_horizons=3, hidden_size=8, attention=False))
    out = model(torch.randn(5, 10, 4))
    assert out.mean.shape == (5, 3) and out.attention is None
    assert model.attention is None and isinstance(model.encoder, torch.nn.LSTM)
    assert model.head[0].in_features == 8  # last state only, no context


def test_forecast_depends_on_early_steps_through_attention():
    torch.manual_seed(1)
    model = TemporalAttentionLSTM(ModelConfig(n_features=3, n_horizons=2, hidden_size=8, attention_size=4)).eval()
    x = torch.randn(1, 20, 3, requires_grad=True)
    model(x).mean.sum().backward()
    assert x.grad[0, 0].abs().sum() > 0  # the first step of the window reaches the output


def test_gather_windows_matches_the_strided_view():
    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    from numpy.lib.stride_tricks import sliding_window_view

    view = sliding_window_view(X, 4, axis=0).transpose(0, 2, 1)
    ends = np.array([3, 10, 19])
    got = gather_windows(torch.from_numpy(X), torch.from_numpy(ends), 4).numpy()
    np.testing.assert_array_equal(got, view[ends - 3])
