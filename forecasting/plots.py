"""The PNG plots of the reports: attention heatmaps, cumulative error against the random walk, predicted
against realised returns, hit rates. Each is written atomically; matplotlib is imported only when one is drawn.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from forecasting import live
from forecasting.attention import AttentionReport
from forecasting.metrics import per_ticker
from forecasting.names import BENCHMARK, DISPLAY_ORDER, Scope
from nightcast.io import atomic_write


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PANELS_PER_ROW = 3  # horizons side by side; more wrap onto further rows (five in one row made a 3000 px strip)
# the attention heatmap's height grows with its rows (tickers) up to this many; past it the rows share the height
# and every k-th ticker is labelled: at 500 tickers a row each made a 1,210 x 25,000 px PNG that took 5 s and
# ~1 GiB to draw, the nightly's peak memory at that size
HEATMAP_ROWS = 80


def horizon_panels(plt, n: int, width: float, height: float, per_row: int = PANELS_PER_ROW):
    """A figure with one axes per horizon, at most `per_row` a row, each `width` x `height` inches; returns the
    figure and the `n` axes in order (spare cells of the last row hidden)."""
    cols = max(1, min(n, per_row))
    rows = -(-max(n, 1) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    cells = list(grid.flat)
    for spare in cells[n:]:
        spare.set_visible(False)
    return fig, cells[:n]


def save_png(fig, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    pyplot().close(fig)
    return path


def plot_attention(report: AttentionReport, path: Path) -> Path:
    """Heatmap(s): tickers x lags (and tickers x input variables), written atomically as PNG."""
    plt = pyplot()
    lags = report.per_lag["lag"].n_unique() if report.per_lag is not None else 1
    panels = [(report.per_lag, "lag", f"Mean temporal attention by lag (0 = as-of day; uniform = {1 / lags:.4f})")]
    if report.per_feature is not None:
        panels.append((report.per_feature, "feature", "Mean input attention by variable"))
    panels = [p for p in panels if p[0] is not None]
    rows = min(_rows(panels[0][0]), HEATMAP_ROWS)
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.2 + 0.45 * len(panels) * rows), squeeze=False)
    for ax, (frame, key, title) in zip(axes[:, 0], panels, strict=True):
        labelled = frame.with_columns(row=pl.coalesce("ticker", pl.lit("all tickers"))).sort(
            pl.col("scope") == Scope.POOLED, "ticker"
        )
        wide = labelled.pivot(on=key, index="row", values="weight", sort_columns=True)
        tickers = wide["row"].to_list()
        columns = [c for c in wide.columns if c != "row"]
        if key == "lag":
            columns = sorted(columns, key=int)
        image = ax.imshow(wide.select(columns).to_numpy(), aspect="auto", cmap="viridis")
        every = -(-len(tickers) // HEATMAP_ROWS)  # 1 up to HEATMAP_ROWS rows: every ticker labelled
        shown = sorted({*range(0, len(tickers), every), len(tickers) - 1})  # the pooled row (last) always
        ax.set_yticks(shown, [tickers[i] for i in shown])
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
    return save_png(fig, path)


def _rows(frame: pl.DataFrame | None) -> int:
    return 0 if frame is None else frame["ticker"].n_unique()


def plot_cumulative_error(predictions: pl.DataFrame, path: Path, baseline: str = BENCHMARK) -> Path:
    """Cumulative (squared error - baseline squared error) over origins, pooled over tickers; below 0 = better."""
    plt = pyplot()
    horizons = sorted(predictions["horizon"].unique().to_list())
    base = predictions.filter(pl.col("model") == baseline).select(
        "ticker", "asof_date", "horizon", pl.col("y_pred").alias("b")
    )
    fig, axes = horizon_panels(plt, len(horizons), 5.5, 4)
    for ax, h in zip(axes, horizons, strict=True):
        pair = predictions.filter((pl.col("horizon") == h) & (pl.col("model") != baseline)).join(
            base.filter(pl.col("horizon") == h), on=["ticker", "asof_date", "horizon"]
        )
        diff = (
            pair.group_by("model", "asof_date")
            .agg(
                (((pl.col("y_true") - pl.col("y_pred")) ** 2) - ((pl.col("y_true") - pl.col("b")) ** 2))
                .mean()
                .alias("d")
            )
            .sort("asof_date")
        )
        for (model,), g in sorted(diff.group_by("model"), key=lambda kv: kv[0][0]):
            ax.plot(g["asof_date"].to_numpy(), np.cumsum(g["d"].to_numpy()), label=model, lw=1.4)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"horizon {h}: cumulative squared error minus {baseline}")
        ax.set_ylabel("below 0 = better than the random walk")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def plot_predicted_vs_realised(predictions: pl.DataFrame, path: Path, model: str) -> Path:
    plt = pyplot()
    horizons = sorted(predictions["horizon"].unique().to_list())
    fig, axes = horizon_panels(plt, len(horizons), 4.5, 4.2)
    for ax, h in zip(axes, horizons, strict=True):
        g = predictions.filter((pl.col("model") == model) & (pl.col("horizon") == h))
        ax.scatter(g["y_pred"].to_numpy(), g["y_true"].to_numpy(), s=4, alpha=0.35)
        lim = float(np.nanquantile(np.abs(g["y_true"].to_numpy()), 0.99)) if g.height else 0.1
        ax.plot([-lim, lim], [-lim, lim], color="black", lw=0.8)
        ax.set_xlim(-lim / 2, lim / 2)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("predicted log return")
        ax.set_ylabel("realised log return")
        ax.set_title(f"{model}, horizon {h}")
    fig.tight_layout()
    return save_png(fig, path)


def plot_hit_rates(metrics: pl.DataFrame, path: Path) -> Path:
    """Hit rate per ticker and model at each horizon, with the 'always up' rate as a marker."""
    plt = pyplot()
    per = per_ticker(metrics)
    horizons = sorted(per["horizon"].unique().to_list())
    present = set(per["model"].unique().to_list())
    models = [m for m in DISPLAY_ORDER if m != BENCHMARK and m in present]
    tickers = sorted(per["ticker"].unique().to_list())
    # wide enough for every ticker's bars; labels turned upright beyond a handful (20 ran into one another)
    many = len(tickers) > 10
    fig, axes = horizon_panels(
        plt, len(horizons), max(5.5, 0.45 * len(tickers)), 4, per_row=1 if many else PANELS_PER_ROW
    )
    width = 0.8 / max(len(models), 1)
    for ax, h in zip(axes, horizons, strict=True):
        sub = per.filter(pl.col("horizon") == h)
        for i, m in enumerate(models):
            rates = [sub.filter((pl.col("model") == m) & (pl.col("ticker") == t))["hit_rate"].first() for t in tickers]
            ax.bar(np.arange(len(tickers)) + i * width, rates, width, label=m)
        ups = [sub.filter(pl.col("ticker") == t)["up_rate"].first() for t in tickers]
        ax.scatter(
            np.arange(len(tickers)) + 0.4 - width / 2,
            ups,
            color="black",
            marker="_",
            s=300,
            label="always up",
            zorder=3,
        )
        ax.set_xticks(np.arange(len(tickers)) + 0.4 - width / 2, tickers, rotation=90 if len(tickers) > 6 else 0)
        ax.tick_params(axis="x", labelsize=8 if len(tickers) > 12 else 10)
        ax.set_ylim(0.3, 0.75)
        ax.axhline(0.5, color="grey", lw=0.6)
        ax.set_title(f"hit rate per ticker, horizon {h}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def plot_live_record(scored: pl.DataFrame, path: Path) -> Path:
    """Per horizon: cumulative (published squared error - random walk squared error), averaged across
    tickers per target date, over target dates; below 0 = better than the random walk. Written as PNG."""
    plt = pyplot()
    if scored.is_empty():
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no forecast has reached its target date yet", ha="center", va="center")
        return save_png(fig, path)
    diff = live.excess_loss(scored)
    horizons = diff["horizon"].unique().sort().to_list()
    fig, axes = horizon_panels(plt, len(horizons), 5.5, 4)
    for ax, h in zip(axes, horizons, strict=True):
        g = diff.filter(pl.col("horizon") == h)
        ax.plot(g["target_date"].to_numpy(), g["cumulative"].to_numpy(), marker="." if g.height < 60 else None)
        _date_axis(ax, g["target_date"].min(), g["target_date"].max())
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"horizon {h}: published minus random walk (live)")
        ax.set_xlabel("target date")
        ax.set_ylabel("cumulative squared error difference\nbelow 0 = better than the random walk")
    fig.tight_layout()
    return save_png(fig, path)


def _date_axis(ax, first: date, last: date) -> None:
    """Whole days on the x axis, also in the first nights when only a day or two are scored."""
    import matplotlib.dates as mdates

    pad = max(timedelta(days=1), (last - first) / 20)
    ax.set_xlim(first - pad, last + pad)
    locator = mdates.DayLocator() if (last - first).days <= 10 else mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
