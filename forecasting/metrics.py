"""Forecast metrics as pure functions over the long prediction frame.

The frame has `model, ticker, asof_date, horizon, target_date, y_true, y_pred`
(forward log returns), optionally `last_price` and `y_lower, y_upper`. Skill
is judged on returns: a price MSE pooled across tickers is dominated by the
high-priced names, and the directional baseline is the "always up" rate.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats

from forecasting.names import BENCHMARK, Scope, display_order
from nightcast.frames import groups


def pooled(table: pl.DataFrame) -> pl.DataFrame:
    """The pooled rows of a metrics-shaped table (scope column)."""
    return table.filter(pl.col("scope") == Scope.POOLED)


def per_ticker(table: pl.DataFrame) -> pl.DataFrame:
    return table.filter(pl.col("scope") == Scope.TICKER)


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    return float(np.mean((y_true - y_pred) ** 2))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64))))


def hit_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of forecasts with the right sign (a zero forecast counts as 'up')."""
    return float(np.mean((np.asarray(y_true) > 0) == (np.asarray(y_pred) >= 0)))


def direction_scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of the 'up' call (a zero forecast counts as 'up'); 0 where undefined.

    The same numbers as scikit-learn's `precision_recall_fscore_support(average="binary", zero_division=0)`,
    counted directly: its input checks cost ~5 ms per call, and a metrics table calls it per ticker and horizon.
    """
    actual, called = np.asarray(y_true) > 0, np.asarray(y_pred) >= 0
    tp = int(np.sum(actual & called))
    called_up, actually_up = int(np.sum(called)), int(np.sum(actual))
    precision = tp / called_up if called_up else 0.0
    recall = tp / actually_up if actually_up else 0.0
    f1 = 2 * tp / (called_up + actually_up) if called_up + actually_up and tp else 0.0
    return float(precision), float(recall), float(f1)


def long_run_variance(values: np.ndarray, lags: int) -> float:
    """n times the variance of the mean of a serially correlated series: gamma_0 + 2 * sum of gamma_j, j = 1..lags
    (autocovariances over n, `lags` capped at n - 1).

    Flat (Hansen-Hodrick) weights: h-step forecast errors, and an h-day return's rank IC, overlap like an MA(h-1)
    process, whose long-run variance is exactly this sum with h-1 lags (h^2 in units of gamma_0 for sums of h iid
    terms); Bartlett (Newey-West) weights over the same lags recover (2h^2 + 1) / 3 of it (17 of 25 at h = 5: a
    t-statistic 1.2x too large, twice the nominal rejections in simulation). Where the flat sum is not clearly
    positive (negative autocovariances in a small sample; or lags = n - 1, where it is 0 but for rounding, as the
    deviations sum to 0) the larger of the Bartlett sum and gamma_0: never below the variance of a series without
    overlap, so a degenerate estimate cannot make a difference look significant. 0 only for a constant series.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    dev = x - x.mean()
    lags = min(max(int(lags), 0), n - 1)
    gamma = np.array([float(dev[k:] @ dev[: n - k]) / n for k in range(lags + 1)])
    flat = gamma[0] + 2 * gamma[1:].sum()
    if flat > 1e-8 * gamma[0]:
        return float(flat)
    weights = 1 - np.arange(1, lags + 1) / (lags + 1)
    return float(max(gamma[0] + 2 * (weights * gamma[1:]).sum(), gamma[0]))


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int) -> tuple[float, float]:
    """Diebold-Mariano test of equal accuracy, with the Harvey-Leybourne-Newbold small-sample correction.

    `loss_a`, `loss_b`: per-period losses of two forecasts (e.g. squared errors), in time order.
    The loss differential's long-run variance: `long_run_variance` over lags 1..horizon-1. Returns (statistic,
    two-sided p-value from Student's t with n-1 degrees of freedom); negative means `a` is more accurate. A
    differential with no variation is (0, 1) when it is zero and decisive (infinite statistic, p 0) when it is not.
    """
    d = np.asarray(loss_a, dtype=np.float64) - np.asarray(loss_b, dtype=np.float64)
    n = d.size
    correction = (n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n if n else 0.0
    if n < 3 or n <= horizon or correction <= 0:
        return math.nan, math.nan  # too few periods for this horizon's overlapping errors: no test
    mean = float(d.mean())
    variance = long_run_variance(d, horizon - 1) / n
    if variance <= 0:
        # every period the same difference: none is no evidence; a constant gap is as decisive as it gets
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    statistic = mean / math.sqrt(variance) * math.sqrt(correction)
    return float(statistic), float(2 * stats.t.sf(abs(statistic), df=n - 1))


def _scores(g: pl.DataFrame, base: pl.DataFrame | None, horizon: int) -> dict:
    yt, yp = g["y_true"].to_numpy(), g["y_pred"].to_numpy()
    precision, recall, f1 = direction_scores(yt, yp)
    error = mse(yt, yp)
    row = {
        "n": len(yt),
        "mse": error,
        "rmse": math.sqrt(error),
        "mae": mae(yt, yp),
        "hit_rate": hit_rate(yt, yp),
        "up_rate": float(np.mean(yt > 0)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
    if "last_price" in g.columns:
        p0 = g["last_price"].to_numpy()
        row["price_rmse"] = math.sqrt(mse(p0 * np.exp(yt), p0 * np.exp(yp)))
        row["price_mae"] = mae(p0 * np.exp(yt), p0 * np.exp(yp))
    if "y_lower" in g.columns and g["y_lower"].null_count() < g.height:
        covered = g.drop_nulls("y_lower")
        row["coverage"] = float(
            ((covered["y_true"] >= covered["y_lower"]) & (covered["y_true"] <= covered["y_upper"])).mean()
        )
        row["interval_width"] = float((covered["y_upper"] - covered["y_lower"]).mean())
    if base is not None:
        # in g's row order: a join's output order is not fixed, and the baseline's MSE sums in this order
        pair = g.join(base, on=["ticker", "asof_date"], suffix="_base", maintain_order="left")
        # the ratio compares the two on the rows both forecast (every row, in a backtest's identical origins)
        row["baseline_mse"] = mse(pair["y_true"], pair["y_pred_base"])
        shared = mse(pair["y_true"], pair["y_pred"])
        row["mse_ratio"] = shared / row["baseline_mse"] if row["baseline_mse"] > 0 else math.nan
        loss = pair.select(
            "asof_date",
            "ticker",
            ((pl.col("y_true") - pl.col("y_pred")) ** 2).alias("a"),
            ((pl.col("y_true") - pl.col("y_pred_base")) ** 2).alias("b"),
        ).sort("asof_date", "ticker")
        row["dm_stat"], row["dm_pvalue"] = diebold_mariano(*_per_date_means(loss), horizon)
    return row


def _per_date_means(loss: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mean of columns a and b per asof_date, summed in (date, ticker) order: polars' grouped means summed in
    an order that changed from run to run (the pooled DM statistic moved in its last bits between two runs
    on the same predictions), and a published figure should not."""
    if loss.is_empty():
        return np.array([]), np.array([])
    dates = loss["asof_date"].to_numpy()
    starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
    counts = np.diff(np.r_[starts, len(dates)])
    a, b = (np.add.reduceat(loss[c].to_numpy(), starts) / counts for c in ("a", "b"))
    return a, b


def metrics_table(predictions: pl.DataFrame, baseline: str = BENCHMARK) -> pl.DataFrame:
    """One row per (model, ticker, horizon) with scope "ticker", and one per (model, horizon) with scope
    "pooled" (ticker null) for the figures pooled across tickers.

    Pooled Diebold-Mariano tests use the loss differential averaged across tickers per origin date. Rows with no
    outcome yet are not scored (a missing forecast is: its MSE is NaN); a model's MSE ratio and DM test are taken
    on the rows the baseline forecast too.
    """
    # a row whose outcome is not known yet is not scored; a missing forecast is, as NaN: a model that failed to
    # forecast some rows must not be judged on the rows it chose
    known = pl.col("y_true").is_finite().fill_null(False)
    if not predictions.select(known.all()).item():  # checked first: a filter would copy every row of the frame
        predictions = predictions.filter(known)
    rows = []
    for (model, horizon), g in groups(predictions, ["model", "horizon"]):
        base_all = predictions.filter((pl.col("model") == baseline) & (pl.col("horizon") == horizon)).select(
            "ticker", "asof_date", "y_pred"
        )
        base = None if model == baseline or base_all.is_empty() else base_all
        rows.append(
            {"model": model, "scope": Scope.POOLED, "ticker": None, "horizon": horizon, **_scores(g, base, horizon)}
        )
        for (ticker,), gt in g.group_by("ticker"):
            tbase = None if base is None else base.filter(pl.col("ticker") == ticker)
            rows.append(
                {
                    "model": model,
                    "scope": Scope.TICKER,
                    "ticker": ticker,
                    "horizon": horizon,
                    **_scores(gt, tbase, horizon),
                }
            )
    table = pl.DataFrame(rows, schema_overrides={"ticker": pl.String}, infer_schema_length=None)
    return table.sort(
        pl.col("scope") != Scope.POOLED,
        "ticker",
        "horizon",
        display_order(),
    )
