"""The results tables every report shows, each built by one function; renderers only format them.

`evaluation_table` (the pooled out-of-sample scores of each model per horizon) and `record_table` (the live
record of the published forecasts) feed the Markdown of the backtest report and the nightly summary, the
CLI's rich tables and the UI: a column added here shows everywhere, spelled and rounded the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import polars as pl

from forecasting.metrics import per_ticker, pooled


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


def evaluation_table(metrics: pl.DataFrame, models: Sequence[str] | None = None) -> pl.DataFrame:
    """Pooled scores per horizon and model (in the metrics table's order), optionally of `models` only."""
    rows = pooled(metrics)
    if models:
        rows = rows.filter(pl.col("model").is_in([str(m) for m in models]))
    return rows.select(c.key for c in EVALUATION_COLUMNS if c.key in rows.columns)


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
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
