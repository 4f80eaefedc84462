"""Baselines that every model is judged against, through the same interface, on the same origins.

A forecaster is fit on a fold's `Splits` (only labels realised before the
origin) and predicts forward log returns (N, K) for sample ends.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sklearn.linear_model import Ridge

from features.windows import Panel, Scaler, Splits, training_rows
from forecasting.names import Model


class Forecaster(Protocol):
    name: str

    def fit(self, panel: Panel, splits: Splits) -> None: ...

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray: ...

    def band(self, panel: Panel, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Its own (lower, upper) forecast band (N, K), or None: then intervals come from past residuals."""
        ...


class PointForecaster:
    """A forecaster with no band of its own."""

    def band(self, panel: Panel, ends: np.ndarray) -> None:
        return None


def random_walk(n_samples: int, n_horizons: int) -> np.ndarray:
    """The random walk: tomorrow's price is today's, i.e. a zero forward log return."""
    return np.zeros((n_samples, n_horizons), dtype=np.float32)


class RandomWalk(PointForecaster):
    name = Model.RANDOM_WALK

    def fit(self, panel: Panel, splits: Splits) -> None:
        pass

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return random_walk(len(ends), len(panel.targets))


class HistoricalMean(PointForecaster):
    """Each ticker's mean forward return per horizon over the fold's realised labels (train and validation)."""

    name = Model.HIST_MEAN

    def fit(self, panel: Panel, splits: Splits) -> None:
        seen = np.concatenate([splits.train, splits.val])
        K, T = len(panel.targets), len(panel.tickers)
        sums = np.zeros((T, K))
        counts = np.zeros(T)
        np.add.at(sums, panel.ticker_id[seen], panel.Y[seen])
        np.add.at(counts, panel.ticker_id[seen], 1)
        pooled = panel.Y[seen].mean(axis=0)
        self.means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], pooled)

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return self.means[panel.ticker_id[ends]].astype(np.float32)


class RidgeBaseline(PointForecaster):
    """Ridge regression of every horizon's return on the day's features (lagged returns included), standardised
    with the training span's scaler; fit on the fold's realised labels (train and validation)."""

    name = Model.RIDGE

    def __init__(self, alpha: float):
        self.alpha = alpha

    def fit(self, panel: Panel, splits: Splits) -> None:
        self.scaler = Scaler.fit(panel.X[training_rows(panel, splits)])
        seen = np.concatenate([splits.train, splits.val])
        self.model = Ridge(alpha=self.alpha).fit(self.scaler.transform(panel.X[seen]), panel.Y[seen])

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return self.model.predict(self.scaler.transform(panel.X[ends])).astype(np.float32)

    def raw_coefficients(self) -> np.ndarray:
        """(K, F) coefficients in the features' own units."""
        return self.model.coef_ / self.scaler.std[None, :]
