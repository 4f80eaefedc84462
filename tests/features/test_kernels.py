"""The per-ticker window kernels against polars' own `.over("ticker")` windows, and their locality."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from features import kernels


def column(lengths: list[int], seed: int, missing: float = 0.0) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """Tickers of the given lengths stacked in one column (random-walk values, some nulls)."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(0, 0.02, sum(lengths))) + 3.0
    x[rng.random(x.size) < missing] = np.nan
    pos = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
    ticker = np.repeat([f"T{i}" for i in range(len(lengths))], lengths)
    frame = pl.DataFrame({"ticker": ticker, "x": x}).with_columns(pl.col("x").fill_nan(None))
    return frame, x, pos


def polars_reference(frame: pl.DataFrame, expr: pl.Expr) -> np.ndarray:
    return frame.select(expr.over("ticker")).to_series().cast(pl.Float64).fill_null(np.nan).to_numpy()


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 90), min_size=1, max_size=6),
    window=st.integers(2, 30),
    missing=st.sampled_from([0.0, 0.03]),
    seed=st.integers(0, 2**31 - 1),
)
def test_rolling_moments_equal_polars_over_ticker(lengths, window, missing, seed):
    frame, x, pos = column(lengths, seed, missing)
    mean, std = kernels.rolling_moments(x, pos, window)
    want_mean = polars_reference(frame, pl.col("x").rolling_mean(window))
    want_std = polars_reference(frame, pl.col("x").rolling_std(window))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-14, equal_nan=True)
    np.testing.assert_allclose(std, want_std, rtol=1e-9, atol=1e-13, equal_nan=True)
    assert np.isnan(mean[pos < window - 1]).all()  # never a partial window, never another ticker's rows


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 90), min_size=1, max_size=6),
    alpha=st.floats(0.01, 1.0),
    missing=st.sampled_from([0.0, 0.05]),
    seed=st.integers(0, 2**31 - 1),
)
def test_ewm_mean_equals_polars_over_ticker(lengths, alpha, missing, seed):
    frame, x, pos = column(lengths, seed, missing)
    want = polars_reference(frame, pl.col("x").ewm_mean(alpha=alpha, adjust=False, ignore_nulls=True))
    np.testing.assert_allclose(kernels.ewm_mean(x, pos, alpha), want, rtol=1e-12, atol=1e-14, equal_nan=True)


@settings(max_examples=80, deadline=None)
@given(
    window=st.integers(2, 40),
    level=st.floats(1.0, 10.0),
    tick=st.floats(1e-5, 1e-2),
    jump=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_std_keeps_its_digits_in_near_flat_windows_after_a_jump(window, level, tick, jump, seed):
    """Sliding sums lose digits when a nearly flat window follows a jump; the kernel must notice and recompute."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([level + jump * rng.normal(size=3 * window), level + level * tick * rng.normal(size=3 * window)])
    _, std = kernels.rolling_moments(x, np.arange(x.size), window)
    exact = np.concatenate([np.full(window - 1, np.nan), sliding_window_view(x, window).std(axis=1, ddof=1)])
    np.testing.assert_allclose(std, exact, rtol=1e-8, equal_nan=True)


def test_rolling_moments_by_hand():
    x = np.array([1.0, 2.0, 4.0, 7.0, 100.0, 101.0, 103.0])
    pos = np.array([0, 1, 2, 3, 0, 1, 2])  # two tickers: 4 rows, then 3
    mean, std = kernels.rolling_moments(x, pos, 3)
    np.testing.assert_allclose(mean, [np.nan, np.nan, 7 / 3, 13 / 3, np.nan, np.nan, 304 / 3], equal_nan=True)
    np.testing.assert_allclose(std, [np.nan, np.nan, np.std([1, 2, 4], ddof=1), np.std([2, 4, 7], ddof=1),
                                     np.nan, np.nan, np.std([100, 101, 103], ddof=1)], equal_nan=True)  # fmt: skip


def test_ewm_by_hand_restarts_per_ticker_and_skips_missing():
    x = np.array([1.0, 3.0, np.nan, 5.0, 10.0, 20.0])
    pos = np.array([0, 1, 2, 3, 0, 1])
    # alpha 0.5: 1, 2, (missing), 3.5 | restart: 10, 15
    np.testing.assert_allclose(kernels.ewm_mean(x, pos, 0.5), [1.0, 2.0, np.nan, 3.5, 10.0, 15.0], equal_nan=True)


def test_flat_window_has_exactly_zero_std():
    x = np.concatenate([np.cumsum(np.random.default_rng(0).normal(0, 1, 50)), np.full(30, 0.1)])
    mean, std = kernels.rolling_moments(x, np.arange(x.size), 10)
    assert (std[59:] == 0.0).all() and (mean[59:] == 0.1).all()  # exact, not a rounding residue
    assert (std[50:59] > 0).all()


@pytest.mark.parametrize("window", [3, 20, 63])
def test_rolling_value_depends_only_on_its_recent_rows(window):
    """Float state never reaches back more than 2 x window rows: perturbing older rows changes no bit."""
    rng = np.random.default_rng(window)
    x = np.cumsum(rng.normal(0, 0.02, 2000)) + 4.0
    pos = np.arange(x.size)
    mean, std = kernels.rolling_moments(x, pos, window)
    t = 1500
    old = x.copy()
    old[: t - 2 * window + 1] += rng.normal(0, 1.0, t - 2 * window + 1)  # rows long out of the window
    mean2, std2 = kernels.rolling_moments(old, pos, window)
    assert np.array_equal(mean[t:], mean2[t:]) and np.array_equal(std[t:], std2[t:])


def test_another_ticker_changes_nothing():
    x = np.cumsum(np.random.default_rng(3).normal(0, 0.02, 300)) + 3.0
    pos = np.concatenate([np.arange(150), np.arange(150)])
    other = x.copy()
    other[:150] *= 7.0  # the first ticker changes entirely
    for fn in (lambda v: kernels.rolling_moments(v, pos, 21)[1], lambda v: kernels.ewm_mean(v, pos, 0.1)):
        assert np.array_equal(fn(x)[150:], fn(other)[150:], equal_nan=True)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="window must be >= 1"):
        kernels.rolling_moments(np.ones(3), np.arange(3), 0)
    with pytest.raises(ValueError, match="alpha must be in"):
        kernels.ewm_mean(np.ones(3), np.arange(3), 1.5)
    with pytest.raises(ValueError, match="one length"):
        kernels.ewm_mean(np.ones(3), np.arange(4), 0.5)


def hampel_column(lengths: list[int], seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """Log prices of tickers of the given lengths, with outlying jumps; `ties`: returns on a coarse grid (equal
    values in most windows) and flat stretches (zero MAD)."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.02, sum(lengths))
    r[rng.random(r.size) < 0.05] *= 40.0  # outliers the filter clips
    if ties:
        r = np.round(r, 2)
        r[rng.random(r.size) < 0.3] = 0.0
    lp = np.cumsum(r) + 4.0
    starts = np.cumsum([0, *lengths[:-1]]).astype(np.int64)
    return lp, starts


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 120), min_size=1, max_size=5),
    window=st.integers(3, 30),
    sigmas=st.sampled_from([0.5, 3.0, 5.0]),
    ties=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_hampel_kernel_is_bit_identical_to_the_numpy_reference(lengths, window, sigmas, ties, seed):
    from features.denoise import MAD_TO_SIGMA, hampel_returns

    lp, starts = hampel_column(lengths, seed, ties)
    got = kernels.hampel(lp, starts, window, sigmas, MAD_TO_SIGMA)
    ends = np.append(starts[1:], lp.size)
    want = np.concatenate([hampel_returns(lp[a:b], window, sigmas) for a, b in zip(starts, ends, strict=True)])
    assert np.array_equal(got, want)


def test_hampel_kernel_clips_by_hand_and_restarts_per_ticker():
    from features.denoise import MAD_TO_SIGMA

    returns = np.array([0.01, -0.01, 0.02, -0.02, 0.5])
    lp = np.concatenate(([0.0], np.cumsum(returns)))
    two = np.concatenate((lp, lp + 1.0))  # the second ticker starts with a jump of 1.0 from the first's end
    out = kernels.hampel(two, np.array([0, 6]), 5, 3.0, MAD_TO_SIGMA)
    bound = 0.01 + 3 * MAD_TO_SIGMA * 0.02  # window median 0.01, MAD 0.02
    np.testing.assert_allclose(np.diff(out[:6]), [0.01, -0.01, 0.02, -0.02, bound], atol=1e-15)
    assert out[6] == 1.0
    np.testing.assert_allclose(out[6:] - 1.0, out[:6], atol=1e-12)


def test_hampel_kernel_refuses_non_finite_prices():
    with pytest.raises(ValueError, match="finite"):
        kernels.hampel(np.array([1.0, np.nan, 2.0]), np.array([0]), 3, 5.0, 1.4826)
    with pytest.raises(ValueError, match="window must be >= 1"):
        kernels.hampel(np.ones(3), np.array([0]), 0, 5.0, 1.4826)
