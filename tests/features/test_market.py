"""Market context and cross-sectional features: values by hand, neutral when absent, and no look-ahead."""

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.market import (
    BETA_MIN_COUNT,
    BETA_WINDOW,
    MARKET_FEATURES,
    context_only,
    context_tickers,
    market_features,
    market_inputs,
    resolve_context,
)
from features.settings import FeatureSettings, SourceSettings
from tests.conftest import synthetic_prices

START = date(2020, 1, 1)


def frame(paths: dict[str, list[float]], drop: dict[str, list[int]] | None = None) -> pl.DataFrame:
    """Long frame from one price path per ticker on consecutive days; `drop` removes rows by day index."""
    drop = drop or {}
    rows = [
        (ticker, START + timedelta(days=i), float(p))
        for ticker, path in paths.items()
        for i, p in enumerate(path)
        if i not in drop.get(ticker, [])
    ]
    return pl.DataFrame(rows, schema={"ticker": pl.String, "date": pl.Date, "adj_close": pl.Float64}, orient="row")


def column(out: pl.DataFrame, ticker: str, name: str) -> list:
    return out.filter(pl.col("ticker") == ticker).sort("date")[name].to_list()


def day(out: pl.DataFrame, ticker: str, i: int, name: str):
    return out.filter((pl.col("ticker") == ticker) & (pl.col("date") == START + timedelta(days=i)))[name].item()


def test_context_tickers_puts_the_market_first_and_vix_last():
    assert context_tickers(["AAPL", "^VIX", "SPY", "^GSPC", "MSFT", "^DJI"]) == ["^GSPC", "SPY", "^DJI", "^VIX"]
    assert context_tickers(["MSFT", "SPY"]) == ["SPY"]
    assert context_tickers(["MSFT", "AAPL"]) == []


def test_beta_is_two_when_the_ticker_moves_twice_the_market():
    rng = np.random.default_rng(1)
    lm = np.cumsum(rng.normal(0, 0.01, 90))
    out = market_features(frame({"SPY": np.exp(lm), "A": np.exp(2 * lm)}), ["SPY"])
    beta = column(out, "A", "beta_63")
    # Row k holds k paired returns (row 0 has none): null until BETA_MIN_COUNT pairs.
    assert beta[BETA_MIN_COUNT - 1] is None
    assert beta[BETA_MIN_COUNT:] == pytest.approx([2.0] * (90 - BETA_MIN_COUNT), rel=1e-8)
    assert column(out, "A", "rel_ret_1")[-1] == pytest.approx(0.0, abs=1e-12)


def test_beta_and_relative_return_match_numpy_on_a_noisy_ticker():
    rng = np.random.default_rng(2)
    m = rng.normal(0, 0.01, 100)
    r = 0.7 * m + rng.normal(0, 0.01, 100)
    out = market_features(frame({"SPY": np.exp(np.cumsum(m)), "A": np.exp(np.cumsum(r))}), ["SPY"])
    # The returns on rows 1..99 are m[1:], r[1:]; the last row's window is the last 63 of them.
    x, y = m[-BETA_WINDOW:], r[-BETA_WINDOW:]
    beta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    assert column(out, "A", "beta_63")[-1] == pytest.approx(beta, rel=1e-9)
    assert column(out, "A", "rel_ret_1")[-1] == pytest.approx(r[-1] - beta * m[-1], rel=1e-9, abs=1e-12)
    assert column(out, "A", "mkt_ret_1")[-1] == pytest.approx(m[-1], rel=1e-9)
    assert column(out, "A", "mkt_ret_1_lag1")[-1] == pytest.approx(m[-2], rel=1e-9)
    assert column(out, "A", "mkt_ret_5")[-1] == pytest.approx(m[-5:].sum(), rel=1e-9)
    assert column(out, "A", "mkt_vol_21")[-1] == pytest.approx(np.std(m[-21:], ddof=1), rel=1e-9)
    assert column(out, "A", "mkt_vol_21")[20] is None  # 20 returns on row 20: window not full


def cross_section_frame() -> pl.DataFrame:
    # Day 1 returns: A +1%, B -1%, C +2%, D 0; SPY +50% (would dominate if it joined the universe).
    return frame({"A": [100, 101], "B": [100, 99], "C": [100, 102], "D": [100, 100], "SPY": [100, 150]})


def test_return_z_score_rank_and_dispersion_by_hand():
    out = market_features(cross_section_frame(), ["SPY"])
    r = np.log(np.array([101, 99, 102, 100]) / 100)
    z = (r - r.mean()) / r.std(ddof=1)
    assert [day(out, t, 1, "cs_ret_z") for t in "ABCD"] == pytest.approx(z.tolist(), rel=1e-12)
    assert [day(out, t, 1, "cs_ret_rank") for t in "ABCD"] == pytest.approx([2 / 3, 0.0, 1.0, 1 / 3])
    assert day(out, "A", 1, "cs_dispersion") == pytest.approx(r.std(ddof=1), rel=1e-12)
    assert day(out, "A", 0, "cs_ret_rank") is None  # no returns on the first day


def test_context_tickers_are_not_in_the_cross_section():
    with_context = market_features(cross_section_frame(), ["SPY"])
    without = market_features(cross_section_frame(), [])
    assert day(with_context, "SPY", 1, "cs_ret_z") is None
    assert day(with_context, "C", 1, "cs_ret_rank") == pytest.approx(1.0)
    # Counted as a member, SPY would take the top rank and widen the dispersion.
    assert day(without, "SPY", 1, "cs_ret_rank") == pytest.approx(1.0)
    assert day(without, "C", 1, "cs_ret_rank") == pytest.approx(0.75)
    assert day(without, "A", 1, "cs_dispersion") > 5 * day(with_context, "A", 1, "cs_dispersion")


def test_momentum_skips_the_latest_month_and_is_ranked_across_tickers():
    i = np.arange(300)
    paths = {
        "UP": 0.002 * i + 0.01 * np.sin(i),
        "FLAT": 0.01 * np.cos(i),
        "DOWN": -0.001 * i,
    }
    out = market_features(frame({t: np.exp(lp) for t, lp in paths.items()}), [])
    lp = paths["UP"]
    mom6, mom12 = column(out, "UP", "mom_6m"), column(out, "UP", "mom_12m")
    assert mom6[125] is None and mom12[251] is None
    assert mom6[200] == pytest.approx(lp[200 - 21] - lp[200 - 126], rel=1e-9)
    assert mom12[299] == pytest.approx(lp[299 - 21] - lp[299 - 252], rel=1e-9)
    assert [day(out, t, 299, "mom_12m_rank") for t in ("UP", "FLAT", "DOWN")] == pytest.approx([1.0, 0.5, 0.0])
    assert day(out, "UP", 200, "mom_12m_rank") is None  # no ticker has 12 months yet


def test_vix_level_and_change_when_present_null_when_absent():
    paths = {"SPY": [100, 101, 102, 101], "A": [10, 11, 12, 13], "^VIX": [20, 25, 22, 22]}
    out = market_features(frame(paths), ["SPY", "^VIX"])
    assert column(out, "A", "vix_level") == [20, 25, 22, 22]
    assert column(out, "A", "vix_chg_1") == [None, 5, -3, 0]
    assert day(out, "^VIX", 2, "cs_ret_z") is None  # VIX is context, not a universe member

    del paths["^VIX"]
    out = market_features(frame(paths), ["SPY", "^VIX"])
    assert out.columns == ["ticker", "date", *MARKET_FEATURES]
    assert out["vix_level"].null_count() == out.height and out["vix_chg_1"].null_count() == out.height
    assert column(out, "A", "mkt_ret_1")[1] == pytest.approx(np.log(1.01))


def test_a_missing_market_day_is_null_never_a_later_value():
    rng = np.random.default_rng(3)
    lm = np.cumsum(rng.normal(0, 0.01, 60))
    spy = np.exp(lm)
    out = market_features(frame({"SPY": spy, "A": np.exp(2 * lm)}, drop={"SPY": [30]}), ["SPY"])
    for name in ("mkt_ret_1", "mkt_ret_1_lag1", "mkt_ret_5", "mkt_vol_21", "beta_63", "rel_ret_1"):
        assert day(out, "A", 30, name) is None, name
    # The next market row's return spans the gap, from day 29: earlier data only.
    assert day(out, "A", 31, "mkt_ret_1") == pytest.approx(lm[31] - lm[29], rel=1e-9)
    assert day(out, "A", 31, "mkt_ret_1_lag1") == pytest.approx(lm[29] - lm[28], rel=1e-9)


def test_everything_market_is_null_without_a_market_series():
    out = market_features(cross_section_frame().filter(pl.col("ticker") != "SPY"), ["SPY", "^VIX"])
    market_cols = ["mkt_ret_1", "mkt_ret_1_lag1", "mkt_ret_5", "mkt_vol_21", "beta_63", "rel_ret_1"]
    assert out.select(pl.col(market_cols).null_count()).row(0) == (out.height,) * len(market_cols)
    assert day(out, "C", 1, "cs_ret_rank") == pytest.approx(1.0)


def test_missing_price_columns_are_named():
    with pytest.raises(Exception, match="adj_close"):
        market_features(pl.DataFrame({"ticker": ["A"], "date": [START]}), [])


@pytest.mark.parametrize("cut", [70, 200, 300, 330])
def test_changing_the_future_leaves_the_past_unchanged(cut):
    tickers = ["A", "B", "C", "D", "SPY", "^VIX"]
    # 360 days: more than a month after every cut, so even momentum (which skips a month) sees the change.
    prices = synthetic_prices(tickers, 360, seed=cut).select("ticker", "date", "adj_close")
    # Gaps (a missing market day, a missing ticker day) exercise the joins too.
    days = prices["date"].unique().sort()
    prices = prices.filter(
        ~((pl.col("ticker") == "SPY") & (pl.col("date") == days[cut - 5]))
        & ~((pl.col("ticker") == "B") & (pl.col("date") == days[cut - 9]))
    )
    t = days[cut]
    rng = np.random.default_rng(cut)
    future = pl.col("date") > t
    noise = pl.Series(np.exp(rng.normal(0, 0.2, prices.height)))
    perturbed = prices.with_columns(pl.when(future).then(pl.col("adj_close") * noise).otherwise("adj_close"))
    context = context_tickers(tickers)
    base, moved = market_features(prices, context), market_features(perturbed, context)
    assert_frame_equal(base.filter(pl.col("date") <= t), moved.filter(pl.col("date") <= t))
    # The perturbation bites: every feature defined after t changes somewhere.
    after_base, after_moved = base.filter(pl.col("date") > t), moved.filter(pl.col("date") > t)
    for name in MARKET_FEATURES:
        if name.startswith("mom_12m") and cut < 252 + 21:
            continue  # 12-month momentum is undefined this early
        assert not after_base[name].equals(after_moved[name]), name


ON = FeatureSettings(families=["returns", "market"])


@pytest.mark.parametrize(
    ("features", "source", "expected"),
    [
        # yfinance: ^GSPC and ^VIX beside the universe, unless asked for as tickers (then they are forecast)
        (ON, SourceSettings(kind="yfinance", tickers=["AAPL"]), ["^GSPC", "^VIX"]),
        (ON, SourceSettings(kind="yfinance", tickers=["AAPL", "^GSPC"]), ["^VIX"]),
        (ON.model_copy(update={"market": ["SPY"]}), SourceSettings(kind="yfinance", tickers=["AAPL"]), ["SPY"]),
        (ON.model_copy(update={"market": []}), SourceSettings(kind="yfinance", tickers=["AAPL"]), []),
        # the family off: nothing fetched
        (FeatureSettings(), SourceSettings(kind="yfinance", tickers=["AAPL"]), []),
        # a whole file or the sample is the universe: its index tickers are context and forecast alike
        (ON, SourceSettings(kind="sample"), []),
        # tickers picked from a file: its index series beside them, when it holds them
        (ON, SourceSettings(kind="sample", tickers=["NVDA"]), ["^GSPC", "SPY", "^VIX"]),
    ],
)
def test_context_only_series(features, source, expected):
    assert context_only(features, source) == expected


def test_resolve_context_takes_the_setting_as_given_else_the_index_tickers_present():
    assert resolve_context(None, ["AAPL", "^VIX", "SPY", "MSFT"]) == ["SPY", "^VIX"]
    assert resolve_context(["SPY"], ["AAPL", "^GSPC"]) == ["SPY"]
    assert resolve_context([], ["AAPL", "^GSPC"]) == []


def test_market_inputs_use_context_rows_but_return_the_universe_only():
    prices = synthetic_prices(["AAA", "BBB"], 80, seed=4)
    context = synthetic_prices(["^GSPC", "^VIX"], 80, seed=5)
    out = market_inputs(prices, context, None)
    assert out.select("ticker", "date").equals(prices.select("ticker", "date").sort("ticker", "date"))
    together = market_features(pl.concat([prices, context]), ["^GSPC", "^VIX"])
    assert_frame_equal(out, together.filter(pl.col("ticker").is_in(["AAA", "BBB"])))
    assert out["vix_level"].is_not_null().all()
    # a context row of a ticker that is in the universe is the universe's own row, never a second one
    assert_frame_equal(market_inputs(prices, prices.filter(ticker="AAA"), None), market_inputs(prices, None, None))
