"""Market-relative targets: a model that learns each ticker's return in excess of the universe's, and adds a
forecast of the universe's return back.

Most of a stock's daily move is the market's, which no model here forecasts; a network fit to raw returns
spends its capacity on that common noise. Fit instead to the cross-sectionally demeaned return (the ticker's
return minus the mean return of every ticker with a label at the same origin), it learns only what sets a
ticker apart from the others that day, which is where the field finds what skill there is (ranking across
stocks). The forecast adds back the universe's historical mean return per horizon, over the fold's realised
labels only: a market forecast as humble as the historical-mean baseline.

No look-ahead: the mean at an origin is of labels ending on that origin's target dates, the same span the
ticker's own label covers, and only training (and validation) rows are fit on, as for the raw target. With a
single ticker every demeaned target is 0 and the forecast is the historical mean.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from features.windows import Panel, Splits
from forecasting.baselines import PointForecaster


def cross_sectional_mean(panel: Panel) -> np.ndarray:
    """(R, K) float64: per row, the mean label over every ticker with a known label at the row's date (NaN where
    none is known)."""
    _, day = np.unique(panel.dates, return_inverse=True)
    known = np.isfinite(panel.Y)
    mean = np.full(panel.Y.shape, np.nan)
    for k in range(panel.Y.shape[1]):
        total = np.bincount(day, weights=np.where(known[:, k], panel.Y[:, k], 0.0))
        count = np.bincount(day, weights=known[:, k].astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[:, k] = (total / count)[day]
    return mean


def demeaned(panel: Panel) -> Panel:
    """The panel with each label minus the cross-sectional mean at its date (unknown labels stay NaN)."""
    return dataclasses.replace(panel, Y=(panel.Y - cross_sectional_mean(panel)).astype(np.float32))


class RelativeForecaster(PointForecaster):
    """`inner` (a neural forecaster) fit on the demeaned panel; forecasts are its relative return plus the
    universe's historical mean return per horizon over the fold's realised labels (train and validation)."""

    def __init__(self, name: str, inner):
        self.name, self.inner = name, inner
        self.market: np.ndarray | None = None  # (K,) the universe's mean return per horizon
        self._panel: tuple[Panel, Panel] | None = None  # (panel, its demeaned copy): one copy per panel

    def _relative(self, panel: Panel) -> Panel:
        if self._panel is None or self._panel[0] is not panel:
            self._panel = (panel, demeaned(panel))
        return self._panel[1]

    def fit(self, panel: Panel, splits: Splits) -> None:
        self.inner.fit(self._relative(panel), splits)
        seen = np.concatenate([splits.train, splits.val])
        labels = panel.Y[seen].astype(np.float64)
        counts = np.isfinite(labels).sum(axis=0)
        self.market = np.where(counts > 0, np.nansum(labels, axis=0) / np.maximum(counts, 1), 0.0)

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        relative = self.inner.predict(panel, ends)  # the network reads features only: the raw panel serves
        return (relative + self.market[None, :]).astype(np.float32)
