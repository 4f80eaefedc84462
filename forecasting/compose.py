"""What publishes at each horizon: the model's forecast (alone or combined), or a baseline's where the guardrail
says so, and the interval and quantiles around it.

Rules only, on arrays; the nightly flow calls them in order.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from features.windows import Panel, Splits
from forecasting.backtest import make_forecasters
from forecasting.conformal import conformal_quantile_offsets, conformal_widths
from forecasting.intervals import QUANTILE_LEVELS
from forecasting.names import TRAINED_MODEL
from forecasting.settings import BacktestSettings, ModelSettings, TrainSettings


def baseline_predictions(
    panel: Panel,
    rows: np.ndarray,
    names: list[str],
    split: Splits,
    bt: BacktestSettings,
    model: ModelSettings,
    train: TrainSettings,
    lookback: int,
) -> dict[str, np.ndarray]:
    """Forecasts (N, K) of the baselines `names` from rows `rows`, each refit on `split` (every realised label)."""
    out = {}
    for baseline in make_forecasters(bt.model_copy(update={"models": names}), model, train, lookback):
        baseline.fit(panel, split)
        out[baseline.name] = baseline.predict(panel, rows)
    return out


def by_source(predictions: dict[str, np.ndarray], sources: list[str]) -> np.ndarray:
    """(N, K) log returns: column k from the forecaster that publishes horizon k."""
    return np.column_stack([predictions[s][:, k] for k, s in enumerate(sources)]).astype(np.float64)


def bounds(
    evaluation: pl.DataFrame,
    y: np.ndarray,
    sources: list[str],
    horizons: list[int],
    quantiles: np.ndarray | None,
    asof: date,
    bt: BacktestSettings,
    sigma: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Interval bounds (log returns) per row and horizon around the published `y`: the model's quantile head
    under `backtest.interval = "quantile"`, otherwise conformal: y +- the `coverage` quantile of the source's
    out-of-sample absolute residuals in the evaluation (`evaluation` predictions, keyed by the source's name: a
    published combination's are the combination's own) realised by `asof`; under
    `backtest.interval_scale = "ewma"` in units of each forecast's volatility `sigma` (N, K)."""
    if bt.interval == "none":
        return None
    scaled = bt.interval_scale == "ewma" and "sigma" in evaluation.columns  # (an evaluation made before 0.4: none)
    widths = conformal_widths(evaluation, asof, bt.coverage, bt.conformal_window, bt.conformal_min, scaled)
    w = np.array([widths.get((s, h), np.nan) for s, h in zip(sources, horizons, strict=True)])
    if scaled:
        w = w[None, :] * sigma  # (N, K)
    lower, upper = y - w, y + w
    if bt.interval == "quantile" and quantiles is not None:
        # the network's head bounds the network's own forecast: not a combination's, nor a baseline's
        from_model = np.array([s == TRAINED_MODEL for s in sources])
        lower[:, from_model], upper[:, from_model] = quantiles[:, from_model, 0], quantiles[:, from_model, -1]
    return lower, upper


def quantiles(
    evaluation: pl.DataFrame,
    y: np.ndarray,
    sources: list[str],
    horizons: list[int],
    asof: date,
    bt: BacktestSettings,
    sigma: np.ndarray,
) -> np.ndarray | None:
    """(N, K, L) quantile forecasts (log returns) at `QUANTILE_LEVELS` around the published `y`, made as the
    evaluation scored them (`backtest.conformal_quantiles`): y + the source's offset per level, in units of each
    forecast's volatility `sigma` (N, K); NaN while too few residuals are known. None unless the intervals are
    conformal in volatility units, the only way the backtest makes (and scores) quantiles."""
    if bt.interval != "conformal" or bt.interval_scale != "ewma" or "sigma" not in evaluation.columns:
        return None
    offsets = conformal_quantile_offsets(evaluation, asof, QUANTILE_LEVELS, bt.conformal_window, bt.conformal_min)
    unknown = np.full(len(QUANTILE_LEVELS), np.nan)
    by_horizon = np.stack([offsets.get((s, h), unknown) for s, h in zip(sources, horizons, strict=True)])  # (K, L)
    return y[:, :, None] + by_horizon[None, :, :] * sigma[:, :, None]
