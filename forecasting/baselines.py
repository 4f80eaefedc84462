"""Baselines that every model is judged against, through the same interface, on the same origins.

A forecaster is fit on a fold's `Splits` (only labels realised before the
origin) and predicts forward log returns (N, K) for sample ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from features.windows import Panel, Scaler, Splits, training_rows
from forecasting import ridge
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
        seen = splits.seen
        T, ids, y = len(panel.tickers), panel.ticker_id[seen], panel.Y[seen]
        # np.bincount adds each row's value to its ticker's float64 sum in row order, as np.add.at did: the same
        # sums (tested), and this fit takes 0.25-0.29 s instead of 0.96-1.01 s at 500 tickers x 25 years
        sums = np.column_stack([np.bincount(ids, weights=y[:, k], minlength=T) for k in range(y.shape[1])])
        counts = np.bincount(ids, minlength=T).astype(np.float64)
        pooled = y.mean(axis=0)
        self.means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], pooled)

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return self.means[panel.ticker_id[ends]].astype(np.float32)


class RidgeBaseline(PointForecaster):
    """Ridge regression of every horizon's return on the day's features (lagged returns included), standardised
    with the training span's scaler; fit on the fold's realised labels (train and validation).

    The penalty is `alpha` when given; else, per horizon, the one of `alphas` with the lowest MSE on the
    validation span when fit on the training span (without a validation span, as in a refit on everything
    known: the last fifth of the training dates, purged of labels that end inside it). Daily returns carry
    so little signal that the best penalty is often large, shrinking towards the mean return.
    """

    name = Model.RIDGE
    HOLDOUT = 0.2  # share of the training dates the penalty is chosen on when there is no validation span

    def __init__(self, alpha: float | None, alphas: Sequence[float] = ()):
        if alpha is None and not alphas:
            raise ValueError("ridge: give a penalty or penalties to choose from")
        self.alpha, self.alphas = alpha, list(alphas)
        self.chosen: np.ndarray | None = None  # (K,) the penalty of each horizon

    def fit(self, panel: Panel, splits: Splits) -> None:
        self.scaler = Scaler.fit(panel.X, training_rows(panel, splits))
        seen = splits.seen
        K = len(panel.targets)
        self.chosen = np.full(K, self.alpha) if self.alpha is not None else self._choose(panel, splits)
        self.model = ridge.solve(self._moments(panel, seen), self.chosen)

    def _scaled(self, panel: Panel, rows: np.ndarray) -> np.ndarray:
        """The features of `rows`, standardised: a new array (the gathered rows are scaled where they are)."""
        return self.scaler.transform(panel.X[rows], in_place=True)

    def _moments(self, panel: Panel, rows: np.ndarray) -> ridge.Moments:
        """The scaled features' and targets' moments over `rows`, a block of rows at a time."""
        return ridge.moments(rows, lambda block: self._scaled(panel, block), panel.Y)

    def _choose(self, panel: Panel, splits: Splits) -> np.ndarray:
        fit_rows, holdout = splits.train, splits.validation
        if len(holdout) == 0:
            dates = np.unique(panel.dates[splits.train])
            first = dates[int(len(dates) * (1 - self.HOLDOUT))]
            holdout = splits.train[panel.dates[splits.train] >= first]
            fit_rows = splits.train[panel.target_end[splits.train] < first]  # purged: no label ends inside
        X_hold = self._scaled(panel, holdout)
        fit = self._moments(panel, fit_rows)  # once: every penalty is solved from the same moments
        errors = [
            np.nanmean((ridge.solve(fit, a).predict(X_hold) - panel.Y[holdout]) ** 2, axis=0) for a in self.alphas
        ]  # (alphas, K)
        return np.asarray(self.alphas)[np.argmin(np.asarray(errors), axis=0)]

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return self.model.predict(self.scaler.transform(panel.X[ends], in_place=True)).astype(np.float32)

    def raw_coefficients(self) -> np.ndarray:
        """(K, F) coefficients in the features' own units."""
        return self.model.coef_.reshape(-1, len(self.scaler.std)) / self.scaler.std[None, :]
