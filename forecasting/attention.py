"""What the model attended to: mean temporal (and input) attention per ticker and pooled, and a few sentences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.windows import Panel
from forecasting.names import Scope
from forecasting.train import TrainedModel, predict


@dataclass(frozen=True)
class AttentionReport:
    per_lag: pl.DataFrame  # ticker, lag (0 = the as-of day), weight: mean temporal attention
    per_feature: pl.DataFrame | None  # ticker, feature, weight: mean input attention
    summary: str


MAX_WINDOWS = 20_000  # enough for a mean weight per lag; the evaluation span of 500 tickers holds 125k


def spread_sessions(ends: np.ndarray, dates: np.ndarray, limit: int = MAX_WINDOWS) -> np.ndarray:
    """`ends` thinned to about `limit` samples by keeping every k-th session (the latest always), each with all
    its tickers: scoring the published model's attention over the whole evaluation span of a large universe was
    most of the forecast stage (a forward pass over every window of a year). Fewer than `limit`: all of them."""
    if len(ends) <= limit:
        return ends
    sessions = np.unique(dates[ends])
    step = int(np.ceil(len(ends) / limit))
    kept = sessions[::-1][::step]
    return ends[np.isin(dates[ends], kept)]


def attention_report(trained: TrainedModel, panel: Panel, ends: np.ndarray, top: int = 3) -> AttentionReport | None:
    """Mean attention per lag (and per input variable) over the samples ending at `ends`, per ticker and pooled."""
    out = predict(trained, panel, ends)
    if out.attention is None and out.feature_attention is None:
        return None
    names = np.asarray(panel.tickers)[panel.ticker_id[ends]]
    per_lag = per_feature = None
    lines = []
    if out.attention is not None:
        L = out.attention.shape[1]
        lags = np.arange(L - 1, -1, -1)  # position j of the window is lag L-1-j
        frame = pl.DataFrame(
            {
                "ticker": np.repeat(names, L),
                "lag": np.tile(lags, len(ends)),
                "weight": out.attention.reshape(-1).astype(np.float64),
            }
        )
        per_lag = _with_pooled(frame, "lag")
        pooled = per_lag.filter(pl.col("scope") == Scope.POOLED).sort("weight", descending=True)
        best = ", ".join(f"lag {lag} ({w:.1%})" for lag, w in pooled.select("lag", "weight").head(top).iter_rows())
        recent = pooled.filter(pl.col("lag") < 5)["weight"].sum()
        spread = pooled["weight"].max() / max(pooled["weight"].min(), 1e-12)
        if spread < 1.2:
            lines.append(
                f"Temporal attention is close to uniform (max/min weight {spread:.2f}): the model did not "
                "learn to prefer any lag."
            )
        lines.append(
            f"Temporal attention (mean over {len(ends)} forecasts): most weight on {best}; "
            f"the last 5 days get {recent:.1%} (uniform would give {min(5, L) / L:.1%} to each 5 days, "
            f"{1 / L:.1%} per lag)."
        )
    if out.feature_attention is not None:
        Fn = out.feature_attention.shape[1]
        frame = pl.DataFrame(
            {
                "ticker": np.repeat(names, Fn),
                "feature": np.tile(np.asarray(panel.features), len(ends)),
                "weight": out.feature_attention.reshape(-1).astype(np.float64),
            }
        )
        per_feature = _with_pooled(frame, "feature")
        pooled = per_feature.filter(pl.col("scope") == Scope.POOLED).sort("weight", descending=True)
        best = ", ".join(f"{f} ({w:.1%})" for f, w in pooled.select("feature", "weight").head(top).iter_rows())
        lines.append(f"Input attention: most weight on {best} (uniform {1 / Fn:.1%}).")
    return AttentionReport(per_lag, per_feature, " ".join(lines))


def _with_pooled(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Mean weight per (ticker, key) with scope "ticker", and across tickers with scope "pooled" (ticker null)."""
    by_ticker = frame.group_by("ticker", key).agg(pl.col("weight").mean()).with_columns(scope=pl.lit(Scope.TICKER))
    pooled = (
        frame.group_by(key)
        .agg(pl.col("weight").mean())
        .with_columns(scope=pl.lit(Scope.POOLED), ticker=pl.lit(None, dtype=pl.String))
    )
    return (
        pl.concat([by_ticker, pooled.select(by_ticker.columns)])
        .sort(pl.col("scope") != Scope.POOLED, "ticker", key)
        .select("scope", "ticker", key, "weight")
    )
