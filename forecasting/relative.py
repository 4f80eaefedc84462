"""Market-relative targets: a model that learns each ticker's return in excess of the universe's, and adds a
forecast of the universe's return back.

Most of a stock's daily move is the market's, which no model here forecasts; a network fit to raw returns
spends its capacity on that common noise. Fit instead to the cross-sectionally demeaned return (the ticker's
return minus the mean return of every ticker with a label at the same origin), it learns only what sets a
ticker apart from the others that day, which is where the field finds what skill there is (ranking across
stocks). The forecast adds back the universe's historical mean return per horizon, over the fold's realised
labels only: a market forecast as humble as the historical-mean baseline.

No look-ahead: a training label is demeaned by the training labels of the same date only, and a validation
label by the validation labels (on one calendar these end on the same day; a halted ticker's, or one on
another exchange's calendar, could end later). With a single ticker every demeaned target is 0 and the
forecast is the historical mean.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from features.windows import Panel, Splits
from forecasting.baselines import PointForecaster


def cross_sectional_mean(panel: Panel, rows: np.ndarray | None = None) -> np.ndarray:
    """(len(rows), K) float64: per row of `rows` (default every row), the mean label over the rows of `rows` at
    the same date with a known label (NaN where none is known)."""
    rows = np.arange(len(panel.dates)) if rows is None else np.asarray(rows)
    _, day = np.unique(panel.dates[rows], return_inverse=True)
    labels = panel.Y[rows].astype(np.float64)
    known = np.isfinite(labels)
    mean = np.empty(labels.shape)
    for k in range(labels.shape[1]):
        total = np.bincount(day, weights=np.where(known[:, k], labels[:, k], 0.0))
        count = np.bincount(day, weights=known[:, k].astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[:, k] = (total / count)[day]
    return mean


def demeaned(panel: Panel, spans: tuple[np.ndarray, ...] | None = None) -> Panel:
    """The panel with each label minus the cross-sectional mean at its date, taken within each of `spans` (the
    rows a fit trains and early-stops on: a training label is never demeaned by a label realised later, which a
    ticker on another calendar or halted could carry on the same date); labels outside them become NaN.
    Default: one span of every row."""
    relative = np.full(panel.Y.shape, np.nan, dtype=np.float32)
    for rows in spans if spans is not None else (np.arange(len(panel.dates)),):
        relative[rows] = (panel.Y[rows] - cross_sectional_mean(panel, rows)).astype(np.float32)
    return dataclasses.replace(panel, Y=relative)


class RelativeForecaster(PointForecaster):
    """`inner` (a neural forecaster) fit on the demeaned panel; forecasts are its relative return plus the
    universe's historical mean return per horizon over the fold's realised labels (train and validation)."""

    def __init__(self, name: str, inner):
        self.name, self.inner = name, inner
        self.market: np.ndarray | None = None  # (K,) the universe's mean return per horizon

    def fit(self, panel: Panel, splits: Splits) -> None:
        self.inner.fit(demeaned(panel, (splits.train, splits.val)), splits)
        seen = splits.seen
        labels = panel.Y[seen].astype(np.float64)
        counts = np.isfinite(labels).sum(axis=0)
        self.market = np.where(counts > 0, np.nansum(labels, axis=0) / np.maximum(counts, 1), 0.0)

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        relative = self.inner.predict(panel, ends)  # the network reads features only: the raw panel serves
        return (relative + self.market[None, :]).astype(np.float32)
