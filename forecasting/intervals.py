"""Metrics over quantile forecasts, as pure functions over the long prediction frame (issue 14, point 3).

Representation: the prediction frame (`model, ticker, asof_date, horizon, target_date, y_true, y_pred`, in
forward log returns) carries one Float64 column per quantile level, named `q{level}` with the level written
as a short decimal: `q0.05, q0.1, q0.5, q0.9, q0.95` (`quantile_column`). Flat columns, not a list column, so
each level is a plain polars expression, the frame writes to CSV, and a missing level is a named error.
A central interval of coverage c is read from `q{(1-c)/2}` and `q{(1+c)/2}`.

Every table has one row per group of `by` (default `model, horizon`) and the row count `n`; rows with a null
outcome, quantile or volatility are left out of the figure that needs them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl

from nightcast.io import atomic_write

BY = ("model", "horizon")
# the quantile levels the backtest scores and the nightly publishes (`backtest.conformal_quantiles`)
QUANTILE_LEVELS = (0.05, 0.1, 0.5, 0.9, 0.95)
QLIKE_FLOOR = 1e-12  # squared returns of exactly 0 (a stale price) would make log(r^2) infinite
_QUANTILE = re.compile(r"^q(0?\.\d+)$")


def quantile_column(level: float) -> str:
    """The column of quantile `level`: 0.05 -> "q0.05" (rounded to 6 decimals, so 0.5 - 0.9 / 2 is q0.05)."""
    return f"q{round(float(level), 6):g}"


def quantile_levels(frame: pl.DataFrame) -> list[float]:
    """The quantile levels present as `q{level}` columns, ascending."""
    return sorted(float(m.group(1)) for c in frame.columns if (m := _QUANTILE.match(c)))


def _need(frame: pl.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the columns {missing} (it has {frame.columns})")


def _levels(frame: pl.DataFrame, levels: Sequence[float] | None) -> list[float]:
    chosen = list(levels) if levels is not None else quantile_levels(frame)
    if not chosen:
        raise ValueError(f"no quantile columns q{{level}} in the frame (it has {frame.columns})")
    _need(frame, [quantile_column(q) for q in chosen])
    return chosen


def pinball(y: pl.Expr, q: pl.Expr, level: float) -> pl.Expr:
    """Pinball (quantile) loss of quantile forecast `q` at `level` for outcome `y`: (y - q)(level - 1{y < q})."""
    u = y - q
    return pl.max_horizontal(level * u, (level - 1.0) * u)


def pinball_table(frame: pl.DataFrame, levels: Sequence[float] | None = None, by: Sequence[str] = BY) -> pl.DataFrame:
    """Mean pinball loss per group and quantile level: `*by, level, pinball, n`."""
    chosen = _levels(frame, levels)
    parts = []
    for q in chosen:
        col = quantile_column(q)
        rows = frame.drop_nulls(["y_true", col])
        loss = pinball(pl.col("y_true"), pl.col(col), q).mean().alias("pinball")
        parts.append(rows.group_by(list(by)).agg(pl.lit(q).alias("level"), loss, pl.len().alias("n")))
    return pl.concat(parts).sort([*by, "level"])


CRPS_LEVELS = 50  # midpoints of (0, 1) the CRPS integral is summed over: a normal's CRPS to 0.16% at worst
_BLOCK_ROWS = 1 << 15  # rows scored at a time: a (rows x CRPS_LEVELS) float64 block of ~13 MB


def crps_table(frame: pl.DataFrame, levels: Sequence[float] | None = None, by: Sequence[str] = BY) -> pl.DataFrame:
    """CRPS per group from the quantiles: `*by, crps, n`.

    CRPS = 2 * integral over t in (0, 1) of the pinball loss of the quantile function at t. A quantile forecast
    gives that function at a few levels only; between them (and beyond the outermost, with the outer
    segments' slopes) it is interpolated linearly in normal scores, so a normal forecast's CRPS comes out exact
    but for the sum over `CRPS_LEVELS` midpoints (0.16% at worst, at outcomes 3 sigma out). 1.5 s per 5M rows.
    Twice the mean pinball loss over the levels, what this was before, is an approximation for evenly spread
    levels only: over 0.05, 0.1, 0.5, 0.9 and 0.95 it gave 0.68 of a normal forecast's CRPS.
    """
    chosen = _levels(frame, levels)
    if len(chosen) < 2:
        raise ValueError(f"a CRPS needs the quantiles of at least two levels, got {chosen}")
    columns = [quantile_column(q) for q in chosen]
    rows = frame.drop_nulls(["y_true", *columns])
    weights, t = _interpolation(chosen)
    score = np.empty(rows.height)
    for start in range(0, rows.height, _BLOCK_ROWS):  # a block's quantiles copied at a time, not all of them
        block = rows.slice(start, _BLOCK_ROWS)
        u = block["y_true"].to_numpy()[:, None] - block.select(columns).to_numpy() @ weights
        score[start : start + block.height] = 2.0 * (u * (t - (u < 0))).mean(axis=1)
    return (
        rows.select(list(by))
        .with_columns(pl.Series("crps", score))
        .group_by(list(by))
        .agg(pl.col("crps").mean(), pl.len().alias("n"))
        .sort(list(by))
    )


def _interpolation(levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(W, t): the quantile function at the midpoints t is `quantiles @ W` (levels x midpoints), linear in
    normal scores between the two levels around each midpoint (the outer two beyond the outermost)."""
    normal = NormalDist()
    z = np.array([normal.inv_cdf(level) for level in levels])
    t = (np.arange(CRPS_LEVELS) + 0.5) / CRPS_LEVELS
    zt = np.array([normal.inv_cdf(level) for level in t])
    seg = np.clip(np.searchsorted(z, zt) - 1, 0, len(z) - 2)
    w = (zt - z[seg]) / (z[seg + 1] - z[seg])
    weights = np.zeros((len(z), CRPS_LEVELS))
    weights[seg, np.arange(CRPS_LEVELS)] = 1.0 - w
    weights[seg + 1, np.arange(CRPS_LEVELS)] = w
    return weights, t


def _interval(frame: pl.DataFrame, level: float) -> tuple[pl.DataFrame, pl.Expr, pl.Expr]:
    """Rows with the central `level` interval known, and expressions for its hit and width."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a central interval's coverage lies in (0, 1), got {level}")
    lower, upper = quantile_column((1 - level) / 2), quantile_column((1 + level) / 2)
    _need(frame, ["y_true", lower, upper])
    rows = frame.drop_nulls(["y_true", lower, upper])
    hit = ((pl.col("y_true") >= pl.col(lower)) & (pl.col("y_true") <= pl.col(upper))).cast(pl.Float64)
    return rows, hit, pl.col(upper) - pl.col(lower)


def coverage_table(frame: pl.DataFrame, level: float = 0.9, by: Sequence[str] = BY) -> pl.DataFrame:
    """Realised coverage and mean width of the central `level` interval per group: `*by, coverage, width, n`."""
    rows, hit, width = _interval(frame, level)
    return (
        rows.group_by(list(by))
        .agg(hit.mean().alias("coverage"), width.mean().alias("width"), pl.len().alias("n"))
        .sort(list(by))
    )


def decile_coverage(
    frame: pl.DataFrame, level: float = 0.9, volatility: str = "sigma", by: Sequence[str] = BY, bins: int = 10
) -> pl.DataFrame:
    """Coverage of the central `level` interval within volatility deciles (conditional coverage).

    The deciles are of `volatility`, the volatility forecast made at each row's origin, ranked across the
    evaluated rows of each group of `by`: pooled over tickers (a calm day of a wild stock and a wild day of a
    calm stock are ranked together), as a user reads "the most volatile tenth of forecasts". Equal-count bins
    by ordinal rank (ties split by row order). Returns `*by, decile (0 = calmest), volatility (mean),
    coverage, width, n`.
    """
    rows, hit, width = _interval(frame, level)
    _need(rows, [volatility])
    rows = rows.drop_nulls(volatility).filter(pl.col(volatility).is_not_nan())
    group = list(by)
    rank = pl.col(volatility).rank("ordinal").over(group) - 1
    decile = (rank * bins // pl.len().over(group)).cast(pl.Int32).alias("decile")
    return (
        rows.with_columns(decile)
        .group_by([*group, "decile"])
        .agg(
            pl.col(volatility).mean().alias("volatility"),
            hit.mean().alias("coverage"),
            width.mean().alias("width"),
            pl.len().alias("n"),
        )
        .sort([*group, "decile"])
    )


def qlike(realised_sq: np.ndarray, variance: np.ndarray, floor: float = QLIKE_FLOOR) -> np.ndarray:
    """QLIKE loss per row: x - log(x) - 1 with x = r^2 / s^2, both floored at `floor`.

    Zero when the forecast equals the outcome, and robust to the noise of r^2 as a proxy for the true
    variance (Patton 2011): its expectation is minimised by the true variance. The floor only keeps
    log(r^2) finite on zero returns; that term is shared by every forecast of a row, so it cancels when
    forecasts are compared on the same rows.
    """
    r2 = np.maximum(np.asarray(realised_sq, dtype=np.float64), floor)
    s2 = np.maximum(np.asarray(variance, dtype=np.float64), floor)
    x = r2 / s2
    return x - np.log(x) - 1.0


def qlike_table(
    frame: pl.DataFrame,
    forecasts: Sequence[str],
    realised: str = "y_true",
    by: Sequence[str] = ("horizon",),
    floor: float = QLIKE_FLOOR,
) -> pl.DataFrame:
    """Mean QLIKE of each volatility forecast column (an h-day standard deviation) against the squared
    h-day outcome `realised`, on the rows where every forecast is known: `*by, forecast, qlike, n`."""
    _need(frame, [realised, *forecasts, *by])
    # every row in one order before summing, and each group's mean in numpy over its contiguous rows: the same
    # rows give the same figure to the last bit whatever order a join left them in (polars' grouped mean over
    # rows in another order moved it in the 16th digit between two identical backtests)
    rows = frame.drop_nulls([realised, *forecasts]).sort([*by, *(c for c in frame.columns if c not in by)])
    r2 = rows[realised].to_numpy() ** 2
    if by:
        starts = np.flatnonzero(rows.select(pl.struct(list(by)).is_first_distinct()).to_series().to_numpy())
    else:
        starts = np.array([0] if rows.height else [], dtype=np.int64)
    ends = np.append(starts[1:], rows.height) if starts.size else starts
    keys = rows.select(by)
    out = []
    for name in forecasts:
        loss = qlike(r2, rows[name].to_numpy() ** 2, floor)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            out.append(
                {
                    **(keys.row(a, named=True) if by else {}),
                    "forecast": name,
                    "qlike": float(loss[a:b].mean()),
                    "n": b - a,
                }
            )
    schema = {**{c: rows.schema[c] for c in by}, "forecast": pl.String, "qlike": pl.Float64, "n": pl.UInt32}
    return pl.DataFrame(out, schema=schema).sort([*by, "forecast"])


def reliability_table(
    frame: pl.DataFrame, levels: Sequence[float] | None = None, by: Sequence[str] = ("model",)
) -> pl.DataFrame:
    """Observed frequency of the outcome at or below each quantile forecast: `*by, level, observed, n`.

    A calibrated forecast has observed = level at every level (the reliability diagram's diagonal).
    """
    chosen = _levels(frame, levels)
    parts = []
    for q in chosen:
        col = quantile_column(q)
        rows = frame.drop_nulls(["y_true", col])
        below = (pl.col("y_true") <= pl.col(col)).cast(pl.Float64)
        parts.append(
            rows.group_by(list(by)).agg(pl.lit(q).alias("level"), below.mean().alias("observed"), pl.len().alias("n"))
        )
    return pl.concat(parts).sort([*by, "level"])


def _pyplot():
    # matplotlib only when a plot is drawn, headless
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(table: pl.DataFrame, path: Path, by: Sequence[str] = ("model",), title: str | None = None) -> Path:
    """Reliability diagram from `reliability_table`: nominal level against observed frequency, one line per
    group of `by` (per model), with the diagonal; written atomically as PNG to `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for key, g in table.sort([*by, "level"]).group_by(list(by), maintain_order=True):
        label = " ".join(str(k) for k in key)
        ax.plot(g["level"].to_numpy(), g["observed"].to_numpy(), marker="o", label=label)
    ax.set(xlabel="nominal quantile level", ylabel="observed frequency at or below", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title or "Reliability of the quantile forecasts")
    ax.legend(loc="upper left", fontsize="small")
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
    return Path(path)


def band_by_volatility(predictions: pl.DataFrame, coverage: float, bins: int = 10) -> pl.DataFrame:
    """Coverage and width of the `y_lower .. y_upper` band (nominal `coverage`) within deciles of the origins'
    volatility forecast `sigma`, per model and horizon (`decile_coverage`)."""
    lower, upper = quantile_column((1 - coverage) / 2), quantile_column((1 + coverage) / 2)
    frame = predictions.with_columns(pl.col("y_lower").alias(lower), pl.col("y_upper").alias(upper))
    return decile_coverage(frame, coverage, "sigma", BY, bins)


def conditional_coverage_summary(deciles: pl.DataFrame) -> pl.DataFrame:
    """Per model and horizon: the coverage of the calmest and the wildest decile and the range over all."""
    return (
        deciles.sort("decile")
        .group_by(list(BY), maintain_order=True)
        .agg(
            pl.col("coverage").first().alias("calmest"),
            pl.col("coverage").last().alias("wildest"),
            pl.col("coverage").min().alias("lowest"),
            pl.col("coverage").max().alias("highest"),
            pl.col("n").sum().alias("n"),
        )
        .sort(list(BY))
    )


NORMAL_BAND = "normal band"  # the random walk +- z x volatility: the baseline of the quantile scores


def quantile_scores(predictions: pl.DataFrame, levels: Sequence[float]) -> pl.DataFrame:
    """Per model and horizon: mean pinball loss over `levels`, the CRPS from them (`crps_table`), and both as a
    ratio to the baseline band (a zero forecast with normal quantiles of the volatility forecast `sigma`) on the
    same rows.
    `*by, pinball, crps, pinball_ratio, crps_ratio, n`; the band is a row of its own (`NORMAL_BAND`)."""
    from forecasting.volatility import normal_band  # (volatility imports this module)

    columns = [quantile_column(q) for q in levels]
    rows = predictions.drop_nulls(["y_true", "sigma", *columns])
    band = normal_band(rows.filter(pl.col("model") == rows["model"][0]).drop(columns), levels)
    frame = pl.concat([rows, band.with_columns(pl.lit(NORMAL_BAND).alias("model")).select(rows.columns)])
    pinball_rows = pinball_table(frame, levels).group_by(list(BY)).agg(pl.col("pinball").mean())
    table = crps_table(frame, levels).join(pinball_rows, on=list(BY))
    base = table.filter(pl.col("model") == NORMAL_BAND).select(
        "horizon", pl.col("pinball", "crps").name.suffix("_band")
    )
    return (
        table.join(base, on="horizon")
        .with_columns(
            (pl.col("pinball") / pl.col("pinball_band")).alias("pinball_ratio"),
            (pl.col("crps") / pl.col("crps_band")).alias("crps_ratio"),
        )
        .select(*BY, "pinball", "crps", "pinball_ratio", "crps_ratio", "n")
        .sort(list(BY))
    )
