import math

import numpy as np
import polars as pl
import pytest

from features.build import build_features, concat_features
from features.catalogue import feature_names
from features.denoise import denoise
from features.market import MARKET_FEATURES, market_inputs
from features.settings import FEATURE_FAMILIES, DenoiseSettings, FeatureSettings

SMALL = FeatureSettings(
    horizons=[1, 2],
    return_windows=[1, 2],
    return_lags=[1],
    vol_windows=[2],
    rsi_window=2,
    macd=(2, 3, 2),
    bollinger_window=2,
    volume_window=2,
)


def tiny_frame(closes: list[float]) -> pl.DataFrame:
    n = len(closes)
    return pl.DataFrame(
        {
            "ticker": ["AAA"] * n,
            "date": pl.date_range(pl.date(2020, 1, 6), pl.date(2020, 1, 6) + pl.duration(days=n - 1), eager=True),
            "open": closes,
            "high": [c * 1.01 for c in closes],
            "low": [c * 0.99 for c in closes],
            "close": closes,
            "adj_close": closes,
            "volume": [100.0 + 10 * i for i in range(n)],
        }
    )


def test_log_return_and_target_by_hand():
    closes = [100.0, 110.0, 99.0, 108.9, 120.0, 118.0, 125.0, 130.0]
    frame = denoise(tiny_frame(closes), DenoiseSettings(method="none"))
    ff = build_features(frame, SMALL)
    out = ff.frame.with_row_index()
    row = out.filter(pl.col("date") == pl.date(2020, 1, 10))  # closes[4] = 120.0
    # features are stored as float32 (what the model reads), targets as float64
    assert row["ret_1"][0] == pytest.approx(math.log(120.0 / 108.9), rel=1e-7)
    assert row["ret_2"][0] == pytest.approx(math.log(120.0 / 99.0), rel=1e-7)
    assert ff.frame.schema["ret_1"] == pl.Float32 and ff.frame.schema["y_h1"] == pl.Float64
    assert row["y_h1"][0] == pytest.approx(math.log(118.0 / 120.0), abs=1e-12)
    assert row["y_h2"][0] == pytest.approx(math.log(125.0 / 120.0), abs=1e-12)
    last = out.filter(pl.col("date") == pl.date(2020, 1, 13))  # the final day: no future yet
    assert last["y_h1"][0] is None and last["y_h2"][0] is None
    assert ff.targets == ["y_h1", "y_h2"]
    assert not set(ff.targets) & set(ff.features)


def test_targets_use_raw_prices_not_denoised():
    closes = list(100.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, 40))))
    closes[30] *= 1.5  # a spike the Hampel filter clips
    frame = denoise(tiny_frame(closes), DenoiseSettings(method="hampel", hampel_window=10, hampel_sigmas=3))
    ff = build_features(frame, SMALL)
    row = ff.frame.filter(pl.col("date") == frame["date"][29])
    assert row["y_h1"][0] == pytest.approx(math.log(closes[30] / closes[29]))  # raw jump kept in the label
    spike = ff.frame.filter(pl.col("date") == frame["date"][30])
    assert spike["ret_1"][0] < 0.05  # but clipped in the feature


def test_close_only_data_skips_ohlcv_features():
    frame = tiny_frame([100.0 + i for i in range(30)]).with_columns(
        pl.lit(None, dtype=pl.Float64).alias(c) for c in ("open", "high", "low", "volume")
    )
    ff = build_features(denoise(frame, DenoiseSettings(method="none")), SMALL)
    # the core features only, in the catalogue's order: no column of bar features that would be all null
    assert ff.features == [n for n in feature_names(SMALL) if n not in ("hl_range", "co_return", "volume_z_2")]
    assert ff.features[-3:] == ["dow", "month_sin", "month_cos"]
    assert ff.frame.height == 30 - 2  # two warm-up rows: ret_2 and vol_2 need two earlier closes


def test_mixed_close_only_tickers_get_neutral_bar_features():
    full = tiny_frame([100.0 + i for i in range(30)])
    bare = tiny_frame([50.0 + i for i in range(30)]).with_columns(
        pl.lit("BBB").alias("ticker"),
        *(pl.lit(None, dtype=pl.Float64).alias(c) for c in ("open", "high", "low", "volume")),
    )
    ff = build_features(denoise(pl.concat([full, bare]), DenoiseSettings(method="none")), SMALL)
    assert ff.features == feature_names(SMALL) and ff.features[-3:] == ["hl_range", "co_return", "volume_z_2"]
    b = ff.frame.filter(pl.col("ticker") == "BBB")
    assert b.height == 28 and b["hl_range"].null_count() == 28  # rows kept, bar features missing
    a = ff.frame.filter(pl.col("ticker") == "AAA")
    assert a["hl_range"][0] == pytest.approx(math.log(1.01 / 0.99))

    from features.windows import Scaler, make_panel

    panel = make_panel(ff, max_horizon=2)
    scaled = Scaler.fit(panel.X).transform(panel.X)
    col = ff.features.index("hl_range")
    assert np.isfinite(scaled).all() and (scaled[panel.ticker_id == 1, col] == 0).all()


def multi_ticker(seed: int = 3) -> pl.DataFrame:
    """Three tickers of different lengths, one of them close-only."""
    from tests.conftest import synthetic_prices

    prices = pl.concat(
        [
            synthetic_prices(["AAA"], 260, seed=seed),
            synthetic_prices(["BBB"], 140, seed=seed + 1),
            synthetic_prices(["CCC"], 200, seed=seed + 2).with_columns(
                pl.lit(None, dtype=pl.Float64).alias(c) for c in ("open", "high", "low", "volume")
            ),
        ]
    )
    return denoise(prices, DenoiseSettings())


MARKET_ON = FeatureSettings(families=list(FEATURE_FAMILIES))


def with_market_index(seed: int = 3) -> pl.DataFrame:
    """`multi_ticker` and a market index (^GSPC) over the longest ticker's days."""
    from tests.conftest import synthetic_prices

    index = denoise(synthetic_prices(["^GSPC"], 260, seed=seed + 9), DenoiseSettings())
    return pl.concat([multi_ticker(seed), index])


@pytest.mark.parametrize("chunk_rows", [1, 150, 300])  # a ticker per chunk; two groupings of the three
@pytest.mark.parametrize("settings", [FeatureSettings(), MARKET_ON], ids=["default", "with-market"])
def test_chunk_size_changes_no_value(chunk_rows, settings):
    """The market family's cross-sectional values too: they are computed before the chunks."""
    frame = with_market_index()
    whole = build_features(frame, settings, chunk_rows=10**9).frame
    assert build_features(frame, settings, chunk_rows=chunk_rows).frame.equals(whole)


def test_market_family_is_off_by_default_and_joined_when_on():
    assert "market" not in FeatureSettings().families
    assert FeatureSettings(market=[" spy", "^vix", "SPY"]).market == ["SPY", "^VIX"]
    frame = with_market_index()
    off, on = build_features(frame, FeatureSettings()), build_features(frame, MARKET_ON)
    assert on.features == off.features + MARKET_FEATURES == feature_names(MARKET_ON)
    # the family adds columns, never drops a row (its nulls are neutral, not a missing core feature)
    assert on.frame.select("ticker", "date").equals(off.frame.select("ticker", "date"))
    assert on.frame.select(off.features).equals(off.frame.select(off.features))
    # ^GSPC is the market (the index tickers present, by default) and is still a row of its own
    index = on.frame.filter(pl.col("ticker") == "^GSPC")
    assert index.height > 0 and index["cs_ret_z"].is_null().all()
    aaa = on.frame.filter(pl.col("ticker") == "AAA").join(
        frame.filter(pl.col("ticker") == "^GSPC").select("date", (pl.col("adj_close").log().diff()).alias("m")),
        on="date",
    )
    assert np.allclose(aaa["mkt_ret_1"].to_numpy(), aaa["m"].to_numpy(), rtol=1e-6)  # float32 of the index's return
    assert on.frame["vix_level"].is_null().all()  # no ^VIX: neutral
    assert build_features(frame, MARKET_ON.model_copy(update={"market": []})).frame["mkt_ret_1"].is_null().all()


def test_a_missing_context_day_is_null_never_the_next_days_value():
    frame = with_market_index()
    day = frame.filter(pl.col("ticker") == "^GSPC")["date"][150]
    gap = frame.filter(~((pl.col("ticker") == "^GSPC") & (pl.col("date") == day)))
    full, holed = build_features(frame, MARKET_ON).frame, build_features(gap, MARKET_ON).frame

    def aaa(built: pl.DataFrame) -> pl.DataFrame:
        return built.filter(pl.col("ticker") == "AAA").sort("date")

    at = aaa(holed).filter(pl.col("date") == day)
    assert (
        at.select("mkt_ret_1", "mkt_ret_1_lag1", "mkt_ret_5", "mkt_vol_21", "beta_63", "rel_ret_1").row(0)
        == (None,) * 6
    )
    # every earlier day is exactly as with the day present: the hole reaches no earlier value
    before = pl.col("date") < day
    assert aaa(holed).filter(before).equals(aaa(full).filter(before))


def test_builds_with_one_market_frame_concat_to_one_build():
    """What the flows do with the market family: its columns computed once over every ticker, each chunk
    built with its own rows of them, the chunks concatenated."""
    frame = with_market_index()
    whole = build_features(frame, MARKET_ON)
    market = market_inputs(frame, None, MARKET_ON.market)
    groups = [["AAA"], ["BBB", "^GSPC"], ["CCC"]]
    parts = [
        build_features(
            frame.filter(pl.col("ticker").is_in(g)), MARKET_ON, market=market.filter(pl.col("ticker").is_in(g))
        )
        for g in groups
    ]
    joined = concat_features(parts, MARKET_ON)
    assert joined.features == whole.features and joined.frame.equals(whole.frame)
    # built alone, a chunk would have had no cross-section to rank in: the shared frame is what makes them equal
    alone = build_features(frame.filter(pl.col("ticker") == "AAA"), MARKET_ON).frame
    assert alone["cs_ret_rank"].is_null().all() and whole.frame.filter(ticker="AAA")["cs_ret_rank"].is_not_null().any()


def test_window_features_equal_polars_over_ticker():
    """The kernels give what polars' own per-ticker windows give, feature by feature."""
    s = FeatureSettings()
    frame = multi_ticker(seed=11).filter(pl.col("ticker") != "CCC")
    ff = build_features(frame, s)
    lp = pl.col("log_price_dn")
    r = lp.diff().over("ticker")
    lv = pl.col("volume").log1p()
    fast, slow, signal = s.macd
    line = lp.ewm_mean(span=fast, adjust=False).over("ticker") - lp.ewm_mean(span=slow, adjust=False).over("ticker")
    w, vw = s.bollinger_window, s.volume_window
    mean, std = lp.rolling_mean(w).over("ticker"), lp.rolling_std(w).over("ticker")
    a = 1 / s.rsi_window
    reference = frame.sort("ticker", "date").select(
        "ticker",
        "date",
        *(r.rolling_std(v).over("ticker").alias(f"vol_{v}") for v in s.vol_windows),
        (
            r.clip(lower_bound=0).ewm_mean(alpha=a, adjust=False).over("ticker")
            / r.abs().ewm_mean(alpha=a, adjust=False).over("ticker")
            - 0.5
        ).alias(f"rsi_{s.rsi_window}"),
        line.alias("macd"),
        (line - line.ewm_mean(span=signal, adjust=False).over("ticker")).alias("macd_hist"),
        ((lp - (mean - 2 * std)) / (4 * std)).clip(-1.0, 2.0).alias(f"bb_pctb_{w}"),
        ((lv - lv.rolling_mean(vw).over("ticker")) / lv.rolling_std(vw).over("ticker"))
        .clip(-5.0, 5.0)
        .alias(f"volume_z_{vw}"),
    )
    names = [c for c in reference.columns if c not in ("ticker", "date")]
    got = ff.frame.select("ticker", "date", *names).join(reference, on=["ticker", "date"], suffix="_ref")
    assert got.height == ff.frame.height == (260 - 63) + (140 - 63)  # every row past the 63-day warm-up
    for name in names:
        np.testing.assert_allclose(got[name].to_numpy(), got[f"{name}_ref"].to_numpy(), rtol=2e-6, atol=1e-7)


def test_unsorted_input_gives_the_sorted_result():
    frame = multi_ticker()
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=5)
    assert build_features(shuffled, FeatureSettings()).frame.equals(build_features(frame, FeatureSettings()).frame)


@pytest.mark.parametrize(
    "tickers, days, expected",
    [
        pytest.param(["A", "A", "B", "B"], [1, 2, 1, 2], True, id="sorted"),
        pytest.param(["B", "B", "A", "A"], [1, 2, 1, 2], False, id="tickers-descending"),
        pytest.param(["A", "B", "A", "B"], [1, 1, 2, 2], False, id="ticker-in-two-runs"),
        pytest.param(["A", "A", "B", "B"], [1, 1, 1, 2], False, id="duplicate-day"),
        pytest.param(["A", "A", "B", "B"], [2, 1, 1, 2], False, id="days-descending"),
        pytest.param(["A"], [1], True, id="one-row"),
    ],
)
def test_is_sorted(tickers, days, expected):
    from datetime import date

    from features.build import is_sorted

    frame = pl.DataFrame({"ticker": tickers, "date": [date(2020, 1, d) for d in days]})
    assert is_sorted(frame) is expected


def test_feature_names_follow_the_families_in_build_order():
    assert feature_names(SMALL) == [
        *("ret_1", "ret_2", "ret_1_lag1", "vol_2", "rsi_2", "macd", "macd_hist", "bb_pctb_2", "denoise_gap"),
        *("dow", "month_sin", "month_cos", "hl_range", "co_return", "volume_z_2"),
    ]
    only = SMALL.model_copy(update={"families": ["volume", "lags", "calendar"]})
    assert feature_names(only) == ["ret_1_lag1", "dow", "month_sin", "month_cos", "volume_z_2"]


@pytest.mark.parametrize(
    "groups",
    [
        pytest.param([["DDD"], ["CCC"], ["AAA", "BBB"]], id="volume-only-part-first"),
        pytest.param([["CCC"], ["AAA", "DDD"], ["BBB"]], id="close-only-part-first"),
        pytest.param([["AAA", "BBB", "CCC", "DDD"]], id="one-part"),
    ],
)
def test_builds_of_disjoint_tickers_concat_to_one_build(groups):
    """What the flows do with tickers built in parallel chunks: the same frame as one build, column order too."""
    frame, s = multi_ticker(seed=7), FeatureSettings()
    volume_only = frame.filter(pl.col("ticker") == "BBB").with_columns(
        pl.lit("DDD").alias("ticker"), *(pl.lit(None, dtype=pl.Float64).alias(c) for c in ("open", "high", "low"))
    )
    frame = pl.concat([frame, volume_only])
    whole = build_features(frame, s)
    parts = [build_features(frame.filter(pl.col("ticker").is_in(g)), s) for g in groups]
    joined = concat_features(parts, s)
    assert joined.features == whole.features and joined.targets == whole.targets
    assert whole.features[-3:] == ["hl_range", "co_return", "volume_z_21"]
    assert joined.frame.equals(whole.frame)


def test_ticker_slices_are_the_chunks_rows_without_copying_sorted_prices():
    import numpy as np

    from features.build import ticker_slices
    from tests.conftest import synthetic_prices

    prices = synthetic_prices(["AAA", "BBB", "CCC", "DDD", "EEE"], 40, seed=2).sort("ticker", "date")
    chunks = [["AAA", "BBB"], ["CCC", "DDD"], ["EEE"]]
    expected = [prices.filter(pl.col("ticker").is_in(chunk)) for chunk in chunks]
    parts = ticker_slices(prices, chunks)
    for part, want in zip(parts, expected, strict=True):
        assert part.equals(want)
        assert np.shares_memory(part["close"].to_numpy(), prices["close"].to_numpy())  # a view, not a copy
    # out of order, or chunks that are not the frame's run of tickers: filtered copies, the same rows
    shuffled = prices.sample(fraction=1.0, shuffle=True, seed=0)
    copies = [shuffled.filter(pl.col("ticker").is_in(chunk)) for chunk in chunks]
    assert all(a.equals(b) for a, b in zip(ticker_slices(shuffled, chunks), copies, strict=True))
    gaps = [["AAA"], ["CCC", "EEE"]]
    assert [p["ticker"].unique().sort().to_list() for p in ticker_slices(prices, gaps)] == gaps
    assert ticker_slices(prices.head(0), chunks)[0].height == 0
