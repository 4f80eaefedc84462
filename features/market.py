"""Market context and cross-sectional features (issue 14, point 1: multi-source fusion).

Pure polars over the long price frame (`ticker`, `date`, `adj_close`). The
context series (an index or ETF such as `^GSPC` or `SPY`, optionally `^VIX`)
are rows of that same frame; `market_features` returns one row per input
(ticker, date) with the columns in `MARKET_FEATURES`.

No look-ahead, by construction:
- every shift is positive and every rolling window is trailing, computed over
  each series' own rows in date order, so a value at t reads rows <= t only;
- context values are joined to tickers by exact date; a ticker's date with no
  context row gets null context. Nothing is filled, neither forward nor
  backward (a row-based shift on the context's own rows spans a missing day);
- cross-sectional features group by date only, so they read same-day values.

Neutral where a context series is absent: every column always exists (a
stable schema for the catalogue and the model), and is null when its source
is missing: no market series -> market, beta and relative-return columns
null; no `^VIX` -> `vix_level`, `vix_chg_1` null. Context series are never
members of the cross-section: their own z-score, rank and momentum columns are
null (they still get the date's `cs_dispersion`, a date-level value like the
market's volatility).
"""

from __future__ import annotations

import logging

import polars as pl

from features.settings import FeatureSettings, SourceSettings
from nightcast.errors import ValidationError

log = logging.getLogger("nightcast.features.market")

VIX = "^VIX"
MARKET_PREFERENCE = ("^GSPC", "SPY")  # the broad market first: the first context series is "the market"
BETA_WINDOW = 63  # about a quarter of trading days
BETA_MIN_COUNT = 40  # paired (ticker, market) returns a beta needs; fewer is too noisy to use
MKT_VOL_WINDOW = 21  # about a month
SKIP = 21  # momentum skips the latest month (short-term reversal lives there)
MOMENTUM_WINDOWS = {"6m": 126, "12m": 252}
FETCHED = ("^GSPC", VIX)  # what a yfinance universe gets beside it by default (the index, not an ETF: no fees)
READ_FROM_FILE = ("^GSPC", "SPY", VIX)  # what a file's selected tickers get beside them by default, when present

MARKET_FEATURES = [
    "mkt_ret_1",
    "mkt_ret_1_lag1",
    "mkt_ret_5",
    "mkt_vol_21",
    "vix_level",
    "vix_chg_1",
    "beta_63",
    "rel_ret_1",
    "cs_ret_z",
    "cs_ret_rank",
    "cs_dispersion",
    "mom_6m",
    "mom_12m",
    "mom_6m_rank",
    "mom_12m_rank",
]

_LA = pl.col("_la")
_R = pl.col("_r")


def context_tickers(tickers: list[str]) -> list[str]:
    """The default context among `tickers`: index tickers (leading `^`) and `SPY`.

    Ordered so the first is the market: `^GSPC`, then `SPY`, then other indices
    alphabetically, `^VIX` last (a volatility index is never the market).
    """
    present = set(tickers)
    found = [t for t in present if t.startswith("^") or t == "SPY"]

    def order(ticker: str) -> tuple[int, str]:
        if ticker in MARKET_PREFERENCE:
            return MARKET_PREFERENCE.index(ticker), ticker
        return (len(MARKET_PREFERENCE) + (ticker == VIX), ticker)

    return sorted(found, key=order)


def _market_ticker(context: list[str], present: set[str]) -> str | None:
    """The first context series that is present and is not VIX, or None."""
    for ticker in context:
        if ticker != VIX and ticker in present:
            return ticker
    return None


def _with_returns(prices: pl.DataFrame) -> pl.DataFrame:
    """Sorted frame with `_la` (log adj_close) and `_r` (daily log return; null where undefined)."""
    missing = [c for c in ("ticker", "date", "adj_close") if c not in prices.columns]
    if missing:
        raise ValidationError(f"market_features: the following columns are missing: {missing}")
    la = pl.col("adj_close").cast(pl.Float64).log()
    # A non-positive or missing price gives no log price: null, so no return or window uses it.
    la = pl.when(la.is_finite()).then(la).otherwise(None)
    return (
        prices.select("ticker", "date", "adj_close")
        .sort("ticker", "date")
        .with_columns(la.alias("_la"))
        .with_columns((_LA - _LA.shift(1)).over("ticker").alias("_r"))
    )


def _market_frame(frame: pl.DataFrame, market: str | None) -> pl.DataFrame:
    """Per market date: its 1-day return (for beta), return lags and realised volatility."""
    schema = {
        "date": pl.Date,
        "_m": pl.Float64,
        "mkt_ret_1_lag1": pl.Float64,
        "mkt_ret_5": pl.Float64,
        "mkt_vol_21": pl.Float64,
    }
    if market is None:
        return pl.DataFrame(schema=schema)
    return (
        frame.filter(pl.col("ticker") == market)
        .select(
            "date",
            _R.alias("_m"),
            _R.shift(1).alias("mkt_ret_1_lag1"),
            (_LA - _LA.shift(5)).alias("mkt_ret_5"),
            _R.rolling_std(MKT_VOL_WINDOW, min_samples=MKT_VOL_WINDOW).alias("mkt_vol_21"),
        )
        .cast(schema)
    )


def _vix_frame(frame: pl.DataFrame, has_vix: bool) -> pl.DataFrame:
    """Per VIX date: its level and 1-day change in index points (VIX is already a volatility, in points)."""
    if not has_vix:
        return pl.DataFrame(schema={"date": pl.Date, "vix_level": pl.Float64, "vix_chg_1": pl.Float64})
    level = pl.col("adj_close").cast(pl.Float64)
    return frame.filter(pl.col("ticker") == VIX).select(
        "date", level.alias("vix_level"), (level - level.shift(1)).alias("vix_chg_1")
    )


def _beta() -> pl.Expr:
    """Rolling beta of `_r` on the market return `_m` over the ticker's last BETA_WINDOW rows.

    Only rows where both returns exist enter the sums (a paired count), so a
    missing market day shrinks the window instead of pairing mismatched days.
    The beta at t includes day t's pair: it is known at t's close.
    """
    pair = _R.is_not_null() & pl.col("_m").is_not_null()
    x = pl.when(pair).then(pl.col("_m")).otherwise(0.0)
    y = pl.when(pair).then(_R).otherwise(0.0)

    def rsum(expr: pl.Expr) -> pl.Expr:
        return expr.rolling_sum(BETA_WINDOW, min_samples=1).over("ticker")

    n, sx, sy = rsum(pair.cast(pl.Float64)), rsum(x), rsum(y)
    sxy, sxx = rsum(x * y), rsum(x * x)
    # Sample covariance over sample variance; the (n - 1) factors cancel.
    cov, var = sxy - sx * sy / n, sxx - sx * sx / n
    # Null on a day without a market row: that day has no context, whatever the earlier pairs say.
    usable = pl.col("_has_mkt") & (n >= BETA_MIN_COUNT) & (var > 0)
    return pl.when(usable).then(cov / var).otherwise(None).alias("beta_63")


def _cross_section(frame: pl.DataFrame, context: list[str]) -> pl.DataFrame:
    """Per (ticker, date) of the universe (non-context tickers): return z-score and rank, momentum and its rank."""
    universe = frame.filter(~pl.col("ticker").is_in(context)).with_columns(
        (_LA.shift(SKIP) - _LA.shift(w)).over("ticker").alias(f"mom_{name}") for name, w in MOMENTUM_WINDOWS.items()
    )
    mean, std = _R.mean().over("date"), _R.std().over("date")
    return universe.select(
        "ticker",
        "date",
        pl.when(std > 0).then((_R - mean) / std).otherwise(None).alias("cs_ret_z"),
        _rank01(_R).alias("cs_ret_rank"),
        *[pl.col(f"mom_{name}") for name in MOMENTUM_WINDOWS],
        *[_rank01(pl.col(f"mom_{name}")).alias(f"mom_{name}_rank") for name in MOMENTUM_WINDOWS],
    )


def _rank01(expr: pl.Expr) -> pl.Expr:
    """Rank of `expr` among the date's non-null values, scaled to 0 (lowest) .. 1 (highest); ties averaged.

    Null where fewer than two tickers have a value (a rank of one says nothing).
    """
    n = expr.count().over("date")
    rank = expr.rank("average").over("date")
    return pl.when(n >= 2).then((rank - 1) / (n - 1)).otherwise(None)


def market_features(prices: pl.DataFrame, context: list[str]) -> pl.DataFrame:
    """Market-context and cross-sectional features for every (ticker, date) of `prices`.

    Args:
        prices: long frame with `ticker`, `date`, `adj_close` (any order; sorted here).
        context: context series names. The first present one that is not `^VIX`
            is the market; `^VIX`, when listed and present, gives the VIX columns.
            Context series are excluded from the cross-section. Names absent from
            `prices` are ignored (their columns stay null).

    Returns:
        `ticker`, `date` and the `MARKET_FEATURES` columns, sorted by ticker and date.
        `rel_ret_1` is the ticker's 1-day log return minus beta_63 x the market's.
    """
    frame = _with_returns(prices)
    present = set(frame["ticker"].unique().to_list())
    market = _market_ticker(context, present)
    has_vix = VIX in context and VIX in present
    if market is None:
        log.info("market_features: no market series among %s; market columns are null", context)

    mkt = _market_frame(frame, market)
    dispersion = frame.filter(~pl.col("ticker").is_in(context)).group_by("date").agg(_R.std().alias("cs_dispersion"))
    out = (
        # left order kept: the beta's rolling sums below run over each ticker's rows in date order
        frame.join(mkt.with_columns(pl.lit(True).alias("_has_mkt")), on="date", how="left", maintain_order="left")
        .with_columns(pl.col("_has_mkt").fill_null(False))
        .with_columns(_beta())
        .with_columns(
            pl.col("_m").alias("mkt_ret_1"),
            (_R - pl.col("beta_63") * pl.col("_m")).alias("rel_ret_1"),
        )
        .join(_vix_frame(frame, has_vix), on="date", how="left", maintain_order="left")
        .join(dispersion, on="date", how="left", maintain_order="left")
        .join(_cross_section(frame, context), on=["ticker", "date"], how="left", maintain_order="left")
    )
    return out.select("ticker", "date", *[pl.col(c).cast(pl.Float64) for c in MARKET_FEATURES]).sort("ticker", "date")


def resolve_context(market: list[str] | None, tickers: list[str]) -> list[str]:
    """The context series `market_features` is given: `features.market` as set, else the index tickers present."""
    return list(market) if market is not None else context_tickers(tickers)


def context_only(features: FeatureSettings, source: SourceSettings) -> list[str]:
    """Series read beside `source.tickers` as context only: stored in the lake, never forecast or published.

    None without the market family, and none when `source.tickers` is empty: the whole source is then the
    universe, and its index tickers are context and forecast alike. Otherwise `features.market` (unset: ^GSPC
    and ^VIX from yfinance, ^GSPC, SPY and ^VIX from a file that holds them), less the tickers asked for.
    """
    if "market" not in features.families or not source.tickers:
        return []
    wanted = features.market
    if wanted is None:
        wanted = FETCHED if source.kind == "yfinance" else READ_FROM_FILE
    return [t for t in wanted if t not in source.tickers]


def market_inputs(prices: pl.DataFrame, context: pl.DataFrame | None, market: list[str] | None) -> pl.DataFrame:
    """`market_features` of the universe `prices`, with the rows of context-only series (`context`) beside it.

    Computed once over every ticker together (cross-sectional values read every ticker of a date), and
    returned for the universe's (ticker, date) rows only.
    """
    columns = ["ticker", "date", "adj_close"]
    frame = prices.select(columns)
    universe = frame["ticker"].unique().to_list()
    extra = None if context is None else context.filter(~pl.col("ticker").is_in(universe)).select(columns)
    if extra is not None and not extra.is_empty():
        frame = pl.concat([frame, extra])
    out = market_features(frame, resolve_context(market, frame["ticker"].unique().sort().to_list()))
    return out if extra is None or extra.is_empty() else out.filter(pl.col("ticker").is_in(universe))
