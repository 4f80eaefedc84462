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

The weights are fit on the validation span's held samples (`Splits.held`, `publish.combination_holdout`
of its latest dates) when the split has them: the network early-stopped on the rest, so the labels that
weigh it are not the ones it was chosen on. Fit on the span it early-stopped on, the weights leaned on the
network: on the development universe's validation span the combination was above the random walk at some
horizon in 3 of 8 fits (4 seeds, 2 feature sets; at every horizon for the published seed), against 1 of 8
with held-out weights (README, "Forecast combination").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from features.windows import Panel, Splits
from forecasting.baselines import Forecaster, HistoricalMean, PointForecaster
from forecasting.names import TRAINED_MODEL, Model

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
    historical mean and the random walk, by weights fit on the fold's validation span, or by given `weights`
    (a kept champion's, chosen on its own evaluation fit's validation span: then only the mean is fit)."""

    def __init__(self, name: str, inner: Forecaster, weights: Weights | None = None):
        self.name, self.inner, self.fixed = name, inner, weights is not None
        self.weights: Weights | None = None if weights is None else np.asarray(weights, dtype=np.float64)

    def fit(self, panel: Panel, splits: Splits) -> None:
        if not self.fixed:
            self.weights = self._fit_weights(panel, splits)
        self.mean = HistoricalMean()
        self.mean.fit(panel, splits)

    def _fit_weights(self, panel: Panel, splits: Splits) -> Weights:
        judged = splits.held if len(splits.held) else splits.val  # (a split without held samples: the val span)
        if len(judged) == 0:
            raise ValueError(f"{self.name}: the combination weights need a validation span")
        train_only = HistoricalMean()
        none = splits.train[:0]  # the training span's labels alone: none of them reaches a judged one
        train_only.fit(panel, dataclasses.replace(splits, val=none, held=none, purged=none))
        return combination_weights(
            self.inner.predict(panel, judged), train_only.predict(panel, judged), panel.Y[judged]
        )

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return combine(self.weights, self.inner.predict(panel, ends), self.mean.predict(panel, ends)).astype(np.float32)


def combine(weights, network: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """a * network + b * mean per horizon, in float64: what the evaluation scores and the nightly publishes
    (both call this, so the two cannot drift apart). `weights` (K, 2); `network`, `mean` (N, K)."""
    w = np.asarray(weights, dtype=np.float64)
    return w[:, 0] * np.asarray(network, dtype=np.float64) + w[:, 1] * np.asarray(mean, dtype=np.float64)


_NO_WEIGHT = 1e-9  # a weight the simplex fit left at its bound, up to rounding


@dataclass(frozen=True)
class Publishing:
    """What the nightly publishes from the network it trains (`TRAINED_MODEL`): the network's own forecast
    (`weights` None), or its combination with the historical mean by per-horizon weights (a, b), in the
    panel's horizon order, that the evaluation fit's validation span chose.

    The one source of the name its forecasts carry in the evaluation, the guardrail, the champion contest and
    the published files; the weights travel with the champion record (`registry.Champion.combination`), so a
    kept champion and a replayed night combine with exactly the weights it was vouched for with.
    """

    weights: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def of(cls, weights) -> Publishing:
        """From an array or a stored record ((K, 2) or None)."""
        if weights is None:
            return cls(None)
        return cls(tuple((float(a), float(b)) for a, b in np.asarray(weights, dtype=np.float64)))

    @staticmethod
    def evaluated(form: str) -> list[Model]:
        """The models an evaluation of a new recipe scores for `publish.forecast = form`: the network, and its
        combination (fit on the evaluation fit's validation span) when that is what publishes."""
        return [TRAINED_MODEL, Model.COMBINED] if form == "combined" else [TRAINED_MODEL]

    @classmethod
    def from_evaluation(cls, forecasters: list[Forecaster]) -> Publishing:
        """What an evaluation backtest vouched for: the combination with its fitted weights, if it scored one."""
        combined = next((f for f in forecasters if isinstance(f, Combination) and f.name == Model.COMBINED), None)
        return cls.of(None if combined is None else combined.weights)

    @property
    def name(self) -> Model:
        return TRAINED_MODEL if self.weights is None else Model.COMBINED

    @property
    def baselines(self) -> tuple[Model, ...]:
        """The baselines whose forecasts `forecast` needs (as `mean`)."""
        return () if self.weights is None else (Model.HIST_MEAN,)

    def forecasters(self, network: Forecaster) -> list[Forecaster]:
        """The evaluation's forecasters for an already trained `network`: it, and its combination by these
        weights (the mean fit on the evaluation fold, as the `hist_mean` baseline's is)."""
        if self.weights is None:
            return [network]
        return [network, Combination(Model.COMBINED, network, np.array(self.weights))]

    def forecast(self, network: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
        """The published log returns (N, K) from the network's forecasts and the historical mean's (both fit
        on the same split); float64, a * network + b * mean per horizon."""
        if self.weights is None:
            return np.asarray(network, dtype=np.float64)
        return combine(self.weights, network, mean)

    def labels(self, horizons_sources: list[str]) -> list[str]:
        """What each horizon's forecast is, for the files' `source_model`: a horizon where the combination
        gives the network no weight published baselines alone, and is labelled so (a new user's review found
        forecasts equal to the last price labelled as the network's combination): `random_walk` when the mean
        has none either, else `hist_mean` (shrunk towards the random walk's zero when its weight is below 1;
        an audit found that case labelled as the network's combination)."""
        if self.weights is None:
            return [str(s) for s in horizons_sources]
        out = []
        for source, (a, b) in zip(horizons_sources, self.weights, strict=True):
            if source == self.name and abs(a) < _NO_WEIGHT:
                source = Model.RANDOM_WALK if abs(b) < _NO_WEIGHT else Model.HIST_MEAN
            out.append(str(source))
        return out

    def record(self) -> list[list[float]] | None:
        """The weights as the champion record stores them (JSON: Python floats round-trip exactly)."""
        return None if self.weights is None else [list(w) for w in self.weights]

    def by_horizon(self, horizons: list[int]) -> dict[str, dict[str, float]] | None:
        """Per horizon, the weight of the network, the historical mean and the random walk (for run.json)."""
        if self.weights is None:
            return None
        return {
            str(h): {TRAINED_MODEL.value: a, Model.HIST_MEAN.value: b, Model.RANDOM_WALK.value: 1.0 - a - b}
            for h, (a, b) in zip(horizons, self.weights, strict=True)
        }
