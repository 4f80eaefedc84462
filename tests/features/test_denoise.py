import numpy as np
import polars as pl
import pytest

from features.denoise import (
    MAD_TO_SIGMA,
    denoise,
    ewma,
    hampel_returns,
    kalman_gains,
    kalman_local_level,
    wavelet_trailing,
)
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


@pytest.mark.parametrize("method", ["hampel", "ewma", "kalman", "wavelet"])
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


def test_kalman_by_hand():
    # q = r = 1, P0 = 1: K1 = 2/3, P1 = 2/3; K2 = (5/3) / (8/3) = 5/8
    out = kalman_local_level(np.array([0.0, 3.0, 8.0]), q=1.0, r=1.0)
    assert out == pytest.approx([0.0, 2.0, 2.0 + 5 / 8 * 6.0])


def test_kalman_matches_the_plain_recursion_through_the_steady_state():
    rng = np.random.default_rng(5)
    y = np.cumsum(rng.normal(0, 0.01, 2000)) + rng.normal(0, 0.01, 2000)
    q, r = 1e-5, 1e-4
    ref, x, p = [y[0]], y[0], r
    for t in range(1, len(y)):
        p_pred = p + q
        k = p_pred / (p_pred + r)
        x = x + k * (y[t] - x)
        p = (1 - k) * p_pred
        ref.append(x)
    np.testing.assert_allclose(kalman_local_level(y, q, r), ref, rtol=0, atol=1e-12)
    gains = kalman_gains(q, r)
    k_ss = gains[-1]
    p_ss = k_ss * r  # steady state: P = K r and K = (P + q) / (P + q + r)
    assert k_ss == pytest.approx((p_ss + q) / (p_ss + q + r), rel=1e-9)


def test_wavelet_matches_a_window_by_window_reference():
    import pywt

    rng = np.random.default_rng(2)
    y = np.cumsum(rng.normal(0, 0.02, 120))
    window, level = 32, 2
    got = wavelet_trailing(y, window, "db4", level)
    for t in (window - 1, 60, 119):
        seg = y[t - window + 1 : t + 1]
        coeffs = pywt.wavedec(seg, "db4", level=level, mode="symmetric")
        thr = np.median(np.abs(coeffs[-1])) / 0.6745 * np.sqrt(2 * np.log(window))
        coeffs[1:] = [pywt.threshold(c, thr, mode="soft") for c in coeffs[1:]]
        assert got[t] == pytest.approx(pywt.waverec(coeffs, "db4", mode="symmetric")[window - 1], abs=1e-12)
    np.testing.assert_array_equal(got[: window - 1], y[: window - 1])


def test_wavelet_and_kalman_reduce_noise():
    rng = np.random.default_rng(8)
    t = np.arange(600)
    clean = 0.3 * np.sin(t / 40.0)
    noisy = clean + rng.normal(0, 0.03, t.size)
    tail = slice(100, None)
    raw_err = np.mean((noisy[tail] - clean[tail]) ** 2)
    assert np.mean((wavelet_trailing(noisy, 64)[tail] - clean[tail]) ** 2) < 0.8 * raw_err
    assert np.mean((kalman_local_level(noisy, 1e-4, 9e-4)[tail] - clean[tail]) ** 2) < 0.6 * raw_err


@pytest.mark.parametrize("gap", [False, True])
def test_denoise_hampel_equals_the_reference_per_ticker(gap):
    # finite prices take the compiled kernel, a NaN anywhere the per-ticker numpy path: both give exactly
    # `hampel_returns` of each ticker
    rng = np.random.default_rng(11)
    lengths = [40, 1, 75]
    prices = np.exp(np.cumsum(rng.normal(0, 0.02, sum(lengths)) * (1 + 30 * (rng.random(sum(lengths)) < 0.05))))
    if gap:
        prices[50] = np.nan
    ticker = np.repeat(["A", "B", "C"], lengths)
    s = DenoiseSettings(method="hampel", hampel_window=10, hampel_sigmas=3.0)
    got = denoise(pl.DataFrame({"ticker": ticker, "adj_close": prices}), s)["log_price_dn"].to_numpy()
    lp, starts = np.log(prices), np.cumsum([0, *lengths])
    want = np.concatenate([hampel_returns(lp[a:b], 10, 3.0) for a, b in zip(starts[:-1], starts[1:], strict=True)])
    assert np.array_equal(got, want, equal_nan=True)
    assert not np.allclose(got[:40], lp[:40])  # something was clipped: the check is not vacuous
