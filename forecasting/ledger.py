"""The forecast ledger: every published forecast, kept so it can be scored once its target date passes.

Layout: `<ledger_dir>/asof=YYYY-MM-DD/ledger.parquet`, one partition per as-of date,
rows of the published contract (`forecasting.publish.FORECAST_SCHEMA`), unique on
(asof_date, ticker, horizon): the forecasts as last published for the date, which the live
record scores. A rerun that publishes other values (or withdraws a ticker) moves the rows it
replaces to `<ledger_dir>_superseded/asof=YYYY-MM-DD/superseded.parquet`, with when and by
which run (a dataset of its own: a reader of the ledger's files never meets its extra
columns): nothing published is ever lost, and a rerun that replaces what was published says so. Storage only; scoring
lives in `forecasting.live`.

One writer per partition at a time (the nightly run): a write reads the stored
partition, merges and renames the result over it, so two concurrent writers of
the same as-of date could lose each other's tickers.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Collection
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from forecasting.publish import FORECAST_COLUMNS, FORECAST_SCHEMA, NULLABLE
from nightcast.errors import NightcastError, one_line
from nightcast.io import atomic_write, remove_leftovers

FILE = "ledger.parquet"
SUPERSEDED = "superseded.parquet"  # rows a later run of the same date replaced, with `superseded_at`, `_by`
KEY = ("asof_date", "ticker", "horizon")
# Columns a forecast may lack (no interval, no evaluation metadata); stored as null.
OPTIONAL = NULLABLE
_PARTITION = re.compile(r"asof=(\d{4}-\d{2}-\d{2})")
log = logging.getLogger("nightcast.forecasting.ledger")


class LedgerError(NightcastError):
    """The ledger could not be read or written, or was given rows it cannot store."""


def partition_path(ledger_dir: Path, asof: date) -> Path:
    return Path(ledger_dir) / f"asof={asof.isoformat()}" / FILE


def superseded_path(ledger_dir: Path, asof: date) -> Path:
    ledger_dir = Path(ledger_dir)
    return ledger_dir.with_name(f"{ledger_dir.name}_superseded") / f"asof={asof.isoformat()}" / SUPERSEDED


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


def write_partition(
    ledger_dir: Path,
    forecasts: pl.DataFrame,
    universe: Collection[str] = (),
    *,
    whole: bool = False,
) -> Path:
    """Store the forecasts of one as-of date; returns the partition file.

    Rows for the tickers in `forecasts` and in the run's `universe` replace that date's stored rows for those
    tickers (a ticker of the universe the run did not forecast is withdrawn, as from the forecasts file);
    stored rows of other tickers are kept, so a rerun never duplicates and a run on a subset of the universe
    never deletes the rest. `whole`: the partition becomes `forecasts` (the date's whole forecasts file). A
    replaced row whose values change goes to `superseded.parquet` (`_set_aside`). Atomic (temp file + rename).
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
        mine = pl.lit(True) if whole else pl.col("ticker").is_in(sorted({*universe, *frame["ticker"].to_list()}))
        _set_aside(superseded_path(ledger_dir, dates[0]), stored.filter(mine), frame)
        frame = pl.concat([stored.filter(~mine), frame])
    frame = frame.sort("ticker", "horizon")
    return atomic_write(path, lambda tmp: frame.write_parquet(tmp))


_VALUES = [c for c in FORECAST_COLUMNS if c != "run_id"]  # a rerun that changes nothing but its id replaces nothing
_FLOATS = [c for c in _VALUES if FORECAST_SCHEMA[c] == pl.Float64]
# A rerun of the same night on another thread count computes the same forecasts to a few float32 ulps (1e-10 in
# log return, a hostile user's rerun; a float32 ulp of a 0.07 log return is 7.5e-9): the same forecast, not a
# replaced one. Far below a forecast's precision (1e-6 of a price is a hundredth of a basis point).
SAME_ABSOLUTE, SAME_RELATIVE = 1e-7, 1e-6  # numpy.isclose's atol and rtol


def _same(old: pl.Expr, new: pl.Expr) -> pl.Expr:
    """Both null, both NaN, equal, or both finite and within float noise (a NaN compared by tolerance was "the
    same" as any number: NaN <= NaN is true to polars)."""
    noise = (old - new).abs() <= SAME_ABSOLUTE + SAME_RELATIVE * new.abs()
    finite = old.is_finite() & new.is_finite()
    return (old.is_null() & new.is_null()) | (old.is_nan() & new.is_nan()) | (old == new) | (finite & noise)


def _changed(replaced: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """The stored rows whose forecast `new` changes (any value but a float's noise, `_same`) or withdraws."""
    exact = [c for c in _VALUES if c not in _FLOATS]
    candidates = new.select(*exact, *(pl.col(c).alias(f"{c}_new") for c in _FLOATS), pl.lit(True).alias("_hit"))
    joined = replaced.join(candidates, on=exact, how="left", nulls_equal=True)
    close = [_same(pl.col(c), pl.col(f"{c}_new")) for c in _FLOATS]
    same = pl.col("_hit").fill_null(False) & pl.all_horizontal(*(x.fill_null(False) for x in close))
    return joined.filter(~same).select(replaced.columns)


def _set_aside(path: Path, replaced: pl.DataFrame, new: pl.DataFrame) -> None:
    """The stored rows a run replaces with other values (`_changed`), or withdraws, appended to the superseded file
    `path` (written before the ledger: a kill between the two leaves a row in both, never in neither), with a
    warning."""
    gone = _changed(replaced, new)
    if gone.is_empty():
        return
    by = new["run_id"][0] if new.height else None
    rows = gone.with_columns(superseded_at=pl.lit(datetime.now(UTC)), superseded_by=pl.lit(by, dtype=pl.String))
    if path.is_file():  # rows a killed run set aside before its ledger was renamed in are not kept twice
        try:
            earlier = pl.read_parquet(path)
            fresh = rows.join(
                earlier, on=[c for c in FORECAST_COLUMNS if c in earlier.columns], how="anti", nulls_equal=True
            )
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise LedgerError(f"cannot add to {path}: {one_line(exc)}") from None
        rows = pl.concat([earlier, fresh], how="diagonal_relaxed")  # an older file's columns: kept, not lost
    atomic_write(path, lambda tmp: rows.write_parquet(tmp))
    withdrawn = gone.join(new.select(KEY), on=list(KEY), how="anti")["ticker"].unique().sort().to_list()
    log.warning(
        "ledger %s: %d published forecasts of %s replaced by this run%s; the replaced ones are kept in %s",
        gone["asof_date"][0],
        gone.height,
        ", ".join(gone["ticker"].unique().sort().to_list()[:10]),
        f" ({', '.join(withdrawn)} withdrawn)" if withdrawn else "",
        path,
    )


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
