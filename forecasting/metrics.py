"""Forecast metrics as pure functions over the long prediction frame.

The frame has `model, ticker, asof_date, horizon, target_date, y_true, y_pred`,
with y_* forward log returns. Skill is judged on returns (DESIGN.md step 10).
"""

from __future__ import annotations

import numpy as np
import polars as pl


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    return float(np.mean((y_true - y_pred) ** 2))


def hit_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of forecasts with the right sign (a zero forecast counts as 'up')."""
    return float(np.mean((np.asarray(y_true) > 0) == (np.asarray(y_pred) >= 0)))


def horizon_table(predictions: pl.DataFrame, model: str, baseline: str = "random_walk") -> pl.DataFrame:
    """Per horizon: samples, model MSE, baseline MSE, their ratio, model hit rate and the 'always up' rate."""
    err = (pl.col("y_true") - pl.col("y_pred")) ** 2
    pooled = (
        predictions.filter(pl.col("model").is_in([model, baseline]))
        .group_by("horizon", "model")
        .agg(
            err.mean().alias("mse"),
            ((pl.col("y_true") > 0) == (pl.col("y_pred") >= 0)).mean().alias("hit_rate"),
            (pl.col("y_true") > 0).mean().alias("up_rate"),
            pl.len().alias("n"),
        )
    )
    m = pooled.filter(pl.col("model") == model).drop("model")
    b = pooled.filter(pl.col("model") == baseline).select("horizon", pl.col("mse").alias("baseline_mse"))
    return (
        m.join(b, on="horizon")
        .select(
            "horizon",
            "n",
            pl.col("mse").alias("model_mse"),
            "baseline_mse",
            (pl.col("mse") / pl.col("baseline_mse")).alias("mse_ratio"),
            "hit_rate",
            "up_rate",
        )
        .with_columns(pl.lit(model).alias("model"), pl.lit(baseline).alias("baseline"))
        .sort("horizon")
    )
