"""The results tables every report shows, each built by one function; renderers only format them.

`evaluation_table` (the pooled out-of-sample scores of each model per horizon) and `record_table` (the live
record of the published forecasts) feed the Markdown of the backtest report and the nightly summary, the
CLI's rich tables and the UI: a column added here shows everywhere, spelled and rounded the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import polars as pl

from forecasting.metrics import per_ticker, pooled
from forecasting.names import BENCHMARK, display_order


@dataclass(frozen=True)
class Column:
    key: str  # column of the table
    label: str  # heading
    fmt: str = "{}"  # how a value is written ("" for a missing one)


EVALUATION_COLUMNS = (
    Column("horizon", "horizon"),
    Column("model", "model"),
    Column("mse", "MSE", "{:.4e}"),
    Column("mse_ratio", "ratio vs random walk", "{:.4f}"),
    Column("hit_rate", "hit rate", "{:.3f}"),
    Column("up_rate", "always up", "{:.3f}"),
    Column("f1", "F1 (up)", "{:.3f}"),
    Column("dm_stat", "DM stat", "{:+.2f}"),
    Column("dm_pvalue", "DM p", "{:.3f}"),
    Column("coverage", "coverage", "{:.3f}"),
)

RECORD_COLUMNS = (
    Column("ticker", "ticker"),
    Column("horizon", "horizon"),
    Column("n", "forecasts"),
    Column("mse_ratio", "ratio vs random walk", "{:.4f}"),
    Column("hit_rate", "hit rate", "{:.3f}"),
    Column("up_rate", "always up", "{:.3f}"),
    Column("dm_stat", "DM stat", "{:+.2f}"),
    Column("dm_pvalue", "DM p", "{:.3f}"),
    Column("coverage", "coverage", "{:.3f}"),
)


CROSS_SECTION_COLUMNS = (
    Column("horizon", "horizon"),
    Column("model", "model"),
    Column("n_dates", "dates"),
    Column("rank_ic_mean", "rank IC", "{:+.4f}"),
    Column("rank_ic_t", "rank IC t", "{:+.2f}"),
    Column("ic_mean", "IC", "{:+.4f}"),
    Column("ic_t", "IC t", "{:+.2f}"),
    Column("ls_sharpe", "long-short Sharpe", "{:+.2f}"),
    Column("ls_cum_return", "long-short return", "{:+.2%}"),
    Column("ls_max_drawdown", "max drawdown", "{:.2%}"),
    Column("ls_mean_turnover", "turnover/day", "{:.2f}"),
    Column("auc", "up/down AUC", "{:.3f}"),
)


def evaluation_table(metrics: pl.DataFrame) -> pl.DataFrame:
    """Pooled scores per horizon and model (in the metrics table's order)."""
    rows = pooled(metrics)
    return rows.select(c.key for c in EVALUATION_COLUMNS if c.key in rows.columns)


def ablation_table(metrics: pl.DataFrame) -> pl.DataFrame:
    """One row per model, for each horizon its MSE ratio to the random walk and Diebold-Mariano p: the variants
    side by side (every row scored on identical origins)."""
    rows = pooled(metrics).filter(pl.col("model") != BENCHMARK)
    wide = rows.pivot(on="horizon", index="model", values=["mse_ratio", "dm_pvalue"], sort_columns=True)
    horizons = sorted(rows["horizon"].unique().to_list())
    order = [c for h in horizons for c in (f"mse_ratio_{h}", f"dm_pvalue_{h}")]
    renamed = {f"mse_ratio_{h}": f"h{h} ratio" for h in horizons} | {f"dm_pvalue_{h}": f"h{h} DM p" for h in horizons}
    return wide.sort(display_order()).select("model", *order).rename(renamed)


def ablation_markdown(metrics: pl.DataFrame) -> str:
    table = ablation_table(metrics)
    specs = [Column(c, c, "{:.4f}" if c.endswith("ratio") else "{:.3f}") for c in table.columns if c != "model"]
    return markdown_table(table, specs)


ABLATION_NOTE = (
    "Every row on identical origins; ratio below 1 beats the random walk, DM p below 0.05 says the difference is "
    "significant (positive ratios above 1 with small p: significantly worse). Variants: lstm has no attention; "
    "bidirectional reads the window both ways; self_attention adds a transformer block over the encoder states; "
    "demeaned learns each ticker's return in excess of the universe's and adds the universe's historical mean "
    "back; ensemble averages seeds; combined shrinks attention_lstm towards the baselines by validation weights."
)


def cross_section_view(table: pl.DataFrame) -> pl.DataFrame:
    """The headline columns of `forecasting.cross_section.cross_section_table` (no random walk: it has no view)."""
    return table.filter(pl.col("n_dates") > 0).select(c.key for c in CROSS_SECTION_COLUMNS)


def across_tickers_markdown(table: pl.DataFrame) -> str:
    """The cross-section view as Markdown, or why there is none."""
    view = cross_section_view(table)
    if view.is_empty():
        return (
            "No date had enough tickers (backtest.ic_min_tickers) with differing forecasts: nothing to compare "
            "across tickers."
        )
    return markdown_table(view, CROSS_SECTION_COLUMNS)


def record_table(record: pl.DataFrame, by_ticker: bool = False) -> pl.DataFrame:
    """The live record per horizon, pooled (or per ticker and horizon)."""
    rows = per_ticker(record) if by_ticker else pooled(record).sort("horizon")
    return rows.select(c.key for c in RECORD_COLUMNS if c.key in rows.columns and (by_ticker or c.key != "ticker"))


def columns_of(table: pl.DataFrame, columns: Sequence[Column]) -> list[Column]:
    """The column specs of `table`, in its order; columns without a spec are shown as they are."""
    spec = {c.key: c for c in columns}
    return [spec.get(name, Column(name, name)) for name in table.columns]


def formatted(value: object, column: Column) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column.fmt == "{}" and isinstance(value, float):
        return f"{value:.4g}"  # a float without a format of its own: four significant digits
    return column.fmt.format(value)


def rows_as_text(table: pl.DataFrame, columns: Sequence[Column]) -> Iterator[list[str]]:
    specs = columns_of(table, columns)
    for row in table.iter_rows():
        yield [formatted(v, c) for v, c in zip(row, specs, strict=True)]


def markdown_table(table: pl.DataFrame, columns: Sequence[Column] = ()) -> str:
    """A GitHub-style Markdown table; `columns` give headings and formats (others: the column name, as is)."""
    specs = columns_of(table, columns)
    lines = ["| " + " | ".join(c.label for c in specs) + " |", "|" + "---|" * len(specs)]
    for cells in rows_as_text(table, columns):
        lines.append("| " + " | ".join(markdown_text(cell) for cell in cells) + " |")
    return "\n".join(lines)


_MARKDOWN = re.compile(r"([\\`*\[\]<>|!])")


def markdown_text(text: str) -> str:
    """`text` shown as itself in Markdown: the characters that make links, images, HTML, code, emphasis or a
    table's cells escaped (a ticker cell of a price file is anyone's text: "![x](https://...)" became an image
    fetched from elsewhere in the Prefect UI). Digits, dots, dashes and underscores (inside a word, as in
    attention_lstm, no emphasis) are left alone, so a report reads the same as text."""
    return _MARKDOWN.sub(r"\\\1", str(text))
