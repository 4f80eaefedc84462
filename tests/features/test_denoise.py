import numpy as np
import polars as pl
import pytest

from features.denoise import MAD_TO_SIGMA, denoise, ewma, hampel_returns
from features.settings import DenoiseSettings


def test_ewma_by_hand():
    # span 3 -> alpha 0.5: 1, 0.5*2 + 0.5*1, 0.5*4 + 0.5*1.5
    assert ewma(np.array([1.0, 2.0, 4.0]), span=3) == pytest.approx([1.0, 1.5, 2.75])


def test_polars_ewma_matches_the_reference_recursion():
    x = np.log(np.linspace(10, 20, 50))
    frame = pl.DataFrame({"ticker": ["A"] * 50, "adj_close": np.exp(x)})
    got = denoise(frame, DenoiseSettings(method="ewma", ewma_span=7))["log_price_dn"].to_numpy()
    np.testing.assert_allclose(got, ewma(x, 7), rtol=0, atol=1e-12)


def test_hampel_clips_an_outlying_return_by_hand():
    returns = np.array([0.01, -0.01, 0.02, -0.02, 0.5])
    lp = np.concatenate(([0.0], np.cumsum(returns)))
    out = hampel_returns(lp, window=5, n_sigmas=3)
    # window of the last return: median 0.01, |r - 0.01| = 0, .02, .01, .03, .49 -> MAD 0.02
    bound = 0.01 + 3 * MAD_TO_SIGMA * 0.02
    np.testing.assert_allclose(np.diff(out), [0.01, -0.01, 0.02, -0.02, bound], atol=1e-15)
    assert out[0] == 0.0


def test_hampel_leaves_normal_returns_alone():
    rng = np.random.default_rng(0)
    lp = np.cumsum(rng.normal(0, 0.01, 300))
    out = hampel_returns(lp, window=21, n_sigmas=8)
    np.testing.assert_allclose(out, lp, atol=1e-12)


@pytest.mark.parametrize("method", ["hampel", "ewma"])
def test_filters_are_causal(method):
    rng = np.random.default_rng(3)
    prices = np.exp(np.cumsum(rng.normal(0, 0.02, 200)))
    changed = prices.copy()
    changed[120:] *= rng.uniform(0.2, 5.0, 80)
    s = DenoiseSettings(method=method, hampel_window=10)
    a = denoise(pl.DataFrame({"ticker": ["A"] * 200, "adj_close": prices}), s)["log_price_dn"].to_numpy()
    b = denoise(pl.DataFrame({"ticker": ["A"] * 200, "adj_close": changed}), s)["log_price_dn"].to_numpy()
    np.testing.assert_array_equal(a[:120], b[:120])
    assert not np.allclose(a[120:], b[120:])


def test_denoise_restarts_per_ticker():
    frame = pl.DataFrame({"ticker": ["A"] * 3 + ["B"] * 3, "adj_close": [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]})
    out = denoise(frame, DenoiseSettings(method="ewma", ewma_span=3))["log_price_dn"].to_numpy()
    assert out[3] == pytest.approx(np.log(8.0))  # B starts from its own first value
