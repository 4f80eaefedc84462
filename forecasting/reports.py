"""Inspection: what the model attended to, as tables, a heatmap PNG and a few plain sentences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from features.io import atomic_write
from features.windows import Panel
from forecasting.train import TrainedModel, predict


@dataclass(frozen=True)
class AttentionReport:
    per_lag: pl.DataFrame  # ticker, lag (0 = the as-of day), weight: mean temporal attention
    per_feature: pl.DataFrame | None  # ticker, feature, weight: mean input attention
    summary: str


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
        pooled = per_lag.filter(pl.col("ticker") == "ALL").sort("weight", descending=True)
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
        pooled = per_feature.filter(pl.col("ticker") == "ALL").sort("weight", descending=True)
        best = ", ".join(f"{f} ({w:.1%})" for f, w in pooled.select("feature", "weight").head(top).iter_rows())
        lines.append(f"Input attention: most weight on {best} (uniform {1 / Fn:.1%}).")
    return AttentionReport(per_lag, per_feature, " ".join(lines))


def _with_pooled(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    by_ticker = frame.group_by("ticker", key).agg(pl.col("weight").mean())
    pooled = frame.group_by(key).agg(pl.col("weight").mean()).with_columns(pl.lit("ALL").alias("ticker"))
    return pl.concat([by_ticker, pooled.select(by_ticker.columns)]).sort("ticker", key)


def plot_attention(report: AttentionReport, path: Path) -> Path:
    """Heatmap(s): tickers x lags (and tickers x input variables), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lags = report.per_lag["lag"].n_unique() if report.per_lag is not None else 1
    panels = [(report.per_lag, "lag", f"Mean temporal attention by lag (0 = as-of day; uniform = {1 / lags:.4f})")]
    if report.per_feature is not None:
        panels.append((report.per_feature, "feature", "Mean input attention by variable"))
    panels = [p for p in panels if p[0] is not None]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, 2.2 + 0.45 * len(panels) * _rows(panels[0][0])), squeeze=False
    )
    for ax, (frame, key, title) in zip(axes[:, 0], panels, strict=True):
        wide = frame.pivot(on=key, index="ticker", values="weight", sort_columns=True)
        tickers = wide["ticker"].to_list()
        columns = [c for c in wide.columns if c != "ticker"]
        if key == "lag":
            columns = sorted(columns, key=int)
        image = ax.imshow(wide.select(columns).to_numpy(), aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(tickers)), tickers)
        step = max(1, len(columns) // 20)
        ax.set_xticks(
            range(0, len(columns), step),
            columns[::step],
            rotation=0 if key == "lag" else 60,
            ha="right" if key != "lag" else "center",
        )
        ax.set_xlabel(key)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label="weight")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def _rows(frame: pl.DataFrame | None) -> int:
    return 0 if frame is None else frame["ticker"].n_unique()
