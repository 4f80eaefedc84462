"""Inspection: what the model attended to, as tables, a heatmap PNG and a few plain sentences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from features.io import atomic_write
from features.windows import Panel
from forecasting.metrics import per_ticker
from forecasting.metrics import pooled as pooled_rows
from forecasting.names import Scope
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
        labelled = frame.with_columns(row=pl.coalesce("ticker", pl.lit("all tickers"))).sort(
            pl.col("scope") == Scope.POOLED, "ticker"
        )
        wide = labelled.pivot(on=key, index="row", values="weight", sort_columns=True)
        tickers = wide["row"].to_list()
        columns = [c for c in wide.columns if c != "row"]
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    _pyplot().close(fig)
    return path


def plot_cumulative_error(predictions: pl.DataFrame, path: Path, baseline: str = "random_walk") -> Path:
    """Cumulative (squared error - baseline squared error) over origins, pooled over tickers; below 0 = better."""
    plt = _pyplot()
    horizons = sorted(predictions["horizon"].unique().to_list())
    base = predictions.filter(pl.col("model") == baseline).select(
        "ticker", "asof_date", "horizon", pl.col("y_pred").alias("b")
    )
    fig, axes = plt.subplots(1, len(horizons), figsize=(5.5 * len(horizons), 4), squeeze=False)
    for ax, h in zip(axes[0], horizons, strict=True):
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
    return _save(fig, path)


def plot_predicted_vs_realised(predictions: pl.DataFrame, path: Path, model: str) -> Path:
    plt = _pyplot()
    horizons = sorted(predictions["horizon"].unique().to_list())
    fig, axes = plt.subplots(1, len(horizons), figsize=(4.5 * len(horizons), 4.2), squeeze=False)
    for ax, h in zip(axes[0], horizons, strict=True):
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
    return _save(fig, path)


def plot_hit_rates(metrics: pl.DataFrame, path: Path) -> Path:
    """Hit rate per ticker and model at each horizon, with the 'always up' rate as a marker."""
    plt = _pyplot()
    per = per_ticker(metrics)
    horizons = sorted(per["horizon"].unique().to_list())
    models = [m for m in ("attention_lstm", "lstm", "ridge", "hist_mean") if m in per["model"].unique().to_list()]
    tickers = sorted(per["ticker"].unique().to_list())
    fig, axes = plt.subplots(1, len(horizons), figsize=(5.5 * len(horizons), 4), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for ax, h in zip(axes[0], horizons, strict=True):
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
        ax.set_xticks(np.arange(len(tickers)) + 0.4 - width / 2, tickers)
        ax.set_ylim(0.3, 0.75)
        ax.axhline(0.5, color="grey", lw=0.6)
        ax.set_title(f"hit rate per ticker, horizon {h}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def backtest_summary(
    metrics: pl.DataFrame,
    folds: pl.DataFrame,
    title: str,
    images: dict[str, str],
    seconds: float,
    coverage: float | None,
) -> str:
    """One page of Markdown: the pooled table, how to read it, the folds and the plots."""
    pooled = pooled_rows(metrics)
    has_cov = "coverage" in pooled.columns
    lines = [
        f"# {title}",
        "",
        f"{folds.height} folds, {folds['origins'].sum()} forecast origins, {seconds:.0f} s.",
        "",
        "| horizon | model | MSE | MSE ratio vs random walk | hit rate | always up | F1 (up) | DM stat | DM p |"
        + (" coverage |" if has_cov else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if has_cov else ""),
    ]
    for r in pooled.iter_rows(named=True):
        ratio = "" if r.get("mse_ratio") is None else f"{r['mse_ratio']:.4f}"
        dm = "" if r.get("dm_stat") is None else f"{r['dm_stat']:.2f} | {r['dm_pvalue']:.3f}"
        dm = dm or " | "
        cov = f" {r['coverage']:.3f} |" if has_cov and r.get("coverage") is not None else (" |" if has_cov else "")
        lines.append(
            f"| {r['horizon']} | {r['model']} | {r['mse']:.4e} | {ratio} | {r['hit_rate']:.3f} | "
            f"{r['up_rate']:.3f} | {r['f1']:.3f} | {dm} |{cov}"
        )
    lines += [
        "",
        "Ratio below 1 beats the random walk; a negative DM statistic with p below 0.05 says the difference "
        "is significant (Diebold-Mariano, Harvey-Leybourne-Newbold correction, pooled loss differential per origin). "
        "The directional baseline is the 'always up' rate, not 0.5.",
    ]
    if coverage is not None and has_cov:
        lines.append(f"Intervals: nominal coverage {coverage:.0%}; the coverage column is what was realised.")
    lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in images.items()]
    lines += ["", "## Folds", "", "| " + " | ".join(folds.columns) + " |", "|" + "---|" * folds.width]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in folds.iter_rows()]
    return "\n".join(lines) + "\n"


def write_backtest_report(result, out_dir: Path, title: str, coverage: float | None) -> list[Path]:
    """PNG plots and report.md (linking them) into `out_dir`."""
    out_dir = Path(out_dir)
    models = result.predictions["model"].unique().to_list()
    featured = "attention_lstm" if "attention_lstm" in models else sorted(models)[0]
    paths = [
        plot_cumulative_error(result.predictions, out_dir / "cumulative_error.png"),
        plot_predicted_vs_realised(result.predictions, out_dir / "predicted_vs_realised.png", featured),
        plot_hit_rates(result.metrics, out_dir / "hit_rates.png"),
    ]
    images = {p.stem.replace("_", " "): p.name for p in paths}
    text = backtest_summary(result.metrics, result.folds, title, images, result.seconds, coverage)
    paths.append(atomic_write(out_dir / "report.md", lambda tmp: tmp.write_text(text)))
    return paths
