"""Forecast metrics as pure functions over the long prediction frame.

The frame has `model, ticker, asof_date, horizon, target_date, y_true, y_pred`
(forward log returns), optionally `last_price` and `y_lower, y_upper`. Skill
is judged on returns: a price MSE pooled across tickers is dominated by the
high-priced names, and the directional baseline is the "always up" rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

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


@dataclass(frozen=True)
class _Rows:
    """Rows of one group as arrays, in the frame's order: what `_scores` reads. `codes`: each row's ticker as an
    integer in the tickers' sorted order (0 for none); `base`: the baseline's forecast of the row's (ticker,
    origin), in a pair of rows both forecast."""

    y_true: np.ndarray
    y_pred: np.ndarray
    dates: np.ndarray
    codes: np.ndarray
    tickers: np.ndarray
    last_price: np.ndarray | None = None
    lower: np.ndarray | None = None  # the band's ends, with `banded` where a row has one
    upper: np.ndarray | None = None
    banded: np.ndarray | None = None
    base: np.ndarray | None = None

    @classmethod
    def of(cls, g: pl.DataFrame) -> _Rows:
        bands = "y_lower" in g.columns
        return cls(
            y_true=g["y_true"].to_numpy(),
            y_pred=g["y_pred"].to_numpy(),
            dates=g["asof_date"].to_numpy(),
            codes=g["_code"].to_numpy(),
            tickers=g["ticker"].to_numpy(),
            last_price=g["last_price"].to_numpy() if "last_price" in g.columns else None,
            lower=g["y_lower"].to_numpy() if bands else None,
            upper=g["y_upper"].to_numpy() if bands else None,
            banded=g["y_lower"].is_not_null().to_numpy() if bands else None,
            base=g["_base"].to_numpy() if "_base" in g.columns else None,
        )

    def take(self, index: np.ndarray) -> _Rows:
        return _Rows(*(None if a is None else a[index] for a in (getattr(self, f.name) for f in fields(self))))


def _group_rows(g: pl.DataFrame, base: pl.DataFrame | None) -> tuple[_Rows, _Rows | None]:
    """(g's rows, the rows both g and the baseline forecast, with the baseline's forecast: None without one)."""
    g = g.with_columns(_code=pl.col("ticker").rank("dense").fill_null(0))
    if base is None:
        return _Rows.of(g), None
    # in g's row order: a join's output order is not fixed, and the baseline's MSE sums in this order
    pair = g.join(base.rename({"y_pred": "_base"}), on=["ticker", "asof_date"], maintain_order="left")
    return _Rows.of(g), _Rows.of(pair)


def _scores(r: _Rows, pair: _Rows | None, horizon: int) -> dict:
    yt, yp = r.y_true, r.y_pred
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
    if r.last_price is not None:
        p0 = r.last_price
        row["price_rmse"] = math.sqrt(mse(p0 * np.exp(yt), p0 * np.exp(yp)))
        row["price_mae"] = mae(p0 * np.exp(yt), p0 * np.exp(yp))
    if r.banded is not None and r.banded.any():
        covered, lower, upper = yt[r.banded], r.lower[r.banded], r.upper[r.banded]
        row["coverage"] = float(np.mean((covered >= lower) & (covered <= upper)))
        row["interval_width"] = float(np.mean(upper - lower))
    if pair is not None:
        row.update(_against_baseline(pair, horizon))
    return row


def _against_baseline(pair: _Rows, horizon: int) -> dict:
    """The MSE ratio and the DM test against the baseline, on the rows both forecast (every row, in a backtest's
    identical origins)."""
    if not len(pair.y_true):
        return {"baseline_mse": math.nan, "mse_ratio": math.nan, "dm_stat": math.nan, "dm_pvalue": math.nan}
    baseline = mse(pair.y_true, pair.base)
    row = {
        "baseline_mse": baseline,
        "mse_ratio": mse(pair.y_true, pair.y_pred) / baseline if baseline > 0 else math.nan,
    }
    order = np.lexsort((pair.codes, pair.dates))  # (date, ticker) order: the per-date means' summing order
    y = pair.y_true[order]
    a, b = (y - pair.y_pred[order]) ** 2, (y - pair.base[order]) ** 2
    row["dm_stat"], row["dm_pvalue"] = diebold_mariano(*_per_date_means(pair.dates[order], a, b), horizon)
    return row


def _per_date_means(dates: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means of `a` and `b` per date, summed in the rows' (date, ticker) order: polars' grouped means summed in
    an order that changed from run to run (the pooled DM statistic moved in its last bits between two runs
    on the same predictions), and a published figure should not."""
    if not len(dates):
        return np.array([]), np.array([])
    starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
    counts = np.diff(np.r_[starts, len(dates)])
    return np.add.reduceat(a, starts) / counts, np.add.reduceat(b, starts) / counts


def _segments(codes: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """(the stable order of `codes`, each code's (start, end) in that order)."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.array([], int)
    ends = np.r_[starts[1:], len(ordered)]
    return order, {int(ordered[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}


def _per_ticker(rows: _Rows, pair: _Rows | None) -> Iterator[tuple[str | None, _Rows, _Rows | None]]:
    """Each ticker's rows and pairs, in the frame's order (one stable sort of each, then slices: a polars filter
    and join per ticker made the table quadratic in tickers, ~18 s at 500 tickers)."""
    order, spans = _segments(rows.codes)
    pair_order, pair_spans = _segments(pair.codes) if pair is not None else (None, {})
    for code, (start, end) in spans.items():
        own = rows.take(order[start:end])
        p_start, p_end = pair_spans.get(code, (0, 0))
        yield own.tickers[0], own, None if pair is None else pair.take(pair_order[p_start:p_end])


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
        group, pair = _group_rows(g, base)
        rows.append(
            {"model": model, "scope": Scope.POOLED, "ticker": None, "horizon": horizon, **_scores(group, pair, horizon)}
        )
        rows.extend(
            {"model": model, "scope": Scope.TICKER, "ticker": ticker, "horizon": horizon, **_scores(own, mine, horizon)}
            for ticker, own, mine in _per_ticker(group, pair)
        )
    table = pl.DataFrame(rows, schema_overrides={"ticker": pl.String}, infer_schema_length=None)
    return table.sort(
        pl.col("scope") != Scope.POOLED,
        "ticker",
        "horizon",
        display_order(),
    )
