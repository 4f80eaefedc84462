"""No look-ahead, proven by perturbing the future, for every denoiser and every feature.

The checks have teeth: the same checks run against deliberately non-causal
variants (whole-series wavelet denoising, a centred moving average, a feature
built with a negative shift) and must catch them.
"""

import numpy as np
import polars as pl
import pytest
import pywt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import features.denoise as dn
from features.build import build_features
from features.catalogue import LP
from features.denoise import denoise, denoise_series
from features.market import MARKET_FEATURES
from features.settings import FEATURE_FAMILIES, DenoiseSettings, FeatureSettings
from tests.conftest import synthetic_prices

METHODS = ["hampel", "ewma", "kalman", "wavelet", "none"]
SMALL_WINDOWS = {"hampel_window": 10, "wavelet_window": 16}


def leaky_wavelet(log_price: np.ndarray, *_) -> np.ndarray:
    """NOT causal: shrinks the whole series at once, so every value sees the future."""
    coeffs = pywt.wavedec(log_price, "db4", level=2, mode="symmetric")
    thr = np.median(np.abs(coeffs[-1])) / 0.6745 * np.sqrt(2 * np.log(len(log_price)))
    coeffs[1:] = [pywt.threshold(c, thr, mode="soft") for c in coeffs[1:]]
    return pywt.waverec(coeffs, "db4", mode="symmetric")[: len(log_price)]


def centred_average(log_price: np.ndarray, *_) -> np.ndarray:
    """NOT causal: a centred 5-day moving average."""
    return np.convolve(np.pad(log_price, 2, mode="edge"), np.ones(5) / 5, mode="valid")


def first_leak(fn, series: np.ndarray, t: int, rng: np.random.Generator) -> int | None:
    """Index <= t whose output changes when everything after t changes, or None."""
    perturbed = series.copy()
    perturbed[t + 1 :] += rng.normal(0, 0.05, series.size - t - 1)
    a, b = fn(series)[: t + 1], fn(perturbed)[: t + 1]
    changed = np.flatnonzero(a != b)
    return int(changed[0]) if changed.size else None


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    n=st.integers(20, 160),
    cut=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_denoiser_is_causal(method, n, cut, seed):
    rng = np.random.default_rng(seed)
    series = np.cumsum(rng.normal(0, 0.02, n)) + 3.0
    t = int(cut * (n - 2))
    s = DenoiseSettings(method=method, **SMALL_WINDOWS)
    assert first_leak(lambda x: denoise_series(x, s), series, t, rng) is None


@pytest.mark.parametrize("leaky", [leaky_wavelet, centred_average])
def test_the_denoiser_check_catches_non_causal_filters(leaky):
    rng = np.random.default_rng(0)
    series = np.cumsum(rng.normal(0, 0.02, 128)) + 3.0
    assert first_leak(leaky, series, 80, rng) is not None


def feature_leaks(
    prices: pl.DataFrame, t, denoise_settings: DenoiseSettings, feature_settings: FeatureSettings, seed: int
) -> list[str]:
    """Features whose value at some date <= t changes when every price and volume after t changes."""
    rng = np.random.default_rng(seed)
    after = pl.col("date") > t
    shock = pl.Series(rng.uniform(0.5, 2.0, prices.height))
    perturbed = prices.with_columns(
        [
            pl.when(after).then(pl.col(c) * shock).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close", "adj_close")
        ]
        + [pl.when(after).then(pl.col("volume") * 3 + 7).otherwise(pl.col("volume")).alias("volume")]
    )
    a = build_features(denoise(prices, denoise_settings), feature_settings)
    b = build_features(denoise(perturbed, denoise_settings), feature_settings)
    past_a = a.frame.filter(pl.col("date") <= t)
    past_b = b.frame.filter(pl.col("date") <= t)
    assert past_a.height > 0 and past_a.select("ticker", "date").equals(past_b.select("ticker", "date"))
    # the perturbation did reach the future, so a leak would have shown
    future = pl.col("date") > t
    assert not a.frame.filter(future).select(a.features).equals(b.frame.filter(future).select(b.features))
    return [f for f in a.features if not past_a[f].equals(past_b[f])]


PRICES = synthetic_prices(["AAA", "BBB", "CCC"], 260, seed=21)
DATES = PRICES["date"].unique().sort()
# every family, the market one with its context series (a market index and a VIX) and a cross-section of three,
# long enough for the 12-month momentum (252 + 21 days) to have values before the latest cuts
EVERY_FAMILY = FeatureSettings(families=list(FEATURE_FAMILIES))
WITH_CONTEXT = synthetic_prices(["AAA", "BBB", "CCC", "^GSPC", "^VIX"], 330, seed=22)
CONTEXT_DATES = WITH_CONTEXT["date"].unique().sort()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), cut=st.integers(70, 250), seed=st.integers(0, 2**31 - 1))
def test_no_feature_at_t_sees_data_after_t(method, cut, seed):
    assert (
        feature_leaks(PRICES, DATES[cut], DenoiseSettings(method=method, **SMALL_WINDOWS), FeatureSettings(), seed)
        == []
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), cut=st.integers(70, 320), seed=st.integers(0, 2**31 - 1))
def test_no_market_feature_at_t_sees_data_after_t(method, cut, seed):
    """The market family (context series and cross-section) too: it is built across tickers, before chunking."""
    s = DenoiseSettings(method=method, **SMALL_WINDOWS)
    assert feature_leaks(WITH_CONTEXT, CONTEXT_DATES[cut], s, EVERY_FAMILY, seed) == []


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cut", [120, 250, 399])
@pytest.mark.parametrize("families", [FeatureSettings(), EVERY_FAMILY], ids=["default", "with-market"])
def test_no_feature_sees_the_future_on_real_prices(sample, method, cut, families):
    tickers = ["NVDA", "^GSPC"] + (["ORCL", "YHOO"] if "market" in families.families else [])
    prices = sample.filter(pl.col("ticker").is_in(tickers)).group_by("ticker", maintain_order=True).head(450)
    t = prices.filter(pl.col("ticker") == "NVDA")["date"][cut]
    assert feature_leaks(prices, t, DenoiseSettings(method=method, **SMALL_WINDOWS), families, cut) == []


def test_the_leak_checks_cover_every_market_feature():
    """The market columns are among those the checks compare, and each has values before and after the cut."""
    built = build_features(denoise(WITH_CONTEXT, DenoiseSettings()), EVERY_FAMILY)
    assert built.features[-len(MARKET_FEATURES) :] == MARKET_FEATURES
    for part in (pl.col("date") <= CONTEXT_DATES[300], pl.col("date") > CONTEXT_DATES[70]):
        rows = built.frame.filter(part & (pl.col("ticker") == "AAA"))
        assert all(rows[name].is_not_null().any() for name in MARKET_FEATURES)


def test_the_feature_check_catches_a_non_causal_denoiser(monkeypatch):
    monkeypatch.setattr(dn, "denoise_series", lambda x, s: leaky_wavelet(x))
    leaks = feature_leaks(PRICES, DATES[150], DenoiseSettings(method="wavelet"), FeatureSettings(), seed=1)
    assert "denoise_gap" in leaks and "ret_1" in leaks


def test_the_feature_check_catches_a_forward_looking_feature(monkeypatch):
    import features.catalogue as fc

    real = fc.core_features
    peek = fc.Feature("peek", (LP.shift(-1) - LP).over("ticker"))
    monkeypatch.setattr(fc, "core_features", lambda s: [*real(s), peek])
    assert feature_leaks(PRICES, DATES[150], DenoiseSettings(method="none"), FeatureSettings(), seed=2) == ["peek"]


def test_the_feature_check_catches_a_forward_looking_market_feature(monkeypatch):
    """A market column filled from the next day (a backward fill in disguise) is caught, and only it."""
    import features.build as fb

    real = fb.market_inputs

    def peeking(prices, context, market):
        return real(prices, context, market).with_columns(pl.col("vix_chg_1").shift(-1).over("ticker"))

    monkeypatch.setattr(fb, "market_inputs", peeking)
    assert feature_leaks(WITH_CONTEXT, CONTEXT_DATES[150], DenoiseSettings(method="none"), EVERY_FAMILY, seed=3) == [
        "vix_chg_1"
    ]


def test_tickers_never_bleed_into_each_other():
    """Building all tickers together gives exactly what each ticker gives alone."""
    together = build_features(denoise(PRICES, DenoiseSettings()), FeatureSettings())
    for ticker in ("AAA", "BBB", "CCC"):
        alone = build_features(denoise(PRICES.filter(pl.col("ticker") == ticker), DenoiseSettings()), FeatureSettings())
        mine = together.frame.filter(pl.col("ticker") == ticker)
        assert mine.equals(alone.frame), ticker
