"""Causal volatility forecasts per ticker and the random-walk band built on them (issue 14, point 3).

Input: a long frame `ticker, date, log_return` of daily log returns (`daily_log_returns` makes one from
prices). Output: a long frame `ticker, date, horizon, sigma`, where `sigma` is the forecast, made at the
close of `date`, of the standard deviation of the forward log return over the next `horizon` trading days:
it joins the prediction frame on `ticker, asof_date = date, horizon` (`attach_volatility`).

Causality: the value at date t uses returns up to and including t only. A missing return (null) is skipped,
and the estimate from the last observed day carries forward: never filled from a later day. A day absent
from a ticker's rows is simply not one of its trading days. Horizons count the ticker's rows, as the targets
`y_h{h}` of `features.catalogue` do.

- EWMA (RiskMetrics): sigma2_t = sum_i lam^i r_{t-i}^2 / sum_i lam^i over observed days (zero mean, weights
  normalised, so no arbitrary seed enters); the h-day forecast is sqrt(h * sigma2_t) (a random walk in
  variance: the EWMA forecast is flat in the horizon).
- HAR-RV (Corsi 2009) on squared daily returns: per horizon h, the mean of the next h squared returns is
  regressed by least squares on [1, r_t^2, mean of the last 5, mean of the last 22] over a training span
  (`fit_har`); the h-day forecast is sqrt(h * prediction) (`har_volatility`). Fitting each horizon on its
  own target, rather than scaling the one-day forecast by h, lets the longer horizons revert to the mean
  as the HAR literature finds; dividing by h keeps the coefficients of every horizon on one scale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy.stats import norm

from features.build import sorted_by_ticker
from forecasting.intervals import qlike_table, quantile_column
from forecasting.ridge import Moments
from nightcast.memory import trim_heap

log = logging.getLogger("nightcast.forecasting.volatility")

RETURN = "log_return"
RISKMETRICS_LAMBDA = 0.94  # J.P. Morgan RiskMetrics (1996), daily data
EWMA_MIN_SAMPLES = 20  # about a month of returns before the first EWMA estimate is published
HAR_WINDOWS = (1, 5, 22)  # day, week, month in trading days (Corsi 2009)
HAR_REGRESSORS = ("rv_d", "rv_w", "rv_m")
VARIANCE_FLOOR = 1e-10  # a HAR prediction can come out <= 0 on a calm stretch; sigma stays positive


def daily_log_returns(prices: pl.DataFrame, price: str = "adj_close") -> pl.DataFrame:
    """`ticker, date, log_return` from a long price frame (`ticker, date, <price>`), per ticker.

    A null price makes the returns into and out of that day null (neither is observed); nothing is filled.
    """
    frame = prices.select("ticker", "date", price).sort("ticker", "date")
    return frame.select("ticker", "date", _log_return(pl.col(price)).over("ticker").alias(RETURN))


def _log_return(price: pl.Expr) -> pl.Expr:
    """The log return into each day from the day before (one ticker's prices, in date order)."""
    log_price = price.log()
    return log_price - log_price.shift(1)


def _sorted(returns: pl.DataFrame, column: str) -> pl.DataFrame:
    missing = [c for c in ("ticker", "date", column) if c not in returns.columns]
    if missing:
        raise ValueError(f"the returns frame lacks the columns {missing} (it has {returns.columns})")
    frame = returns.select("ticker", "date", pl.col(column).cast(pl.Float64).alias(RETURN))
    return sorted_by_ticker(frame)[0]  # returns already in order (the panel's) are not copied by a sort


def horizon_sigma(daily_variance: pl.Expr, h: int | pl.Expr) -> pl.Expr:
    """The h-day volatility of a daily variance forecast: sqrt(h * variance) (returns uncorrelated across days)."""
    return (daily_variance * h).sqrt()


def _to_horizons(frame: pl.DataFrame, daily_variance: str, horizons: Iterable[int]) -> pl.DataFrame:
    """Long `ticker, date, horizon, sigma` with sigma = sqrt(h * daily variance)."""
    parts = [
        frame.select(
            "ticker",
            "date",
            pl.lit(int(h), dtype=pl.Int64).alias("horizon"),
            horizon_sigma(pl.col(daily_variance), h).alias("sigma"),
        )
        for h in horizons
    ]
    return pl.concat(parts).sort("ticker", "date", "horizon")


def ewma_variance(
    returns: pl.DataFrame,
    lam: float = RISKMETRICS_LAMBDA,
    min_samples: int = EWMA_MIN_SAMPLES,
    column: str = RETURN,
) -> pl.DataFrame:
    """`ticker, date, log_return, var_ewma`: the RiskMetrics one-day variance forecast made at each date.

    Args:
        returns: `ticker, date, <column>` daily log returns.
        lam: decay per observed day, in (0, 1); 0.94 is RiskMetrics' daily value.
        min_samples: observed returns a ticker needs before its first estimate (null before).
        column: the return column.
    """
    frame = _sorted(returns, column)
    return frame.with_columns(_ewma(pl.col(RETURN), lam, min_samples).over("ticker").alias("var_ewma"))


def _ewma(returns: pl.Expr, lam: float, min_samples: int = EWMA_MIN_SAMPLES) -> pl.Expr:
    """The RiskMetrics one-day variance of `returns` (one ticker's, in date order): `ewma_variance`'s rule."""
    if not 0.0 < lam < 1.0:
        raise ValueError(f"the EWMA decay lambda must lie in (0, 1), got {lam}")
    ewm = (returns**2).ewm_mean(alpha=1.0 - lam, adjust=True, ignore_nulls=True, min_samples=min_samples)
    # ewm_mean leaves a missing day null; the estimate of the last observed day is what was known then.
    return ewm.forward_fill()


def ewma_volatility(
    returns: pl.DataFrame,
    horizons: Sequence[int],
    lam: float = RISKMETRICS_LAMBDA,
    min_samples: int = EWMA_MIN_SAMPLES,
    column: str = RETURN,
) -> pl.DataFrame:
    """`ticker, date, horizon, sigma`: EWMA h-day volatility, sqrt(h) times the one-day forecast."""
    return _to_horizons(ewma_variance(returns, lam, min_samples, column), "var_ewma", horizons)


def har_regressors(returns: pl.DataFrame, column: str = RETURN) -> pl.DataFrame:
    """`ticker, date, log_return, rv_d, rv_w, rv_m`: the HAR inputs known at each date.

    rv_d is the latest observed squared return; rv_w and rv_m average the squared returns observed among the
    ticker's last 5 and 22 rows (missing days skipped, at least half of the window observed). Null until a
    ticker has 22 rows, so every published value averages a full month.
    """
    frame = _sorted(returns, column)
    r2 = pl.col(RETURN) ** 2
    warm = pl.int_range(pl.len()).over("ticker") >= max(HAR_WINDOWS) - 1
    columns = [
        r2.rolling_mean(w, min_samples=(w + 1) // 2).forward_fill().over("ticker")
        if w > 1
        else r2.forward_fill().over("ticker")
        for w in HAR_WINDOWS
    ]
    return frame.with_columns(
        pl.when(warm).then(c).otherwise(None).alias(name) for c, name in zip(columns, HAR_REGRESSORS, strict=True)
    )


@dataclass(frozen=True)
class HarFit:
    """HAR coefficients for one horizon: mean daily variance over the next `horizon` days =
    intercept + beta_d * rv_d + beta_w * rv_w + beta_m * rv_m."""

    horizon: int
    intercept: float
    beta_d: float
    beta_w: float
    beta_m: float
    rows: int  # origins the least squares used
    end: date  # the last date whose return the fit saw

    def coefficients(self) -> np.ndarray:
        return np.array([self.intercept, self.beta_d, self.beta_w, self.beta_m])


def _har_training_rows(regressors: pl.LazyFrame, horizon: int, start: date | None, end: date) -> pl.LazyFrame:
    """Origins in [start, end] whose target (mean of the next `horizon` squared returns, all observed) is
    realised by `end`: their regressors and that target as `y`."""
    r2 = pl.col(RETURN) ** 2
    # The HAR's label: the only look-ahead in this module, and only rows whose label date is <= end are kept.
    target = (r2.rolling_sum(horizon, min_samples=horizon).shift(-horizon) / horizon).over("ticker")
    label_date = pl.col("date").shift(-horizon).over("ticker")
    keep = label_date <= end
    if start is not None:
        keep = keep & (pl.col("date") >= start)
    # only what the fit reads is selected before the filter (the tickers' names and the returns were ~0.1 GiB a
    # copy at 500 tickers x 25 years)
    rows = regressors.select(*HAR_REGRESSORS, target.alias("y"), keep.alias("_keep"))
    return rows.filter(pl.col("_keep")).drop("_keep").drop_nulls()


def fit_har(returns: pl.DataFrame, horizon: int, end: date, start: date | None = None, column: str = RETURN) -> HarFit:
    """Least-squares HAR coefficients for `horizon`, pooled over tickers, from returns dated <= `end` only.

    Args:
        returns: `ticker, date, <column>` daily log returns (rows after `end` may be present; they are unused).
        horizon: trading days ahead; the target is the mean squared return over the next `horizon` days.
        end: last date of the training span: every regressor and every target is realised by then.
        start: first origin of the span (None: from each ticker's first full month).
    """
    return fit_har_horizons(returns, [horizon], end, start, column)[int(horizon)]


def fit_har_horizons(
    returns: pl.DataFrame, horizons: Sequence[int], end: date, start: date | None = None, column: str = RETURN
) -> dict[int, HarFit]:
    """`fit_har` for each horizon, keyed by horizon: the regressors are built once for all of them."""
    # nothing after `end` is even read
    return _fit_on_regressors(har_regressors(returns.filter(pl.col("date") <= end), column), horizons, end, start)


def _fit_on_regressors(
    regressors: pl.DataFrame, horizons: Sequence[int], end: date, start: date | None = None
) -> dict[int, HarFit]:
    """`fit_har_horizons` on `har_regressors`' frame. It may run past `end`: a regressor is causal (the same
    value whatever follows it), and only origins whose label is realised by `end` are fit."""
    bad = [h for h in horizons if int(h) < 1]
    if bad:
        raise ValueError(f"a HAR horizon is a positive number of trading days, got {bad[0]}")
    fits = {}
    for h in (int(h) for h in horizons):
        n, coefficients = _least_squares(_har_training_rows(regressors.lazy(), h, start, end), HAR_REGRESSORS, "y")
        if n < 2 * (len(HAR_REGRESSORS) + 1):
            raise ValueError(f"too few HAR training rows for horizon {h} up to {end}: {n}")
        fits[h] = HarFit(h, *coefficients, rows=n, end=end)
    return fits


def _least_squares(rows: pl.LazyFrame, regressors: Sequence[str], target: str) -> tuple[int, tuple[float, ...]]:
    """The number of rows and (intercept, *slopes) of the least-squares fit of `target` on `regressors` and a
    constant over them.

    Solved from the centred second moments, which polars sums over the rows as it filters them: the design
    matrix is never built (it and its copy inside `numpy.linalg.lstsq` were ~0.3 GiB at 3.1M rows). Centring
    removes the intercept's collinearity with the squared returns; the same coefficients as `lstsq` on [1, x]
    to ~1e-9 relative (tested).
    """
    return _solve(_moments(rows, regressors, target))


def _moments(rows: pl.LazyFrame, regressors: Sequence[str], target: str) -> Moments | None:
    """`Moments` of `regressors` against `target` over `rows`, summed by polars (None: no row). Moments of
    disjoint rows merge (`Moments.merge`) into those of them all."""
    names = [*regressors, target]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i:]]
    moments = (
        rows.select(
            pl.len().alias("n"),
            *(pl.col(c).mean().alias(f"m{i}") for i, c in enumerate(names)),
            *(pl.cov(a, b, ddof=0).alias(f"c{k}") for k, (a, b) in enumerate(pairs)),
        )
        # the in-memory engine: the streaming one summed in an order that varied from run to run, so the same
        # returns gave coefficients a bit apart about once in 200 fits (published volatilities too)
        .collect(engine="in-memory")
        .row(0, named=True)
    )
    n = moments["n"]
    if n == 0:
        return None
    if not all(v is not None and math.isfinite(v) for v in moments.values()):
        raise ValueError("the HAR regressors or targets are not all finite (a price of zero or below?)")
    cov = {}
    for k, (a, b) in enumerate(pairs):
        cov[a, b] = cov[b, a] = moments[f"c{k}"]
    means = [moments[f"m{i}"] for i in range(len(names))]
    return Moments(
        n,
        np.array(means[:-1]),
        np.array(means[-1:]),
        n * np.array([[cov[a, b] for b in regressors] for a in regressors]),
        n * np.array([[cov[a, target]] for a in regressors]),
    )


def _solve(moments: Moments | None) -> tuple[int, tuple[float, ...]]:
    """`_least_squares`' answer from the rows' `Moments` (None: no row)."""
    if moments is None:
        return 0, ()
    n = moments.n
    sxx, sxy, means = moments.sxx / n, moments.sxy[:, 0] / n, np.append(moments.mean_x, moments.mean_y)
    # solved on the correlation scale: a regressor with no spread (constant returns: rounding noise only) gets
    # no slope rather than a "fit" of that noise; collinear ones share their effect (minimum norm, in
    # correlation units)
    spread = np.sqrt(np.clip(np.diag(sxx), 0.0, None))
    varies = spread > 1e-9 * np.maximum(np.abs(means[:-1]), np.finfo(float).tiny)
    slopes = np.zeros(len(sxx))
    if varies.any():
        d = spread[varies]
        corr = sxx[np.ix_(varies, varies)] / np.outer(d, d)
        slopes[varies] = np.linalg.lstsq(corr, sxy[varies] / d, rcond=1e-10)[0] / d
    intercept = means[-1] - float(means[:-1] @ slopes)
    return n, (float(intercept), *(float(b) for b in slopes))


def har_volatility(
    returns: pl.DataFrame,
    fits: dict[int, HarFit],
    column: str = RETURN,
    floor: float = VARIANCE_FLOOR,
    origins: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`ticker, date, horizon, sigma`: the HAR h-day volatility forecast at every date, from `fits`.

    A predicted daily variance at or below zero is floored at `floor` (least squares does not constrain
    the sign); null where the regressors are not yet known (a ticker's first 21 rows). `origins`
    (`ticker, date`): only the forecasts made at those (the regressors still read each ticker's history).
    """
    return _har_forecasts(har_regressors(returns, column), fits, floor, origins)


def _har_forecasts(
    regressors: pl.DataFrame,
    fits: dict[int, HarFit],
    floor: float = VARIANCE_FLOOR,
    origins: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`har_volatility` on `har_regressors`' frame."""
    if origins is not None:
        regressors = _at(regressors, origins)
    parts = [
        regressors.select(
            "ticker", "date", pl.lit(int(h), dtype=pl.Int64).alias("horizon"), _har_sigma(fit, floor).alias("sigma")
        )
        for h, fit in sorted(fits.items())
    ]
    return pl.concat(parts).sort("ticker", "date", "horizon")


def _har_sigma(fit: HarFit, floor: float = VARIANCE_FLOOR) -> pl.Expr:
    """The HAR's rule: its `fit.horizon`-day volatility from the regressor columns of a row."""
    beta = fit.coefficients()
    daily = beta[0] + sum(b * pl.col(name) for b, name in zip(beta[1:], HAR_REGRESSORS, strict=True))
    return (daily.clip(lower_bound=floor) * fit.horizon).sqrt()


def _at(frame: pl.DataFrame, origins: pl.DataFrame) -> pl.DataFrame:
    """The rows of `frame` at the `ticker, date` pairs of `origins`."""
    return frame.join(origins.select("ticker", "date"), on=["ticker", "date"], how="semi")


def attach_volatility(predictions: pl.DataFrame, volatility: pl.DataFrame, name: str = "sigma") -> pl.DataFrame:
    """The prediction frame with the volatility forecast made at each origin as column `name`
    (joined on ticker, asof_date = date, horizon; null where none was known)."""
    vol = volatility.select("ticker", pl.col("date").alias("asof_date"), "horizon", pl.col("sigma").alias(name))
    return predictions.join(vol, on=["ticker", "asof_date", "horizon"], how="left")


def normal_band(
    frame: pl.DataFrame,
    levels: Sequence[float],
    sigma: str = "sigma",
    center: str | None = None,
    interval: float | None = None,
) -> pl.DataFrame:
    """Add a quantile column `q{level}` per level: center + norm.ppf(level) * sigma.

    Args:
        frame: rows with a volatility forecast column `sigma` (h-day standard deviation of the log return).
        levels: quantile levels in (0, 1), e.g. [0.05, 0.1, 0.5, 0.9, 0.95].
        sigma: the volatility column.
        center: the point forecast column (None: 0, the random walk in log returns).
        interval: a central coverage (e.g. 0.8) to also write as `y_lower, y_upper`, the metrics'
            interval columns; None leaves them alone.
    """
    bad = [q for q in levels if not 0.0 < q < 1.0]
    if bad:
        raise ValueError(f"quantile levels must lie in (0, 1), got {bad}")
    mid = pl.col(center) if center is not None else pl.lit(0.0)
    out = frame.with_columns((mid + float(norm.ppf(q)) * pl.col(sigma)).alias(quantile_column(q)) for q in levels)
    if interval is not None:
        z = float(norm.ppf(0.5 + interval / 2))
        out = out.with_columns((mid - z * pl.col(sigma)).alias("y_lower"), (mid + z * pl.col(sigma)).alias("y_upper"))
    return out


SLOW_LAMBDA = 0.995  # a half-life of ~140 trading days: the ticker's long-run variance


def blended_variance(returns: pl.DataFrame, fast_weight: float, fast: float, slow: float) -> pl.DataFrame:
    """`ticker, date, variance`: `fast_weight` x the fast EWMA variance + the rest x a slow one. Volatility
    reverts to its long-run level, as GARCH forecasts do: the fast EWMA alone over-reacts (on the development
    universe's validation span, 2015-2016, 80% intervals scaled by it covered 0.71 of the calmest tenth of
    forecasts and 0.85 of the wildest; blended 0.25 fast / 0.75 slow, 0.76-0.83)."""
    quick = ewma_variance(returns, fast).select("ticker", "date", pl.col("var_ewma").alias("fast"))
    long_run = ewma_variance(returns, slow).select("ticker", "date", pl.col("var_ewma").alias("slow"))
    blend = _blend(pl.col("fast"), pl.col("slow"), fast_weight)
    return quick.join(long_run, on=["ticker", "date"]).select("ticker", "date", blend.alias("variance"))


def _blend(fast: pl.Expr, slow: pl.Expr, fast_weight: float) -> pl.Expr:
    """`blended_variance`'s rule: `fast_weight` x the fast variance + the rest x the slow one."""
    if not 0.0 <= fast_weight <= 1.0:
        raise ValueError(f"the fast EWMA's weight lies in [0, 1], got {fast_weight}")
    return fast_weight * fast + (1.0 - fast_weight) * slow


def _panel_returns(panel, lo: int = 0, hi: int | None = None) -> pl.DataFrame:
    """`ticker, date, log_return` of every panel row (of rows lo..hi, whole tickers), in the panel's order, with
    the ticker as its integer id (`panel.ticker_id`): `daily_log_returns`' rule on the rows per id. Grouped and
    sorted by ticker already, so nothing downstream sorts them; integer keys, not 3.1M ticker names, for every
    per-ticker window."""
    rows = slice(lo, hi)
    frame = pl.DataFrame(
        {
            "ticker": np.asarray(panel.ticker_id[rows], dtype=np.int32),
            "date": panel.dates[rows],
            "adj_close": panel.price[rows],
        }
    )
    log_return = _log_return(pl.col("adj_close").cast(pl.Float64)).over("ticker")
    return frame.select("ticker", "date", log_return.alias(RETURN))


def _by_ticker_id(rows: pl.DataFrame, tickers) -> pl.DataFrame:
    """`rows` with its ticker names replaced by their ids in `tickers` (null for a name not among them)."""
    ids = pl.DataFrame({"ticker": list(tickers), "_id": np.arange(len(tickers), dtype=np.int32)})
    return rows.join(ids, on="ticker", how="left").drop("ticker").rename({"_id": "ticker"})


def panel_sigma(
    panel,
    fast_weight: float,
    fast: float = RISKMETRICS_LAMBDA,
    slow: float = SLOW_LAMBDA,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """(R, K) the volatility forecast of each horizon's forward log return, made at each panel row from its
    ticker's adjusted closes up to that row (`blended_variance`; NaN until `EWMA_MIN_SAMPLES` returns).
    `rows`: only those rows' forecasts, (len(rows), K) (each still reads its ticker's whole history)."""
    variance = panel_variance(panel, fast_weight, fast, slow)
    return horizon_sigmas(variance if rows is None else variance.gather(rows), panel.horizons)


def horizon_sigmas(variance: pl.Series, horizons: Sequence[int]) -> np.ndarray:
    """(N, K) each horizon's volatility (`horizon_sigma`) of the one-day variances `variance` (N,); NaN where
    it is unknown or not finite."""
    variance = variance.to_frame("variance")
    out = np.empty((variance.height, len(horizons)), dtype=np.float64)
    for j, h in enumerate(horizons):
        out[:, j] = variance.select(horizon_sigma(pl.col("variance"), h)).to_series().to_numpy()
    out[~np.isfinite(out)] = np.nan  # in place: an infinite sigma is no forecast either
    return out


class PanelSigma:
    """`panel_sigma` of every panel row, held as the one-day variance (R,) and scaled to the horizons when read:
    `sigma[rows]` is `panel_sigma(panel, fast_weight, rows=rows)`, the same numbers. A fifth of the (R, K)
    array: held through a whole walk-forward (~0.1 GiB less at 500 tickers x 25 years)."""

    def __init__(self, panel, fast_weight: float):
        self.variance, self.horizons = panel_variance(panel, fast_weight), list(panel.horizons)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return horizon_sigmas(self.variance.gather(rows), self.horizons)


def panel_variance(panel, fast_weight: float, fast: float = RISKMETRICS_LAMBDA, slow: float = SLOW_LAMBDA) -> pl.Series:
    """(R,) `blended_variance` at each panel row, computed on the panel's own order: its rows are grouped by
    ticker and sorted by date already, so the returns and both EWMAs run per ticker id with no sort, no join
    and no ticker strings. The same expressions on the same values in the same order: the same numbers as
    the long frame's (the way through `daily_log_returns`, two sorts, a join on ticker strings and a join back
    held ~0.8 GiB of temporaries on a 3.1M-row panel, twice a night). A block of tickers at a time
    (`ticker_blocks`): the whole panel at once held ~0.12 GiB of temporaries, at the nightly's peak."""
    parts = []
    blend = _blend(_ewma(pl.col(RETURN), fast).over("ticker"), _ewma(pl.col(RETURN), slow).over("ticker"), fast_weight)
    for lo, hi in ticker_blocks(panel):
        parts.append(_panel_returns(panel, lo, hi).select(blend.alias("variance")).to_series())
    return pl.concat(parts) if parts else pl.Series("variance", [], dtype=pl.Float64)


TICKERS_PER_BLOCK = 50  # per-ticker values over the whole panel are computed this many tickers at a time


def ticker_blocks(panel) -> list[tuple[int, int]]:
    """(first row, end row) of each block of `TICKERS_PER_BLOCK` tickers of the panel (whole tickers, in order)."""
    bounds = np.append(panel.offsets[:-1:TICKERS_PER_BLOCK], panel.offsets[-1]).tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


PUBLISHED_VOLATILITY = "published"  # the blend the forecasts carry as pred_vol (`panel_sigma`)
# the predictions' columns `volatility_qlike` reads
QLIKE_INPUTS = ("ticker", "asof_date", "horizon", "y_true", "sigma")


def volatility_qlike(panel, predictions: pl.DataFrame) -> pl.DataFrame:
    """QLIKE per horizon of the published volatility forecast (the predictions' `sigma`: the blend) against EWMA
    (lambda 0.94) and HAR, on the out-of-sample origins of `predictions` where all are known:
    `horizon, forecast, qlike, n` (lower is better). The HAR is fit on returns realised before the first origin
    the panel holds (none of the span it is scored on); too little history for it, or returns that are not
    finite, leave it out (said in a warning).

    Every per-ticker value is computed on the panel's own order (integer ids, no sorts), a block of tickers at a
    time (`ticker_blocks`), and read at the origins' rows; the HAR's least squares merges each
    block's moments. On the nightly's predictions at 500 tickers x 25 years (3.1M rows, five models) the whole
    panel at once peaked ~0.42 GiB above its inputs (0.77 GiB through long frames with ticker names, sorted)."""
    trim_heap()  # its frames are built beside what is live, not on top of the C heap's freed pages as well
    rows = _scored_origins(panel, predictions)
    if rows.is_empty():
        return pl.DataFrame(schema={"horizon": pl.Int64, "forecast": pl.String, "qlike": pl.Float64, "n": pl.UInt32})
    horizons = sorted(rows["horizon"].unique().to_list())
    end = rows["asof_date"].min() - timedelta(days=1)  # the HAR sees no return of the span it is scored on
    values, moments = _by_blocks(panel, rows["_row"].to_numpy(), horizons, end)
    frame = pl.concat([rows.drop("_row"), values], how="horizontal").with_columns(
        horizon_sigma(pl.col("_var_ewma"), pl.col("horizon")).alias("ewma_0.94")
    )
    forecasts = [PUBLISHED_VOLATILITY, "ewma_0.94"]
    try:
        har = None  # each row's horizon's fit (null for none)
        for h in horizons:
            if isinstance(moments[h], ValueError):
                raise moments[h]
            n, coefficients = _solve(moments[h])
            if n < 2 * (len(HAR_REGRESSORS) + 1):
                raise ValueError(f"too few HAR training rows for horizon {h} up to {end}: {n}")
            when = pl.when(pl.col("horizon") == h) if har is None else har.when(pl.col("horizon") == h)
            har = when.then(_har_sigma(HarFit(h, *coefficients, rows=n, end=end)))
        frame, forecasts = frame.with_columns(har.alias("har")), [*forecasts, "har"]
    except ValueError as exc:  # too little history before the first origin, or unusable returns
        log.warning("the volatility QLIKE table compares the forecasts without the HAR: %s", exc)
    return qlike_table(frame.drop("_var_ewma", *HAR_REGRESSORS), forecasts)


def _scored_origins(panel, predictions: pl.DataFrame) -> pl.DataFrame:
    """`asof_date, horizon, y_true, published, ticker, _row`: one row per origin and horizon of `predictions`
    (every model of an origin carries the same volatility), with its ticker's id and panel row, sorted by that
    row; an origin the panel lacks has nothing to compare with (dropped)."""
    key = list(QLIKE_INPUTS[:3])
    # the first row of each kept (a mask, not `unique`, whose hash table over every model's rows was ~0.4 GiB at
    # 3.1M rows)
    rows = (
        predictions.lazy()
        .select(*key, "y_true", pl.col("sigma").alias(PUBLISHED_VOLATILITY))
        .filter(pl.struct(key).is_first_distinct())
        .collect()
        .with_columns(pl.col("horizon").cast(pl.Int64))
        .drop_nulls()
        .filter(pl.col("y_true").is_not_nan())
    )
    rows = _by_ticker_id(rows, panel.tickers)
    rows = rows.with_columns(_panel_rows(panel, rows["ticker"], rows["asof_date"]).alias("_row"))
    return rows.drop_nulls("_row").sort("_row", maintain_order=True)


def _by_blocks(panel, origins: np.ndarray, horizons: list[int], end: date) -> tuple[pl.DataFrame, dict]:
    """A block of tickers at a time: the EWMA variance and the HAR regressors at the panel rows `origins`
    (sorted), as `_var_ewma, rv_d, rv_w, rv_m` in their order; and per horizon the HAR least-squares `Moments`
    over every panel row whose label is realised by `end` (None: no such row), or the `ValueError` that says why
    the HAR cannot be fit (returns that are not finite): raised by the caller, which goes on without the HAR."""
    values, moments = [], dict.fromkeys(horizons)
    for lo, hi in ticker_blocks(panel):
        regressors = har_regressors(_panel_returns(panel, lo, hi)).with_columns(
            _ewma(pl.col(RETURN), RISKMETRICS_LAMBDA).over("ticker").alias("_var_ewma")
        )
        first, last = np.searchsorted(origins, [lo, hi])
        values.append(regressors.select("_var_ewma", *HAR_REGRESSORS)[origins[first:last] - lo])
        for h in horizons:
            if isinstance(moments[h], ValueError):
                continue
            try:
                part = _moments(_har_training_rows(regressors.lazy(), h, None, end), HAR_REGRESSORS, "y")
            except ValueError as exc:
                moments[h] = exc
                continue
            moments[h] = part if moments[h] is None else moments[h] if part is None else moments[h].merge(part)
    return pl.concat(values), moments


def _panel_rows(panel, ticker_id: pl.Series, dates: pl.Series) -> pl.Series:
    """The panel row of each (ticker id, date) pair, null where the panel has no such row. Its rows are grouped by
    ticker id in increasing order and sorted by date within each: one sorted key, searched."""

    def keys(ids: np.ndarray, days: np.ndarray) -> np.ndarray:
        return (ids.astype(np.int64) << 32) + (days.astype(np.int64) + 2**31)

    days = np.asarray(panel.dates).astype("datetime64[D]").view(np.int64)
    panel_keys = keys(np.asarray(panel.ticker_id), days)
    if not (panel_keys[1:] > panel_keys[:-1]).all():
        raise ValueError("the panel's rows are not grouped by ticker id and sorted by date")
    wanted = keys(ticker_id.fill_null(0).to_numpy(), dates.cast(pl.Int32).fill_null(0).to_numpy())
    row = np.searchsorted(panel_keys, wanted)
    inside = row < panel_keys.size
    found = ticker_id.is_not_null().to_numpy() & dates.is_not_null().to_numpy() & inside
    found[inside] &= panel_keys[row[inside]] == wanted[inside]
    return pl.select(pl.when(pl.Series(found)).then(pl.Series(row, dtype=pl.Int64))).to_series().alias("_row")
