"""The Parquet price lake: one file per ticker, atomic writes, idempotent upserts.

Layout: `<lake>/prices/<TICKER>.parquet`, lake schema, unique on (ticker, date),
sorted by date. A write goes to a temporary file in the same directory and is
renamed over the old one, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from features.prices.schema import VALUE_COLUMNS, check_ticker, conform, is_valid_ticker
from nightcast.errors import LakeError
from nightcast.io import atomic_write
from nightcast.words import count

log = logging.getLogger("nightcast.features.prices.lake")


@dataclass(frozen=True)
class UpsertResult:
    ticker: str
    rows_added: int
    rows_revised: int  # stored rows where a stored value was replaced by a different one
    path: Path
    rows_filled: int = 0  # stored rows whose missing values (null) were filled, nothing replaced
    # the ticker's rows as stored after the upsert (`read_ticker` would read them back): the ingest takes them
    # from here instead of reading every file again (~1 s on 500 tickers x 25 years)
    stored: pl.DataFrame | None = field(default=None, compare=False, repr=False)


def ticker_path(lake_dir: Path, ticker: str) -> Path:
    """Where `ticker` lives in the lake; rejects anything that is not a plain symbol."""
    check_ticker(ticker)
    prices = (Path(lake_dir) / "prices").resolve()
    path = (prices / f"{ticker}.parquet").resolve()
    if path.parent != prices:  # belt and braces: a valid symbol never escapes
        raise LakeError(f"ticker {ticker!r} would be stored outside the lake ({path})")
    return path


def atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write `frame` to `path` via a temporary file and an atomic rename."""
    atomic_write(path, lambda tmp: frame.write_parquet(tmp, compression="zstd", statistics=True))


def read_ticker(lake_dir: Path, ticker: str) -> pl.DataFrame:
    path = ticker_path(lake_dir, ticker)
    if not path.exists():
        return conform(pl.DataFrame(schema={"ticker": pl.String}))
    try:
        return conform(pl.read_parquet(path))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise LakeError(f"cannot read {path} for {ticker}: {exc}") from exc


def _unusable(column: str) -> pl.Expr:
    """A value that is there but could never be stored as it is: NaN, infinite, or not positive (a volume:
    negative). Validation would repair it by inventing one (the day before's close) or drop it."""
    c = pl.col(column)
    return c.is_nan() | c.is_infinite() | ((c < 0) if column == "volume" else (c <= 0))


def fill_from_stored(new: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """`new` with every value it lacks (null) or holds unusable (NaN, infinite, <= 0) taken from the stored row
    of the same ticker and date.

    A source that carries fewer columns than the lake (a close-only file into a lake of OHLCV bars), a missing
    field or a bad cell never erases or overwrites a stored value; a different valid value is a revision and
    replaces it. (A bad cell for a stored day used to be carried forward from the day before by validation and
    stored as a "revision" of the good price.)
    """
    return fill_and_keep(new, stored)[0]


def fill_and_keep(new: pl.DataFrame, stored: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`fill_from_stored`, and the `ticker, date` of the rows where it kept a stored value over an unusable one
    (for the findings), from one join."""
    keys = ["ticker", "date"]
    if stored.is_empty() or new.is_empty():
        return new, new.select(keys).clear()
    joined = new.join(stored.select(*keys, *VALUE_COLUMNS), on=keys, how="left", suffix="_stored")
    kept = pl.any_horizontal(_unusable(c).fill_null(False) & pl.col(f"{c}_stored").is_not_null() for c in VALUE_COLUMNS)
    filled = joined.with_columns(
        pl.when(pl.col(c).is_null() | _unusable(c)).then(pl.coalesce(f"{c}_stored", c)).otherwise(c).alias(c)
        for c in VALUE_COLUMNS
    )
    return filled.select(new.columns).sort(keys), joined.filter(kept).select(keys)


def upsert_ticker(lake_dir: Path, frame: pl.DataFrame, old: pl.DataFrame | None = None) -> UpsertResult:
    """Merge one ticker's validated rows into its lake file.

    New dates are added; a stored value that differs is replaced (revisions win); a value missing from the
    new rows keeps the stored one (`fill_from_stored`); rows whose values are unchanged keep their stored
    `ingested_at`. When nothing changes the file is not rewritten, so reruns are idempotent. `old`: the
    ticker's stored rows as `read_ticker` gives them, when the caller has just read them (the ingest has, to
    validate the new rows with them): the file is then not read again.
    """
    tickers = frame["ticker"].unique().to_list()
    if len(tickers) != 1:
        raise LakeError(f"upsert_ticker expects one ticker, got {tickers}")
    ticker = tickers[0]
    path = ticker_path(lake_dir, ticker)
    new = conform(frame).unique(subset=["date"], keep="last").sort("date")
    old = read_ticker(lake_dir, ticker) if old is None else old
    if old.is_empty():
        atomic_write_parquet(new, path)
        log.debug("lake: %s +%d rows (new) -> %s", ticker, new.height, path)
        return UpsertResult(ticker, new.height, 0, path, stored=new)
    key_values = ["date", *VALUE_COLUMNS]
    if old.height == new.height and old.select(key_values).equals(new.select(key_values)):
        return UpsertResult(ticker, 0, 0, path, stored=old)  # the same data again: fast path, nothing to write
    new = fill_from_stored(new, old)
    unchanged = new.join(old.select(key_values), on=key_values, how="semi", nulls_equal=True)
    changed = new.join(unchanged.select("date"), on="date", how="anti")
    if changed.is_empty():
        return UpsertResult(ticker, 0, 0, path, stored=old)
    before = changed.join(old.select(key_values), on="date", how="inner", suffix="_stored")
    replaced = pl.any_horizontal(
        pl.col(f"{c}_stored").is_not_null() & (pl.col(c) != pl.col(f"{c}_stored")) for c in VALUE_COLUMNS
    )
    revised = before.filter(replaced).height
    added = changed.height - before.height
    merged = pl.concat([old.join(changed.select("date"), on="date", how="anti"), changed]).sort("date")
    atomic_write_parquet(merged, path)
    log.debug("lake: %s +%d rows, %d revised, %d filled -> %s", ticker, added, revised, before.height - revised, path)
    return UpsertResult(ticker, added, revised, path, before.height - revised, stored=merged)


def upsert(
    lake_dir: Path, frame: pl.DataFrame, stored: pl.DataFrame | None = None, read: Collection[str] = ()
) -> list[UpsertResult]:
    """Upsert every ticker of `frame`; each ticker's file is written independently. `stored`: what `read_prices`
    read just before for the tickers `read` (one it found no file for has no rows there), so that their files
    are not read twice; any other ticker's file is read as usual."""
    groups = frame.partition_by("ticker", as_dict=True)
    held = {} if stored is None else _by_ticker(stored)
    read, empty = set(read), _empty()

    def old(ticker: str) -> pl.DataFrame | None:
        if ticker not in read:
            return None  # read from its file
        if ticker in held:
            return held[ticker]
        # no rows handed over: new only if it has no file (one whose rows were not handed over is read, never
        # overwritten as if new)
        return empty if not ticker_path(lake_dir, ticker).exists() else None

    results = [upsert_ticker(lake_dir, groups[key], old(key[0])) for key in sorted(groups)]
    _log_upserts(results, lake_dir)
    return results


TICKER_LINES = 20  # an upsert of more tickers than this logs one line for them all


def _log_upserts(results: list[UpsertResult], lake_dir: Path) -> None:
    """A line for the whole upsert, after a line per ticker written when they are few (many: each at DEBUG, and in
    the ingest's summary table; a line each was 500 lines in the run's log at 500 tickers, and ~0.4 s of the
    nightly's ingest in Prefect's log handlers)."""
    written = [r for r in results if r.rows_added or r.rows_revised or r.rows_filled]
    if len(results) <= TICKER_LINES:
        for r in written:
            log.info(
                "lake: %s +%d rows, %d revised, %d filled -> %s",
                r.ticker,
                r.rows_added,
                r.rows_revised,
                r.rows_filled,
                r.path,
            )
    if not written:
        log.info("lake: %s unchanged in %s", count(len(results), "ticker"), lake_dir)
        return
    log.info(
        "lake: %s written in %s (+%d rows, %d revised, %d filled), %d unchanged",
        count(len(written), "ticker"),
        lake_dir,
        sum(r.rows_added for r in written),
        sum(r.rows_revised for r in written),
        sum(r.rows_filled for r in written),
        len(results) - len(written),
    )


def stored_rows(results: list[UpsertResult]) -> pl.DataFrame:
    """The rows of `results`' tickers as `read_prices` reads them from the lake after the upsert, from the
    frames the upsert wrote or kept (a Parquet round trip changes no value or type), sorted by (ticker, date)."""
    frames = [r.stored for r in results]
    if not frames:
        return _empty()
    return _in_order(frames, [r.ticker for r in results])


def _in_order(frames: list[pl.DataFrame], tickers: list[str]) -> pl.DataFrame:
    """The tickers' frames as one, sorted by (ticker, date). Each file is stored in date order and callers
    usually go through the tickers in order: then the frames are only joined, not sorted again (the sort of
    3.1M rows was ~0.4 s of the ingest at 500 tickers x 25 years)."""
    whole = pl.concat(frames)
    if tickers == sorted(tickers) and len(set(tickers)) == len(tickers) and all(f["date"].is_sorted() for f in frames):
        return whole
    return whole.sort("ticker", "date")


def _empty() -> pl.DataFrame:
    return conform(pl.DataFrame(schema={"ticker": pl.String}))


def read_prices(lake_dir: Path, tickers: list[str], columns: Collection[str] | None = None) -> pl.DataFrame:
    """Stored rows of `tickers`, sorted by (ticker, date); `columns`: only those (each ticker's file is cut as
    it is read: the live record's three columns of 500 tickers x 25 years held ~0.6 GB less than all ten)."""
    cut = (lambda frame: frame) if columns is None else (lambda frame: frame.select(columns))
    # in order and each once (a ticker asked twice is read once); a ticker not stored yet has no rows
    held = sorted({t for t in tickers if ticker_path(lake_dir, t).exists()})
    if not held:
        return cut(_empty())
    return _in_order([cut(read_ticker(lake_dir, t)) for t in held], held)


FINGERPRINT_ROWS = 250_000  # rows of CSV text hashed at a time


def fingerprint(frame: pl.DataFrame) -> str:
    """Content hash of the price values (not `source`/`ingested_at`): same data, same hash."""
    body = frame.select(*HASHED).sort("ticker", "date")
    digest = hashlib.sha256(_csv_header())
    # the CSV text, hashed a slice of rows at a time: the same bytes as one `write_csv` of the whole frame,
    # without holding all of it twice (as text, then encoded: 0.6 GB at 3.1M rows)
    for offset in range(0, body.height, FINGERPRINT_ROWS):
        digest.update(_csv_rows(body.slice(offset, FINGERPRINT_ROWS)))
    return digest.hexdigest()[:16]


HASHED = ("ticker", "date", *VALUE_COLUMNS)  # the columns `fingerprint` hashes, in its order


def _csv_header() -> bytes:
    """The header line of `fingerprint`'s CSV text."""
    return pl.DataFrame(schema=dict.fromkeys(HASHED, pl.Float64)).write_csv().encode()


def _csv_rows(rows: pl.DataFrame) -> bytes:
    """`fingerprint`'s CSV text of `rows` (its columns, in (ticker, date) order), without the header."""
    buffer = io.BytesIO()  # the UTF-8 bytes as written: no str made and encoded again
    rows.write_csv(buffer, include_header=False, float_precision=10)
    return buffer.getvalue()


MANIFEST = "manifest.json"


def _text(rows: pl.DataFrame) -> bytes:
    return _csv_rows(rows.select(*HASHED).sort("ticker", "date"))


def _files_text(lake_dir: Path, tickers: list[str]) -> Iterator[tuple[str, pl.DataFrame, bytes]]:
    """Each ticker's stored rows, read from its file, and their CSV text (`_csv_rows`), one ticker at a time."""
    for ticker in tickers:
        rows = read_ticker(lake_dir, ticker)
        yield ticker, rows, _text(rows) if not rows.is_empty() else b""


def _held_text(stored: pl.DataFrame, tickers: list[str]) -> Iterator[tuple[str, pl.DataFrame, bytes]]:
    """`_files_text` from rows held: the text of many tickers is made at once, `FINGERPRINT_ROWS` rows at a
    time, and cut at the tickers' first lines (a row's text never depends on its neighbours, and none holds a
    line break). One call per ticker spent ~4 ms each on 6,300 rows, 2.6 s on 500 tickers x 25 years; a
    batch renders on every core, the next one while the caller hashes this one."""
    held, batches, batch, size = _by_ticker(stored), [], [], 0
    for ticker in tickers:
        rows = held.get(ticker)
        if rows is None or rows.is_empty():
            yield ticker, stored.clear(), b""
            continue
        batch.append((ticker, rows))
        size += rows.height
        if size >= FINGERPRINT_ROWS:
            batches.append(batch)
            batch, size = [], 0
    batches += [batch] if batch else []
    with ThreadPoolExecutor(1) as pool:  # one batch's text ahead (polars writes without the GIL)
        ahead = pool.submit(_batch_text, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            text = ahead.result()
            ahead = pool.submit(_batch_text, batches[k + 1]) if k + 1 < len(batches) else None
            line_ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("\n")) + 1
            ends = line_ends[np.cumsum([rows.height for _, rows in batch]) - 1]
            for (ticker, rows), first, end in zip(batch, [0, *ends[:-1]], ends, strict=True):
                yield ticker, rows, text[first:end]


def _batch_text(batch: list[tuple[str, pl.DataFrame]]) -> bytes:
    """`_csv_rows` of a batch's rows: one sort, as its tickers are in order and no ticker has a date twice."""
    return _csv_rows(pl.concat([rows.select(*HASHED) for _, rows in batch]).sort("ticker", "date"))


def _by_ticker(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Each ticker's rows: slices (no copy) when every ticker's rows are one run, as `read_prices` gives them."""
    runs = frame["ticker"].rle().struct.unnest()
    if runs.height != frame["ticker"].n_unique():
        return {key[0]: part for key, part in frame.partition_by("ticker", as_dict=True).items()}
    out, offset = {}, 0
    for length, ticker in runs.select("len", "value").iter_rows():
        out[ticker], offset = frame.slice(offset, length), offset + length
    return out


def read_manifest(lake_dir: Path) -> dict[str, dict]:
    """Per ticker: first_date, last_date, rows, fingerprint, updated_at (ISO strings)."""
    path = Path(lake_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, RecursionError) as exc:  # nested past Python's stack: not ours
        raise LakeError(
            f"lake manifest {path} is unreadable ({exc}); delete it to rebuild from the Parquet files"
        ) from exc


def update_manifest(
    lake_dir: Path, tickers: list[str], stored: pl.DataFrame | None = None, written: Collection[str] | None = None
) -> dict[str, dict]:
    """Recompute the manifest entries of `tickers` from their files and write the manifest atomically.

    `stored`: the stored rows of `tickers` as read back from the lake (`read_prices`), when the caller holds
    them already: the files are then not read a second time (~1 s on 500 tickers x 25 years). `written`: as
    `manifest_and_fingerprint`'s."""
    return manifest_and_fingerprint(lake_dir, tickers, stored, written=written)[0]


def manifest_and_fingerprint(
    lake_dir: Path,
    tickers: list[str],
    stored: pl.DataFrame | None = None,
    universe: Collection[str] = (),
    written: Collection[str] | None = None,
) -> tuple[dict[str, dict], str]:
    """`update_manifest`, and from the same CSV text `fingerprint` of the rows of the tickers `universe` (a
    subset of `tickers`), each ticker's text made once: the per-ticker and universe hashes were two passes
    over the same text (~2 s each on 500 tickers x 25 years).

    The universe's hash is `fingerprint`'s: the header, then every row in (ticker, date) order, each ticker's
    rows as one slice (a row's text never depends on the rows around it).

    `written`: the tickers whose files the caller has just written, when it knows them; an entry of another
    ticker that disagrees with its file is a repair, and is said so (an ingest was killed between its files
    and the manifest, or a file was replaced by hand)."""
    manifest = read_manifest(lake_dir)
    path = Path(lake_dir) / MANIFEST
    rebuilt = not path.exists()  # none (deleted, or the first ingest was killed): built, not repaired
    repaired, orphans = [], _without_file(lake_dir, manifest)
    wanted = set(universe)
    header = _csv_header()
    whole = hashlib.sha256(header)
    # the universe's hash reads its tickers in sorted order
    texts = _files_text(lake_dir, sorted(tickers)) if stored is None else _held_text(stored, sorted(tickers))
    for ticker, rows, text in texts:
        if rows.is_empty():
            manifest.pop(ticker, None)
            continue
        if ticker in wanted:
            whole.update(text)
        entry = {
            "first_date": rows["date"].min().isoformat(),
            "last_date": rows["date"].max().isoformat(),
            "rows": rows.height,
            "fingerprint": hashlib.sha256(header + text).hexdigest()[:16],  # `fingerprint(rows)`
        }
        if {k: manifest.get(ticker, {}).get(k) for k in entry} != entry:  # the same rows keep their updated_at
            manifest[ticker] = entry | {"updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
            if written is not None and ticker not in written:
                repaired.append(ticker)
    if repaired and rebuilt:
        log.info("lake manifest: none found; built from the files of %s", count(len(repaired), "ticker"))
    elif repaired:
        log.warning(
            "lake manifest: the entries of %s did not match their files and were rebuilt from them (%s): an "
            "earlier ingest stopped before writing the manifest, or a file was replaced by hand",
            count(len(repaired), "ticker"),
            _names(repaired),
        )
    if orphans:
        log.warning("lake manifest: entries without a file in the lake removed (%s)", _names(orphans))
    body = json.dumps(dict(sorted(manifest.items())), indent=1)
    if not path.exists() or path.read_text() != body:  # unchanged: not rewritten (an ingest of the same data)
        atomic_write(path, lambda tmp: tmp.write_text(body))
    return manifest, whole.hexdigest()[:16]


def _without_file(lake_dir: Path, manifest: dict[str, dict]) -> list[str]:
    """Entries of `manifest` with no ticker file in the lake (or no valid name), removed from it in place."""
    gone = []
    for ticker in list(manifest):
        present = is_valid_ticker(ticker) and ticker_path(lake_dir, ticker).exists()  # a non-symbol: never a file
        if not present:
            gone.append(ticker)
            del manifest[ticker]
    return gone


def _names(tickers: list[str]) -> str:
    """For a log line: no raw control characters of a hand-edited name."""
    shown = [t if is_valid_ticker(t) else repr(t) for t in tickers[:10]]
    return ", ".join(shown) + (", ..." if len(tickers) > 10 else "")
