"""Out-of-sample evaluation: the model and the baselines forecast from identical origins.

`holdout_predictions` scores the test span the model never trained on (nor
early-stopped on). Every prediction is returned in the long contract
`model, ticker, asof_date, horizon, target_date, y_true, y_pred`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.windows import Panel, Splits
from forecasting.baselines import random_walk
from forecasting.train import TrainedModel, predict


def horizons_of(targets: list[str]) -> list[int]:
    return [int(t.removeprefix("y_h")) for t in targets]


def long_predictions(panel: Panel, ends: np.ndarray, y_pred: np.ndarray, model: str) -> pl.DataFrame:
    """One row per (origin, horizon) for predictions `y_pred` (N, K) made at rows `ends`."""
    horizons = np.asarray(horizons_of(panel.targets))
    n, k = len(ends), len(horizons)
    rows = np.repeat(ends, k)
    h = np.tile(horizons, n)
    last_row = panel.offsets[panel.ticker_id[rows] + 1] - 1
    target_row = np.minimum(rows + h, last_row)
    target_date = np.where(rows + h <= last_row, panel.dates[target_row], np.datetime64("NaT"))
    return pl.DataFrame(
        {
            "model": np.full(n * k, model),
            "ticker": np.asarray(panel.tickers)[panel.ticker_id[rows]],
            "asof_date": panel.dates[rows],
            "horizon": h.astype(np.int32),
            "target_date": target_date.astype("datetime64[D]"),
            "y_true": panel.Y[ends].reshape(-1).astype(np.float64),
            "y_pred": np.asarray(y_pred, dtype=np.float64).reshape(-1),
        }
    )


def holdout_predictions(
    trained: TrainedModel, panel: Panel, splits: Splits, model_name: str = "attention_lstm"
) -> pl.DataFrame:
    """Model and random-walk forecasts at every test origin."""
    ends = splits.test
    y_model = predict(trained, panel, ends).mean
    y_rw = random_walk(len(ends), len(panel.targets))
    return pl.concat(
        [
            long_predictions(panel, ends, y_model, model_name),
            long_predictions(panel, ends, y_rw, "random_walk"),
        ]
    )
