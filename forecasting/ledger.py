"""The forecast ledger: every published forecast, kept so it can be scored once its target date passes.

Layout: `<ledger_dir>/asof=YYYY-MM-DD/ledger.parquet`, one partition per as-of date,
rows of the published contract (`forecasting.publish.FORECAST_SCHEMA`), unique on
(asof_date, ticker, horizon). Storage only; scoring lives in `forecasting.live`.

One writer per partition at a time (the nightly run): a write reads the stored
partition, merges and renames the result over it, so two concurrent writers of
the same as-of date could lose each other's tickers.
"""

from __future__ import annotations

import contextlib
import re
from datetime import date
from pathlib import Path

import polars as pl

from forecasting.publish import FORECAST_COLUMNS, FORECAST_SCHEMA, NULLABLE
from nightcast.errors import NightcastError, one_line
from nightcast.io import atomic_write, remove_leftovers

FILE = "ledger.parquet"
KEY = ("asof_date", "ticker", "horizon")
# Columns a forecast may lack (no interval, no evaluation metadata); stored as null.
OPTIONAL = NULLABLE
_PARTITION = re.compile(r"asof=(\d{4}-\d{2}-\d{2})")


class LedgerError(NightcastError):
    """The ledger could not be read or written, or was given rows it cannot store."""


def partition_path(ledger_dir: Path, asof: date) -> Path:
    return Path(ledger_dir) / f"asof={asof.isoformat()}" / FILE


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema=FORECAST_SCHEMA)


def conform(forecasts: pl.DataFrame) -> pl.DataFrame:
    """`forecasts` in the contract's column order and dtypes, optional columns filled with null."""
    unknown = [c for c in forecasts.columns if c not in FORECAST_SCHEMA]
    if unknown:
        raise LedgerError(f"forecasts have columns the ledger does not know: {unknown}; expected {FORECAST_COLUMNS}")
    missing = [c for c in FORECAST_COLUMNS if c not in forecasts.columns and c not in OPTIONAL]
    if missing:
        raise LedgerError(f"forecasts lack required columns {missing}")
    try:
        frame = forecasts.select(
            (pl.col(c) if c in forecasts.columns else pl.lit(None)).cast(dtype, strict=True).alias(c)
            for c, dtype in FORECAST_SCHEMA.items()
        )
    except pl.exceptions.PolarsError as exc:
        raise LedgerError(f"forecasts do not fit the ledger schema: {one_line(exc)}") from exc
    nulls = [c for c in (*KEY, "target_date") if frame[c].null_count()]
    if nulls:
        raise LedgerError(f"forecasts have null values in key columns {nulls}")
    return frame


def write_partition(ledger_dir: Path, forecasts: pl.DataFrame) -> Path:
    """Store the forecasts of one as-of date; returns the partition file.

    Rows for the tickers in `forecasts` replace that date's stored rows for those tickers; stored
    rows of other tickers are kept, so a rerun never duplicates and a run on a subset of the
    universe never deletes the rest. The file is replaced atomically (temp file + rename).
    """
    frame = conform(forecasts)
    dates = frame["asof_date"].unique().sort().to_list()
    if len(dates) != 1:
        shown = ", ".join(d.isoformat() for d in dates) or "none (no rows)"
        raise LedgerError(f"a ledger partition holds one as-of date; the forecasts have {shown}")
    dupes = frame.filter(pl.struct(KEY).is_duplicated())
    if dupes.height:
        first = dupes.row(0, named=True)
        raise LedgerError(
            f"forecasts repeat (ticker, horizon) pairs, e.g. {first['ticker']} horizon {first['horizon']}; "
            "each must appear once"
        )
    path = partition_path(ledger_dir, dates[0])
    remove_leftovers(path.parent)
    if path.is_file():
        stored = _read(path, dates[0])
        kept = stored.filter(~pl.col("ticker").is_in(frame["ticker"].unique().implode()))
        frame = pl.concat([kept, frame])
    frame = frame.sort("ticker", "horizon")
    return atomic_write(path, lambda tmp: frame.write_parquet(tmp))


def read_ledger(ledger_dir: Path, until: date | None = None) -> pl.DataFrame:
    """Every stored forecast (only as-of dates <= `until` when given), sorted by asof_date, ticker, horizon.

    Reads only `asof=YYYY-MM-DD/ledger.parquet`; temp files and anything else are ignored.
    """
    parts = [_read(path, asof) for asof, path in _partitions(ledger_dir) if until is None or asof <= until]
    if not parts:
        return empty_ledger()
    return pl.concat(parts).sort(*KEY)


def first_asof(ledger_dir: Path) -> date | None:
    """The earliest as-of date the ledger holds a partition of, from the folder names alone (None: none)."""
    return next((asof for asof, _ in _partitions(ledger_dir)), None)


def _partitions(ledger_dir: Path) -> list[tuple[date, Path]]:
    """(as-of date, file) of every `asof=YYYY-MM-DD/ledger.parquet`, in date order."""
    root = Path(ledger_dir)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        match = _PARTITION.fullmatch(folder.name)
        if not match or not (folder / FILE).is_file():
            continue
        with contextlib.suppress(ValueError):  # e.g. asof=2024-13-45: not a partition of ours
            found.append((date.fromisoformat(match.group(1)), folder / FILE))
    return found


def _read(path: Path, asof: date) -> pl.DataFrame:
    # not "rerun that date": a past date's run is a replay, written under outputs/replay, never here
    hint = (
        f"move it aside to go on without that night in the live record (the night's published forecasts are also "
        f"in forecasts/asof={asof}/ beside the ledger folder)"
    )
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise LedgerError(f"cannot read ledger partition {path} ({one_line(exc)}); {hint}") from exc
    try:
        frame = conform(frame)  # older partitions may lack optional columns added since
    except LedgerError as exc:
        raise LedgerError(f"ledger partition {path} does not match the schema ({exc}); {hint}") from exc
    if frame.filter(pl.col("asof_date") != asof).height:
        raise LedgerError(f"ledger partition {path} holds rows of other as-of dates; {hint}")
    return frame
