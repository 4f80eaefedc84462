"""Conformal prediction intervals and quantiles from past out-of-sample residuals (issue 14, point 3).

Per (model, horizon), pooled over tickers: a residual is usable at origin D only if its target date is <= D (the
outcome was known then), never a future one. The residuals used are those of the last `window` target dates
realised by D, every ticker's: a window counted in dates, not in residuals, so that it spans the same stretch
of the calendar on 5 tickers as on 500 (a window of 250 residuals was 50 days of the sample, 12 of the
development universe, and half of one day at 500 tickers, where it kept whichever tickers sorted last).

`sigma` (the volatility forecast made at each origin, `volatility.panel_sigma`) scales the residuals: they are
divided by their origin's sigma and the band is that quantile times this origin's sigma, so that it widens when
markets are wild instead of being right only on average (conditional coverage).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from forecasting.intervals import quantile_column
from nightcast.frames import groups


@dataclass(frozen=True)
class _Residuals:
    """Absolute residuals of one (model, horizon) in target-date order, and where each target date's begin."""

    target: np.ndarray  # datetime64[D], ascending
    residual: np.ndarray
    dates: np.ndarray  # the distinct target dates, ascending
    first: np.ndarray  # index in `residual` of each distinct date's first residual

    @classmethod
    def of(cls, g: pl.DataFrame, scaled: bool) -> _Residuals:
        """`scaled`: each residual divided by the volatility forecast made at its origin (none: left out)."""
        target = g["target_date"].to_numpy().astype("datetime64[D]")
        residual = np.abs(g["y_true"].to_numpy() - g["y_pred"].to_numpy())
        if scaled:
            with np.errstate(divide="ignore", invalid="ignore"):  # a zero sigma (a stale price): left out below
                residual = residual / g["sigma"].fill_null(np.nan).to_numpy()
        keep = np.isfinite(residual) & ~np.isnat(target)
        target, residual = target[keep], residual[keep]
        order = np.argsort(target, kind="stable")
        target, residual = target[order], residual[order]
        dates, first = np.unique(target, return_index=True)
        return cls(target, residual, dates, first)

    def quantile(self, day, coverage, window: int, min_count: int):
        """The `coverage` quantile (or quantiles, for an array) of the residuals of the last `window` target
        dates <= `day` (known then); NaN while fewer than `min_count` residuals are."""
        day = np.datetime64(day, "D")
        end = int(np.searchsorted(self.target, day, side="right"))
        known = int(np.searchsorted(self.dates, day, side="right"))  # distinct target dates realised by `day`
        start = int(self.first[known - window]) if known > window else 0
        past = self.residual[start:end]
        if past.size < min_count:
            return np.full(np.shape(coverage), np.nan) if np.ndim(coverage) else np.nan
        # the finite-sample conformal quantile: the ceil((n + 1) c)-th smallest of n (the largest where that exceeds
        # n), so that a new residual exchangeable with them falls below it with probability >= c (interpolating
        # gave ~0.79 for 0.8 at n = 50); 1e-9: a product like 50 x 0.8 must not round up past its integer
        n = past.size
        rank = np.clip(np.ceil((n + 1) * np.asarray(coverage, dtype=np.float64) - 1e-9).astype(np.int64), 1, n)
        value = np.partition(past, np.unique(rank - 1))[rank - 1]
        return value if np.ndim(coverage) else float(value)

    def symmetric_offsets(self, day, levels, window: int, min_count: int) -> np.ndarray:
        """Per level, its quantile's offset from the point forecast: below the median minus, above it plus, the
        (|2 level - 1|)-quantile of the past absolute residuals."""
        levels = np.asarray(levels)
        side = np.sign(levels - 0.5)  # -1 below the median, +1 above, 0 at it
        spread = np.abs(2 * levels - 1)  # the central coverage each level bounds
        return self.quantile(day, spread, window, min_count) * side


_READ = ("model", "horizon", "asof_date", "target_date", "y_true", "y_pred", "sigma")  # what the bands read


def _groups(predictions: pl.DataFrame) -> Iterator[tuple[np.ndarray, pl.DataFrame]]:
    """Each (model, horizon)'s rows (only the columns the bands read) and their positions in `predictions`."""
    read = predictions.select(c for c in _READ if c in predictions.columns).with_row_index("_row")
    for _, g in groups(read, ["model", "horizon"]):
        yield g["_row"].to_numpy(), g


def _columns(predictions: pl.DataFrame, values: dict[str, np.ndarray]) -> pl.DataFrame:
    """`predictions` with each of `values` (one per row, NaN for none) as a column of nulls for NaN. Each
    value is its row's own: the frame keeps its order, and its columns are shared, not copied (each
    (model, horizon) group's frame concatenated cost a second copy of the whole frame, ~0.5 GiB at 500
    tickers x 25 years, and the backtest's sort a third)."""
    return predictions.with_columns(pl.Series(name, v).fill_nan(None) for name, v in values.items())


def conformal_intervals(
    predictions: pl.DataFrame, coverage: float, window: int, min_count: int, scaled: bool = False
) -> pl.DataFrame:
    """`y_lower, y_upper`: y_pred +- the `coverage` quantile of the absolute residuals of the last `window`
    target dates realised by each origin (in units of `sigma` when `scaled`). Rows stay in their order."""
    lower, upper = np.full(predictions.height, np.nan), np.full(predictions.height, np.nan)
    for rows, g in _groups(predictions):
        past = _Residuals.of(g, scaled)
        days, of_row = np.unique(g["asof_date"].to_numpy(), return_inverse=True)
        width = np.array([past.quantile(day, coverage, window, min_count) for day in days])[of_row]
        if scaled:
            width = width * g["sigma"].fill_null(np.nan).to_numpy()
        y_pred = g["y_pred"].to_numpy()
        lower[rows], upper[rows] = y_pred - width, y_pred + width
    return _columns(predictions, {"y_lower": lower, "y_upper": upper})


def conformal_quantiles(
    predictions: pl.DataFrame, levels: tuple[float, ...], window: int, min_count: int
) -> pl.DataFrame:
    """Quantile forecasts `q{level}` around y_pred, symmetric: y_pred +- sigma x the (2 level - 1)-quantile of the
    absolute residuals over their origin's sigma of the last `window` target dates realised by each origin, the
    median being y_pred itself; null until `min_count` residuals are known. Symmetric because the signed
    residuals' own quantiles carry the past year's drift into the forecast: on the development universe's
    validation span their pinball loss was 1-8% above the normal band's (h=1-5), the symmetric ones' 0.991-1.014
    of it. Rows stay in their order."""
    out = [np.full(predictions.height, np.nan) for _ in levels]  # one array per column: no strided copies after
    for rows, g in _groups(predictions):
        past = _Residuals.of(g, scaled=True)
        # one offset per distinct origin, gathered per row (a dict looked up per row cost ~3 s at 1.3M rows)
        days, of_row = np.unique(g["asof_date"].to_numpy(), return_inverse=True)
        offsets = np.array([past.symmetric_offsets(day, levels, window, min_count) for day in days])
        sigma = g["sigma"].fill_null(np.nan).to_numpy()
        q = offsets.reshape(len(days), len(levels))[of_row] * sigma[:, None]
        y_pred = g["y_pred"].to_numpy()
        for i, column in enumerate(out):
            column[rows] = y_pred + q[:, i]
    return _columns(predictions, {quantile_column(level): out[i] for i, level in enumerate(levels)})


def conformal_quantile_offsets(
    predictions: pl.DataFrame, asof, levels: tuple[float, ...], window: int, min_count: int
) -> dict[tuple[str, int], np.ndarray]:
    """`conformal_quantiles` for forecasts made at `asof`: per (model, horizon), each level's offset from the
    point forecast in units of the forecast's volatility, from the residuals realised by then (NaN while
    fewer than `min_count`)."""
    out = {}
    for (model, horizon), g in groups(predictions, ["model", "horizon"]):
        past = _Residuals.of(g, scaled=True)
        out[(model, int(horizon))] = past.symmetric_offsets(asof, levels, window, min_count)
    return out


def conformal_widths(
    predictions: pl.DataFrame, asof, coverage: float, window: int, min_count: int, scaled: bool = False
) -> dict[tuple[str, int], float]:
    """Half-width of the conformal interval per (model, horizon) for forecasts made at `asof`, from the
    residuals realised by then (NaN when fewer than `min_count`); `scaled`: in units of the forecast's sigma."""
    out = {}
    for (model, horizon), g in groups(predictions, ["model", "horizon"]):
        out[(model, int(horizon))] = _Residuals.of(g, scaled).quantile(asof, coverage, window, min_count)
    return out
