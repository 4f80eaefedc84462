"""The backtest report: PNG plots and one page of Markdown that links them."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from forecasting import plots
from forecasting.intervals import conditional_coverage_summary, plot_reliability, quantile_levels, reliability_table
from forecasting.names import ABLATION, TRAINED_MODEL
from forecasting.results import (
    ABLATION_NOTE,
    EVALUATION_COLUMNS,
    ablation_markdown,
    across_tickers_markdown,
    evaluation_table,
    markdown_table,
)
from nightcast.io import atomic_write
from nightcast.words import count


def backtest_summary(
    metrics: pl.DataFrame,
    folds: pl.DataFrame,
    title: str,
    images: dict[str, str],
    seconds: float,
    coverage: float | None,
    cross_section: pl.DataFrame | None = None,
    deciles: pl.DataFrame | None = None,
    quantiles: pl.DataFrame | None = None,
    volatility: pl.DataFrame | None = None,
) -> str:
    """One page of Markdown: the pooled table, how to read it, the folds and the plots."""
    table = evaluation_table(metrics)
    lines = [
        f"# {title}",
        "",
        f"{count(folds.height, 'fold')}, {count(int(folds['origins'].sum()), 'forecast origin')}, {seconds:.0f} s.",
        "",
        markdown_table(table, EVALUATION_COLUMNS),
    ]
    lines += [
        "",
        "Ratio below 1 beats the random walk; a negative DM statistic with p below 0.05 says the difference "
        "is significant (Diebold-Mariano, Harvey-Leybourne-Newbold correction, pooled loss differential per origin). "
        "The directional baseline is the 'always up' rate, not 0.5.",
    ]
    if coverage is not None and "coverage" in table.columns:
        lines.append(f"Intervals: nominal coverage {coverage:.0%}; the coverage column is what was realised.")
    if "held" in folds.columns and folds["held"].sum():
        lines += ["", held_note(folds)]
    variants = set(table["model"].unique().to_list()) & set(ABLATION)
    if len(variants) > 2:  # more than the default pair (attention_lstm and its lstm ablation)
        lines += ["", "## Ablation", "", ablation_markdown(metrics), "", ABLATION_NOTE]
    if deciles is not None:
        summary = conditional_coverage_summary(deciles).with_columns(pl.col(pl.Float64).round(3))
        lines += ["", "## Intervals when markets are calm and wild", "", markdown_table(summary)]
        lines += ["", DECILES_NOTE.format(coverage=coverage)]
    if quantiles is not None:
        lines += ["", "## Quantile forecasts", "", markdown_table(quantiles.with_columns(pl.col(pl.Float64).round(5)))]
        lines += ["", QUANTILES_NOTE]
    if volatility is not None and not volatility.is_empty():
        lines += ["", "## Volatility forecasts", "", volatility_markdown(volatility), "", VOLATILITY_NOTE]
    if cross_section is not None:
        lines += ["", "## Across tickers", "", across_tickers_markdown(cross_section)]
        lines += ["", ACROSS_TICKERS_NOTE]
    lines += ["", "## Plots", ""] + [f"![{name}]({file})" for name, file in images.items()]
    lines += ["", "## Folds", "", markdown_table(folds)]
    return "\n".join(lines) + "\n"


def held_note(folds: pl.DataFrame) -> str:
    """Why the network rows may score worse than the same networks would alone: they early-stopped on part of
    the validation span, the rest was held for the combination's weights (a reader of a backtest sees only the
    rows, not the protocol behind them)."""

    def spread(column: str) -> str:
        low, high = int(folds[column].min()), int(folds[column].max())
        return f"{low}" if low == high else f"{low}-{high}"

    return (
        f"In each fold the networks early-stopped on {spread('val')} validation samples; the latest {spread('held')} "
        "were held out of early stopping to fit the combination's weights (`publish.combination_holdout`), so the "
        'network rows score models stopped on less data than they would be with `publish.forecast = "model"`, '
        "which holds none."
    )


QUANTILES_NOTE = (
    "The 5, 10, 50, 90 and 95% quantiles of each forecast (conformal: past residuals in units of the volatility "
    "forecast): mean pinball loss over the levels and the CRPS from them, and each as a ratio to the baseline "
    "band ('normal band': a zero forecast with normal quantiles of the same volatility forecast). Below 1 beats "
    "the band; reliability.png plots each level against how often the outcome fell at or below it."
)

VOLATILITY_NOTE = (
    "QLIKE (r^2/s^2 - log(r^2/s^2) - 1, Patton 2011; lower is better) of each h-day volatility forecast s against "
    "the squared h-day return r^2, on the evaluated origins: the published one (pred_vol: a blend of a fast and a "
    "slow EWMA, backtest.vol_fast_weight), the RiskMetrics EWMA (lambda 0.94) and a HAR fit on returns realised "
    "before the first origin."
)


def volatility_markdown(table: pl.DataFrame) -> str:
    """`volatility_qlike`'s table with one row per horizon and one column per volatility forecast."""
    wide = table.pivot(on="forecast", index="horizon", values="qlike").sort("horizon")
    counts = table.group_by("horizon").agg(pl.col("n").first())
    return markdown_table(wide.join(counts, on="horizon").with_columns(pl.col(pl.Float64).round(4)))


DECILES_NOTE = (
    "Realised coverage of the {coverage:.0%} interval within tenths of the forecasts ranked by their volatility "
    "forecast, pooled over tickers and dates (calmest: the tenth with the lowest forecast volatility, calm stocks "
    "and calm days alike); all of coverage_by_volatility.csv. An interval right on average but not here is wrong "
    "exactly when it matters."
)

ACROSS_TICKERS_NOTE = (
    "Per date, the correlation of forecasts with outcomes across tickers (rank IC: Spearman), its mean and "
    "t-statistic (corrected for the overlap of h-day returns, h-1 lags); a daily long-short book of the horizon-1 "
    "forecasts (top k long, bottom k short, equal weights, cost per unit of turnover) with its annualised Sharpe "
    "ratio, return and drawdown; the ROC AUC of the up/down call. Published benchmarks of the field reach a daily "
    "rank IC of 0.02-0.05."
)


def write_backtest_report(
    result,
    out_dir: Path,
    title: str,
    coverage: float | None,
    cross_section: pl.DataFrame | None = None,
    deciles: pl.DataFrame | None = None,
    quantiles: pl.DataFrame | None = None,
    volatility: pl.DataFrame | None = None,
) -> list[Path]:
    """PNG plots and report.md (linking them) into `out_dir`."""
    out_dir = Path(out_dir)
    models = result.predictions["model"].unique().to_list()
    featured = TRAINED_MODEL if TRAINED_MODEL in models else sorted(models)[0]
    paths = [
        plots.plot_cumulative_error(result.predictions, out_dir / "cumulative_error.png"),
        plots.plot_predicted_vs_realised(result.predictions, out_dir / "predicted_vs_realised.png", featured),
        plots.plot_hit_rates(result.metrics, out_dir / "hit_rates.png"),
    ]
    if quantiles is not None:
        levels = quantile_levels(result.predictions)
        paths.append(plot_reliability(reliability_table(result.predictions, levels), out_dir / "reliability.png"))
    images = {p.stem.replace("_", " "): p.name for p in paths}
    text = backtest_summary(
        result.metrics,
        result.folds,
        title,
        images,
        result.seconds,
        coverage,
        cross_section,
        deciles,
        quantiles,
        volatility,
    )
    paths.append(atomic_write(out_dir / "report.md", lambda tmp: tmp.write_text(text)))
    return paths
