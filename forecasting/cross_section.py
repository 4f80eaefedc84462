"""Forecasts judged across tickers: information coefficients, a long-short portfolio and the up/down call.

Pure functions over the long prediction frame `model, ticker, asof_date, horizon, target_date, y_true, y_pred`
(forward log returns, as in `forecasting.metrics`). Rows whose `y_pred` or `y_true` is null or not finite are left
out (no forecast, or no outcome yet).

No look-ahead: every figure pairs the forecasts made at one as-of date only with the realised returns of those
forecasts' own targets. The portfolio held after the close of date t is chosen from forecasts made at t and earns
the return from t to the next trading day; its turnover compares it with the portfolio chosen at the previous as-of
date. Nothing at date t uses a forecast made later.

Choices:
- Information coefficients, per (model, horizon, asof_date): Pearson and Spearman (Pearson on average ranks, so
  ties share a rank) of `y_pred` vs `y_true` across tickers. A date with fewer than `min_tickers` tickers is
  skipped; so is a date where `y_pred` or `y_true` is constant across tickers (no correlation exists: the date is
  left out, never counted as NaN or 0).
- Overlap at horizon h > 1: the targets of consecutive dates share h-1 days of returns, so the daily IC series is
  autocorrelated and a plain t-statistic overstates significance. Every date is kept and the t-statistic uses
  `metrics.long_run_variance` over h-1 lags (flat weights, as the Diebold-Mariano test: Newey-West's Bartlett
  weights leave it 1.2x too large at h = 5); at h = 1 it is exactly mean / (std / sqrt(n)). ICIR is mean / std of
  the daily series (sample std), not annualised.
- Long-short, at horizon 1 only: each as-of date, rank tickers by their horizon-1 forecast, go long the k highest
  and short the k lowest at 1/k each (k = n // 2 when fewer than 2k tickers; ties broken by ticker name), hold one
  day and earn the horizon-1 realised log return converted to a simple return, exp(y_true) - 1. A date whose
  forecasts are all equal has no view and holds nothing. Turnover compares target weights day to day (the drift
  of weights within the day is ignored) and counts the first day's entry (2 units). Longer horizons would need
  overlapping h-day books; their rows carry no long-short figures.
- Up/down call: as in `forecasting.metrics`, the call is up when `y_pred` >= 0 (the random walk calls "always
  up") and the move is up when `y_true` > 0, pooled over tickers per (model, horizon); ROC AUC scores `y_pred`
  against the realised up/down.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from forecasting.metrics import long_run_variance
from forecasting.names import display_order
from nightcast.frames import groups
from nightcast.memory import trim_heap

TRADING_DAYS = 252  # annualisation of a daily Sharpe ratio
NOISE = 1e-12  # a standard deviation below this is float rounding of a constant series: no ratio is defined
REQUIRED = ("model", "ticker", "asof_date", "horizon", "y_true", "y_pred")

DAILY_IC_SCHEMA = {
    "model": pl.String,
    "horizon": pl.Int64,
    "asof_date": pl.Date,
    "n_tickers": pl.Int64,
    "ic": pl.Float64,
    "rank_ic": pl.Float64,
}
IC_SUMMARY_SCHEMA = {
    "model": pl.String,
    "horizon": pl.Int64,
    "n_dates": pl.Int64,
    "t_lags": pl.Int64,
    **{f"{name}_{stat}": pl.Float64 for name in ("ic", "rank_ic") for stat in ("mean", "std", "ir", "t")},
}
LONG_SHORT_DAILY_SCHEMA = {
    "model": pl.String,
    "asof_date": pl.Date,
    "n_tickers": pl.Int64,
    "k": pl.Int64,
    "gross": pl.Float64,
    "turnover": pl.Float64,
    "cost": pl.Float64,
    "net": pl.Float64,
    "cum_net": pl.Float64,
}
LONG_SHORT_SUMMARY_SCHEMA = {
    "model": pl.String,
    "ls_days": pl.Int64,
    "ls_cum_return": pl.Float64,
    "ls_sharpe": pl.Float64,
    "ls_max_drawdown": pl.Float64,
    "ls_mean_turnover": pl.Float64,
}
UP_DOWN_SCHEMA = {
    "model": pl.String,
    "horizon": pl.Int64,
    "n_forecasts": pl.Int64,
    "tp": pl.Int64,
    "fp": pl.Int64,
    "tn": pl.Int64,
    "fn": pl.Int64,
    "auc": pl.Float64,
}


def _clean(predictions: pl.DataFrame) -> pl.DataFrame:
    """The scored rows with stable dtypes; a duplicated forecast would be counted twice, so it is refused."""
    missing = [c for c in REQUIRED if c not in predictions.columns]
    if missing:
        raise ValueError(f"the prediction frame lacks the columns {missing}")
    frame = predictions.select(
        pl.col("model").cast(pl.String),
        pl.col("ticker").cast(pl.String),
        pl.col("asof_date").cast(pl.Date),
        pl.col("horizon").cast(pl.Int64),
        pl.col("y_true").cast(pl.Float64),
        pl.col("y_pred").cast(pl.Float64),
    ).filter(pl.col("y_true").is_finite() & pl.col("y_pred").is_finite())
    # a (model, horizon) at a time: hashing every row's four keys at once held +0.6 GiB at 3.1M rows
    for _, g in groups(frame.select("model", "horizon", "asof_date", "ticker"), ["model", "horizon"]):
        duplicated = g.select("asof_date", "ticker").is_duplicated()
        if duplicated.any():
            raise ValueError(f"duplicate (model, horizon, asof_date, ticker) rows: {g.filter(duplicated).head(3)}")
    return frame


def daily_ic(predictions: pl.DataFrame, min_tickers: int = 3) -> pl.DataFrame:
    """Pearson IC and Spearman rank IC of `y_pred` vs `y_true` across tickers, one row per (model, horizon,
    asof_date) that has one: dates with fewer than `min_tickers` tickers, or a constant `y_pred` or `y_true`,
    are left out. Columns: model, horizon, asof_date, n_tickers, ic, rank_ic.
    """
    if min_tickers < 2:
        raise ValueError(f"min_tickers must be at least 2 (a correlation needs two points), got {min_tickers}")
    by = ["model", "horizon", "asof_date"]
    frame = _clean(predictions).with_columns(
        pl.col("y_pred").rank("average").over(by).alias("pred_rank"),
        pl.col("y_true").rank("average").over(by).alias("true_rank"),
    )
    varies = (pl.col("y_pred").max() > pl.col("y_pred").min()) & (pl.col("y_true").max() > pl.col("y_true").min())
    daily = frame.group_by(by).agg(
        pl.len().cast(pl.Int64).alias("n_tickers"),
        varies.alias("varies"),
        pl.corr("y_pred", "y_true").alias("ic"),
        pl.corr("pred_rank", "true_rank").alias("rank_ic"),
    )
    daily = daily.filter((pl.col("n_tickers") >= min_tickers) & pl.col("varies"))
    return daily.select(DAILY_IC_SCHEMA.keys()).cast(DAILY_IC_SCHEMA).sort(by)


def overlap_t(values: np.ndarray, lags: int) -> float | None:
    """t-statistic of the mean of a series whose values overlap over `lags` lags (h - 1 at horizon h): the variance
    of the mean is `metrics.long_run_variance` / (n - 1), so with `lags` = 0 this is mean / (std / sqrt(n)) with
    the sample std. None with fewer than 2 (lags + 1) values (a handful of IC dates at h = 5 gave t of 1e7 and
    more, from a variance that is 0 but for rounding) or no variation."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2 * (max(lags, 0) + 1) or x.std(ddof=1) <= NOISE:
        return None  # fewer than two non-overlapping stretches: no estimate of the overlap's variance to trust
    variance = long_run_variance(x, lags) / (n - 1)
    if variance <= 0:  # the fallback is gamma_0 at least: 0 only when nothing varies
        return None
    return float(x.mean() / math.sqrt(variance))


def _series_summary(values: np.ndarray, lags: int, name: str) -> dict:
    mean = float(values.mean()) if values.size else None
    std = float(values.std(ddof=1)) if values.size >= 2 else None
    ratio = mean / std if std is not None and std > NOISE else None
    return {f"{name}_mean": mean, f"{name}_std": std, f"{name}_ir": ratio, f"{name}_t": overlap_t(values, lags)}


def ic_summary(daily: pl.DataFrame) -> pl.DataFrame:
    """Per (model, horizon) of a `daily_ic` frame: n_dates, t_lags (= horizon - 1, the overlap's lags), and
    for `ic` and `rank_ic` the mean, sample std, ratio mean / std (ICIR) and `overlap_t` of the daily series.
    """
    rows = []
    for (model, horizon), g in daily.sort("asof_date").group_by("model", "horizon", maintain_order=True):
        lags = max(int(horizon) - 1, 0)
        row = {"model": model, "horizon": horizon, "n_dates": g.height, "t_lags": lags}
        for name in ("ic", "rank_ic"):
            row |= _series_summary(g[name].to_numpy(), lags, name)
        rows.append(row)
    return pl.DataFrame(rows, schema=IC_SUMMARY_SCHEMA).sort("model", "horizon")


def _weights(h1: pl.DataFrame, k: int) -> pl.DataFrame:
    """Each (model, asof_date): +1/k on the k highest forecasts, -1/k on the k lowest, 0 elsewhere."""
    by = ["model", "asof_date"]
    n = pl.len().over(by).cast(pl.Int64)
    position = pl.int_range(pl.len()).over(by)  # 0 = lowest forecast, after the sort below
    no_view = pl.col("y_pred").max().over(by) == pl.col("y_pred").min().over(by)
    side = pl.when(no_view).then(0).otherwise(pl.min_horizontal(pl.lit(k, dtype=pl.Int64), n // 2))
    book = h1.sort("model", "asof_date", "y_pred", "ticker").with_columns(n_tickers=n, k=side)
    weight = (
        pl.when(pl.col("k") == 0)
        .then(0.0)
        .when(position >= pl.col("n_tickers") - pl.col("k"))
        .then(1.0 / pl.col("k"))
        .when(position < pl.col("k"))
        .then(-1.0 / pl.col("k"))
        .otherwise(0.0)
    )
    return book.with_columns(weight=weight)


def _turnover(book: pl.DataFrame) -> pl.DataFrame:
    """Sum over tickers of |w_t - w_prev| per (model, asof_date); a ticker absent on a date holds 0 there, and the
    first date trades in from an empty book."""
    grid = (
        book.select("model", "asof_date")
        .unique()
        .join(book.select("model", "ticker").unique(), on="model")
        .join(book.select("model", "asof_date", "ticker", "weight"), on=["model", "asof_date", "ticker"], how="left")
        .with_columns(pl.col("weight").fill_null(0.0))
        .sort("model", "ticker", "asof_date")
    )
    # a column first: a window inside the aggregation would only see one (model, asof_date) group
    change = (pl.col("weight") - pl.col("weight").shift(1, fill_value=0.0).over("model", "ticker")).abs()
    return grid.with_columns(change=change).group_by("model", "asof_date").agg(pl.col("change").sum().alias("turnover"))


def long_short_daily(predictions: pl.DataFrame, k: int, cost_bps: float) -> pl.DataFrame:
    """The daily top-k / bottom-k long-short book of each model from its horizon-1 forecasts (see the module
    docstring), held one day for the simple return exp(y_true) - 1 of horizon 1.

    `k`: names per side (fewer, n // 2, on a date with under 2k tickers). `cost_bps`: cost in basis points per
    unit of turnover (sum of absolute weight changes; entering the first book costs 2 units). Columns: model,
    asof_date, n_tickers, k (used that date; 0 = no position), gross, turnover, cost, net = gross - cost, and
    cum_net = prod(1 + net) - 1 to date.
    """
    if k < 1:
        raise ValueError(f"k (names per side of the long-short book) must be at least 1, got {k}")
    if cost_bps < 0:
        raise ValueError(f"cost_bps must be >= 0, got {cost_bps}")
    h1 = _clean(predictions).filter(pl.col("horizon") == 1)
    if h1.is_empty():
        return pl.DataFrame(schema=LONG_SHORT_DAILY_SCHEMA)
    book = _weights(h1, k)
    daily = book.group_by("model", "asof_date").agg(
        pl.col("n_tickers").first(),
        pl.col("k").first(),
        (pl.col("weight") * (pl.col("y_true").exp() - 1)).sum().alias("gross"),
    )
    daily = (
        daily.join(_turnover(book), on=["model", "asof_date"])
        .with_columns(cost=pl.col("turnover") * cost_bps / 1e4)
        .with_columns(net=pl.col("gross") - pl.col("cost"))
        .sort("model", "asof_date")
        .with_columns(cum_net=(1 + pl.col("net")).cum_prod().over("model") - 1)
    )
    return daily.select(LONG_SHORT_DAILY_SCHEMA.keys()).cast(LONG_SHORT_DAILY_SCHEMA)


def annualised_sharpe(returns: np.ndarray) -> float | None:
    """sqrt(252) * mean / sample std of daily returns (no risk-free rate: the book is long and short);
    None with fewer than two days or no variation."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2 or r.std(ddof=1) <= NOISE:
        return None
    return float(math.sqrt(TRADING_DAYS) * r.mean() / r.std(ddof=1))


def max_drawdown(returns: np.ndarray) -> float:
    """Worst peak-to-trough change of wealth prod(1 + r), starting from 1 (itself a peak): <= 0, 0 if never down."""
    wealth = np.cumprod(np.concatenate([[1.0], 1 + np.asarray(returns, dtype=np.float64)]))
    return float((wealth / np.maximum.accumulate(wealth) - 1).min())


def long_short_summary(daily: pl.DataFrame) -> pl.DataFrame:
    """Per model of a `long_short_daily` frame: ls_days, ls_cum_return (compounded net), ls_sharpe (annualised,
    net), ls_max_drawdown (net, <= 0) and ls_mean_turnover."""
    rows = []
    for (model,), g in daily.sort("asof_date").group_by("model", maintain_order=True):
        net = g["net"].to_numpy()
        rows.append(
            {
                "model": model,
                "ls_days": g.height,
                "ls_cum_return": float(np.prod(1 + net) - 1),
                "ls_sharpe": annualised_sharpe(net),
                "ls_max_drawdown": max_drawdown(net),
                "ls_mean_turnover": float(g["turnover"].mean()),
            }
        )
    return pl.DataFrame(rows, schema=LONG_SHORT_SUMMARY_SCHEMA).sort("model")


def up_down_scores(predictions: pl.DataFrame) -> pl.DataFrame:
    """Confusion matrix of the up call (`y_pred` >= 0, as `metrics.hit_rate` counts it) against the realised
    move (`y_true` > 0) and ROC AUC of `y_pred` as the score, per (model, horizon) pooled over tickers and dates.
    AUC is None when only one class occurred. Columns: model, horizon, n_forecasts, tp, fp, tn, fn, auc.
    """
    rows = []
    for (model, horizon), g in groups(_clean(predictions), ["model", "horizon"]):
        actual, score = g["y_true"].to_numpy() > 0, g["y_pred"].to_numpy()
        called = score >= 0  # the convention of metrics.hit_rate / direction_scores: one rule for the call
        one_class = actual.all() or not actual.any()
        rows.append(
            {
                "model": model,
                "horizon": horizon,
                "n_forecasts": g.height,
                "tp": int(np.sum(called & actual)),
                "fp": int(np.sum(called & ~actual)),
                "tn": int(np.sum(~called & ~actual)),
                "fn": int(np.sum(~called & actual)),
                "auc": None if one_class else float(roc_auc_score(actual, score)),
            }
        )
    return pl.DataFrame(rows, schema=UP_DOWN_SCHEMA).sort("model", "horizon")


def cross_section_table(predictions: pl.DataFrame, k: int, cost_bps: float, min_tickers: int = 3) -> pl.DataFrame:
    """One row per (model, horizon): the IC summary (`ic_summary`; n_dates 0 when no date qualified), the
    long-short summary (`long_short_summary`, horizon-1 rows only, null elsewhere, with ls_k, the most names per
    side it held on any date (`k`, or n // 2 in a universe of fewer than 2k tickers), and the ls_cost_bps it was
    built with) and the up/down scores (`up_down_scores`). Sorted by horizon, then display order.
    """
    trim_heap()  # its frames are built beside the predictions, not on top of the C heap's freed pages as well
    daily_ics, daily, calls = _by_model(predictions, k, cost_bps, min_tickers)
    ic = ic_summary(daily_ics)
    held = daily.group_by("model").agg(pl.col("k").max().cast(pl.Int64).alias("ls_k"))
    long_short = (
        long_short_summary(daily)
        .join(held, on="model", how="left")
        .with_columns(horizon=pl.lit(1, dtype=pl.Int64), ls_cost_bps=pl.lit(cost_bps, pl.Float64))
    )
    table = (
        calls.join(ic, on=["model", "horizon"], how="left")
        .join(long_short, on=["model", "horizon"], how="left")
        .with_columns(pl.col("n_dates").fill_null(0), t_lags=(pl.col("horizon") - 1).clip(lower_bound=0))
    )
    long_short_columns = ["ls_k", "ls_cost_bps", *list(LONG_SHORT_SUMMARY_SCHEMA)[1:]]
    columns = [*IC_SUMMARY_SCHEMA, *long_short_columns, *list(UP_DOWN_SCHEMA)[2:]]
    return table.sort("horizon", display_order(), "model").select(columns)


def _by_model(
    predictions: pl.DataFrame, k: int, cost_bps: float, min_tickers: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """`daily_ic`, `long_short_daily` and `up_down_scores` of `predictions`, computed one model's rows at a time.

    Every figure is one model's (each groups by model first: ranks, correlations, books, turnover, counts, AUC),
    and a model's rows keep their order, so the parts are the whole frame's rows, concatenated and sorted as each
    function sorts. Their temporaries (the cleaned copy, the duplicate check, the ranks, the books) are one
    model's, not all of them at once: ~0.5 GiB less at the peak of the nightly's table at 500 tickers x 25 years.
    """
    whole = "model" not in predictions.columns or predictions["model"].null_count() > 0
    models = [] if whole else sorted(predictions["model"].cast(pl.String).unique().to_list())
    if len(models) < 2:
        return (
            daily_ic(predictions, min_tickers),
            long_short_daily(predictions, k, cost_bps),
            up_down_scores(predictions),
        )
    columns = [c for c in REQUIRED if c in predictions.columns]
    ics, books, calls = [], [], []
    for model in models:
        part = predictions.select(columns).filter(pl.col("model").cast(pl.String) == model)
        ics.append(daily_ic(part, min_tickers))
        books.append(long_short_daily(part, k, cost_bps))
        calls.append(up_down_scores(part))
        del part
    return (
        pl.concat(ics).sort("model", "horizon", "asof_date"),
        pl.concat(books).sort("model", "asof_date"),
        pl.concat(calls).sort("model", "horizon"),
    )
