"""Forecast combination: the model shrunk towards the baselines, by weights fit on the validation span only.

Daily returns are nearly unpredictable, so a network's forecast is mostly noise around a tiny signal, and
adding noise to the random walk's zero makes the squared error worse. The combination

    combined = a * model + b * hist_mean (+ (1 - a - b) * random_walk, which is zero)

with a, b >= 0 and a + b <= 1, per horizon, weighs the model by how much it actually helped on the
fold's validation span: a model with no signal gets a ~ 0 and the combination falls back to the baselines
instead of adding noise; one with signal keeps it. The weights minimise the validation MSE (least squares
on two columns under the constraints); the test span never enters. The historical mean in the weight fit
is the one of the training span alone (its validation labels are what the weights are judged on); the
combination's forecasts use the one of train + validation, as the `hist_mean` baseline does.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from features.windows import Panel, Splits
from forecasting.baselines import Forecaster, HistoricalMean, PointForecaster

Weights = np.ndarray  # (K, 2): per horizon, the weight of the model and of the historical mean


def combination_weights(model: np.ndarray, mean: np.ndarray, realised: np.ndarray) -> Weights:
    """Per horizon (column), the weights (a, b) >= 0 with a + b <= 1 minimising the squared error of
    a * model + b * mean against `realised`; all (N, K); rows with a missing label are left out."""
    weights = np.zeros((model.shape[1], 2))
    for k in range(model.shape[1]):
        known = np.isfinite(realised[:, k])
        if known.sum() >= 2:
            A = np.column_stack([model[known, k], mean[known, k]]).astype(np.float64)
            weights[k] = _simplex_least_squares(A, realised[known, k].astype(np.float64))
    return weights


def _simplex_least_squares(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin |A w - y|^2 over w >= 0, sum(w) <= 1, for two columns: the best of the region's candidates
    (the convex problem's minimum is the unconstrained one if feasible, else on an edge or a vertex)."""
    candidates = [np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    free = np.linalg.lstsq(A, y, rcond=None)[0]
    candidates.append(free)
    for j in range(2):  # one weight alone (the other 0), clipped to [0, 1]
        norm = A[:, j] @ A[:, j]
        w = np.zeros(2)
        w[j] = np.clip((A[:, j] @ y) / norm, 0.0, 1.0) if norm > 0 else 0.0
        candidates.append(w)
    d = A[:, 0] - A[:, 1]  # on the edge a + b = 1: y ~ b0 + a * (A0 - A1) with b0 = A1
    if d @ d > 0:
        a = np.clip((d @ (y - A[:, 1])) / (d @ d), 0.0, 1.0)
        candidates.append(np.array([a, 1.0 - a]))
    feasible = [w for w in candidates if w.min() >= -1e-12 and w.sum() <= 1 + 1e-12]
    return min(feasible, key=lambda w: float(np.sum((A @ w - y) ** 2)))


class Combination(PointForecaster):
    """`inner` (already fit on the fold when this is: list it after its inner model) combined with the
    historical mean and the random walk, by weights fit on the fold's validation span."""

    def __init__(self, name: str, inner: Forecaster):
        self.name, self.inner = name, inner
        self.weights: Weights | None = None

    def fit(self, panel: Panel, splits: Splits) -> None:
        if len(splits.val) == 0:
            raise ValueError(f"{self.name}: the combination weights need a validation span")
        train_only = HistoricalMean()
        train_only.fit(panel, dataclasses.replace(splits, val=splits.train[:0]))
        val = splits.val
        self.weights = combination_weights(self.inner.predict(panel, val), train_only.predict(panel, val), panel.Y[val])
        self.mean = HistoricalMean()
        self.mean.fit(panel, splits)

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        a, b = self.weights[:, 0], self.weights[:, 1]
        combined = a * self.inner.predict(panel, ends) + b * self.mean.predict(panel, ends)
        return combined.astype(np.float32)
