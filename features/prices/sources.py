"""Price sources: the bundled sample and price files (yfinance lives in `features.prices.yahoo`).

Each returns a polars frame in the lake schema (`features.prices.schema.LAKE_SCHEMA`) and the findings of what it
could not read (a non-numeric column or cell), at the smallest size: a cell, a column, never the whole file.
A missing `close` or `adj_close` stays null here: ingest fills it from the lake first (a missing adjusted close
by a stored ratio to the close), then from the other.
Files come in two layouts:

- long: `date,ticker,close[,open,high,low,adj_close,volume]`, names case-insensitive;
- wide: a `date` column plus one column of adjusted closes per ticker, empty (or
  NaN) before a ticker's listing and after its delisting;
- a `yf.download(...)` frame saved with pandas' `to_csv` or `to_parquet` (its `Price` and `Ticker` column
  levels, either way round).
"""

from __future__ import annotations

import csv
import difflib
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from features.prices import yahoo
from features.prices.schema import VALUE_COLUMNS, conform
from features.prices.validate import Finding
from features.settings import SourceSettings
from nightcast.errors import SourceError, one_line

DATE_TYPOS = 0.01  # the share of rows with an unreadable date dropped as typos; more is a file in another format
log = logging.getLogger("nightcast.features.prices.sources")

SAMPLE_PATH = Path(__file__).resolve().parents[2] / "data" / "sample" / "prices.parquet"

# Accepted spellings of each lake column in files (compared case-insensitively).
_ALIASES = {
    "date": ("date", "datetime", "timestamp"),
    "ticker": ("ticker", "symbol"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "adj_close": ("adj_close", "adj close", "adjclose", "adjusted_close", "adjusted close", "adj. close"),
    "volume": ("volume",),
}


def load(settings: SourceSettings, also: Sequence[str] = ()) -> tuple[pl.DataFrame, list[Finding]]:
    """Load prices from the sample or a file, filtered to `settings.tickers`, with the findings of reading.

    `also`: tickers kept beside `settings.tickers` when the source holds them (context series); no error when
    it does not. Ignored when `settings.tickers` is empty (every ticker is kept)."""
    if settings.kind == "sample":
        frame, findings = load_sample(), []
    elif settings.kind == "file":
        if settings.path is None:  # SourceSettings forbids it; say so rather than fail on None
            raise SourceError("source.kind='file' needs source.path")
        frame, findings = read_file(settings.path, one_ticker=one_symbol(settings))
    else:
        raise SourceError("yfinance is fetched incrementally against the lake: use features.prices.ingest.ingest")
    tickers = list(settings.tickers)
    context: list[str] = []
    if tickers:
        present = set(frame["ticker"].unique().to_list())
        context = [t for t in also if t in present and t not in tickers]
        findings = [f for f in findings if f.ticker in tickers or f.ticker in context]
    quarantined = {f.ticker for f in findings if f.action == "quarantined"}  # in the source, though unreadable
    where = "the bundled sample" if settings.kind == "sample" else str(settings.path)
    frame, absent = select_tickers(frame, tickers, quarantined, where, context)
    return frame, findings + absent


def one_symbol(settings: SourceSettings) -> str | None:
    """The symbol a long file without a ticker column holds: the one ticker asked for, if only one is."""
    return settings.tickers[0] if len(settings.tickers) == 1 else None


def select_tickers(
    frame: pl.DataFrame,
    tickers: Sequence[str],
    also_present: set[str] = frozenset(),
    where: str = "the source",
    context: Sequence[str] = (),
) -> tuple[pl.DataFrame, list[Finding]]:
    """Keep only `tickers` and the `context` series (all rows when `tickers` is empty), with a quarantine finding
    for each requested ticker the source does not hold: one missing ticker never sinks the others' run (as one
    yfinance cannot find does not), while a request the source holds none of is an error (context series do
    not count). A ticker the source holds but could not read (`also_present`) is reported by its own finding."""
    if not tickers:
        return frame, []
    present = set(frame["ticker"].unique().to_list()) | set(also_present)
    missing = [t for t in tickers if t not in present]
    if len(missing) == len(tickers):
        raise SourceError(f"tickers not in {where}: {missing}; available: {_listed(present)}")
    findings = [Finding(t, None, "not_in_source", "quarantined", _absent(t, present, where)) for t in missing]
    return frame.filter(pl.col("ticker").is_in([*tickers, *context])), findings


def _listed(tickers: set[str], most: int = 20) -> str:
    """`tickers` sorted, the first `most` of them: a 500-ticker file's whole list is no error message."""
    shown = sorted(tickers)
    return ", ".join(shown[:most]) + (f" and {len(shown) - most} more" if len(shown) > most else "")


def _absent(ticker: str, present: set[str], where: str) -> str:
    near = difflib.get_close_matches(ticker, sorted(present), n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}?" if near else f"it holds {_listed(present, 8)}"
    return f"asked for, but {where} holds no row of it ({hint})"


def load_sample(path: Path = SAMPLE_PATH) -> pl.DataFrame:
    """The bundled real sample (5 US series, lake schema, ending 2014-12-31)."""
    if not path.exists():
        raise SourceError(f"bundled sample not found at {path}; is this a full checkout of nightcast?")
    return conform(pl.read_parquet(path))


def read_file(
    path: Path, one_ticker: str | None = None, n_rows: int | None = None
) -> tuple[pl.DataFrame, list[Finding]]:
    """Read a CSV or Parquet price file in long or wide layout (module docstring), with the findings.

    Column names are matched case-insensitively. `one_ticker`: the symbol of a long file without a ticker
    column (one symbol's prices, e.g. a `yf.download` frame saved with `multi_level_index=False`). `n_rows`: read
    only the first rows, to find a file that cannot be read at all (empty, corrupt, columns missing, dates in
    another format) in a moment, before anything starts; a saved `yf.download` frame is then only recognised.
    """
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path} is a directory: --path takes one price file (CSV or Parquet)")
    if not path.is_file():
        raise SourceError(f"price file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = pl.read_parquet(path, n_rows=n_rows)
        elif suffix in (".csv", ".txt"):
            raw = _read_csv(path, n_rows)
        else:
            raise SourceError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except pl.exceptions.PolarsError as exc:
        where = csv_problem(path) if suffix != ".parquet" else None
        raise SourceError(f"{path}: cannot read: {where or one_line(exc)}") from None
    findings: list[Finding] = []
    if n_rows is not None and raw.height == 0:  # a header alone: said now, not after Prefect's server started
        raise SourceError(f"{path}: no price rows below the header {raw.columns}")
    if yahoo.is_export(path, raw.columns):  # a saved yf.download frame: its own two-level header
        if n_rows is not None:  # written by yfinance and pandas: read whole (with pandas) when loaded
            return pl.DataFrame(), []
        raw = yahoo.read_export(path)
    elif _is_wide(raw):
        raw, findings = wide_to_long(raw, where=str(path), head=n_rows is not None)
    if one_ticker is not None and not {"ticker", "symbol"} & {c.lower().strip() for c in raw.columns}:
        raw = raw.with_columns(pl.lit(one_ticker).alias("ticker"))
    frame, cells = normalise(raw, source=f"file:{path.name}", where=str(path), head=n_rows is not None)
    return frame, findings + cells


_TEXT = (*_ALIASES["date"], *_ALIASES["ticker"])  # read as text whatever they look like: 0700 is no 700


def _read_csv(path: Path, n_rows: int | None) -> pl.DataFrame:
    """A CSV price file, its numbers typed by polars from its first 10,000 rows (the fast read) and its date and
    ticker columns as text. A column those rows mistype (whole-yen closes, then 49.86; integer volumes, then a
    half) fails that read, and the file is read again with every column as text, parsed here: the typed read
    alone refused such valid files."""
    header = pl.read_csv(path, n_rows=0).columns
    text = {c: pl.String for c in header if c.lower().strip() in _TEXT}
    try:
        return pl.read_csv(path, infer_schema_length=10_000, schema_overrides=text, n_rows=n_rows)
    except pl.exceptions.PolarsError:
        return pl.read_csv(path, infer_schema=False, n_rows=n_rows)


def csv_problem(path: Path) -> str | None:
    """Where a CSV file polars could not parse goes wrong, as one phrase with its line number: a row with more
    or fewer fields than the header, or a quote never closed (None: nothing found). Polars' own message names
    no line and suggests reader options nightcast does not expose. Only on that error path: a pass in Python."""
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = csv.reader(handle, strict=True)
        started = 1
        try:
            header = next(rows, None)
            if header is None:
                return "the file is empty"
            started = rows.line_num + 1
            other = _other_separator(header)
            if other is not None:
                return f"the header has one field holding {other!r}: fields separated by {other!r}? write commas"
            for row in rows:
                if row and len(row) != len(header):
                    return (
                        f"line {rows.line_num} has {len(row)} fields, the header {len(header)} "
                        "(a stray or missing comma, or an unquoted comma inside a value?)"
                    )
                started = rows.line_num + 1
        except csv.Error as exc:
            return f"the row from line {started} does not parse ({exc}): a quote never closed?"
    return None


def _other_separator(header: Sequence[str]) -> str | None:
    """The separator a header read as one field holds (`;`, a tab, `|`): the file is not comma-separated."""
    return next((sep for sep in (";", "\t", "|") if len(header) == 1 and sep in header[0]), None)


def _is_wide(raw: pl.DataFrame) -> bool:
    lower = {c.lower().strip() for c in raw.columns}
    return "date" in lower and not lower & {"ticker", "symbol"} and not lower & {"close", "adj_close", "adj close"}


# Thousands separators only where no decimal comma can be meant: a dot after comma groups (1,234.50), or two
# groups or more (1,234,567). "1,000" alone could be either: it stays unread, and its finding says why.
_GROUPED = r"^[+-]?\d{1,3}(,\d{3})+\.\d+$|^[+-]?\d{1,3}(,\d{3}){2,}$"


# How exports write "no value" (R's NA, Yahoo's null, Excel's #N/A, a dash): missing, not an unreadable number
_MISSING = ("", "na", "n/a", "#n/a", "null", "none", "nan", "-", "--")


def _numbers(column: pl.Series) -> pl.Series:
    """`column` as Float64; values that are not numbers become null (whatever the column's dtype)."""
    if column.dtype.is_numeric():
        return column.cast(pl.Float64)
    text = column.cast(pl.String)
    read = text.cast(pl.Float64, strict=False)
    # blanks around a number and thousands separators only for the cells the plain cast could not read: every
    # cell through them was most of a 2.5M-row file's read time
    failed = read.is_null() & text.is_not_null()
    if not failed.any():
        return read.alias(column.name)
    plain = pl.select(pl.when(failed).then(text.str.strip_chars())).to_series()
    plain = pl.select(pl.when(plain.str.contains(_GROUPED)).then(plain.str.replace_all(",", "")).otherwise(plain))
    return read.fill_null(plain.to_series().cast(pl.Float64, strict=False)).alias(column.name)


def _given(column: pl.Series) -> pl.Series:
    """Whether each cell of `column` holds something other than an export's "no value" (`_MISSING`)."""
    if column.dtype.is_numeric():
        return column.is_not_null()
    return column.is_not_null() & ~column.cast(pl.String).str.strip_chars().str.to_lowercase().is_in(_MISSING)


def _number_hint(value: object) -> str:
    """Why a cell holding `value` is no number nightcast reads, when a common export habit explains it."""
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+,\d+", text):
        return " (a decimal comma, or one thousands separator? write 1234.50)"
    if re.search(r"[$€£¥]", text):
        return " (a currency sign? write plain numbers)"
    return ""


def wide_to_long(raw: pl.DataFrame, *, where: str, head: bool = False) -> tuple[pl.DataFrame, list[Finding]]:
    """`date` + one adjusted-close column per ticker -> long rows of `adj_close` (that is all a wide file has).

    An empty (or NaN) cell is no row, as a day missing from a long file: a wide file's dates are the union of its
    tickers' days, so a gap is a day that ticker did not trade (a London holiday beside US stocks, a weekend
    beside a crypto column), where a null price made validation invent a bar for it, or quarantine the ticker
    over a long weekend. A cell that is not a number is a missing price, for validation to repair or reject. A
    column with no number in it quarantines that ticker, not the file.
    """
    date_col = next(c for c in raw.columns if c.lower().strip() == "date")
    value_cols = [c for c in raw.columns if c != date_col]
    if not value_cols:
        raise SourceError(f"{where}: wide layout needs one price column per ticker besides '{date_col}'")
    findings, kept = [], []
    twice = _named_twice(value_cols)
    for ticker, columns in twice.items():
        why = f"{len(columns)} columns name it ({', '.join(map(repr, columns))}): which holds its prices is unknown"
        findings.append(Finding(ticker, None, "duplicate_column", "quarantined", why))
    for c in value_cols:
        if _base_name(c).strip().upper() in twice:
            continue
        numbers = _numbers(raw[c])
        if numbers.fill_nan(None).null_count() == raw.height:  # not one price: that ticker, not the file
            text = raw[c].drop_nulls()
            text = text.filter(text.cast(pl.String).str.to_lowercase() != "nan") if text.len() else text
            why = f"column {c!r} holds no number, e.g. {text[0]!r}" if text.len() else f"column {c!r} is empty"
            findings.append(Finding(c.strip().upper(), None, "non_numeric", "quarantined", why))
            continue
        unreadable = raw[c].is_not_null() & numbers.is_null()
        if unreadable.any():
            first = raw[date_col].filter(unreadable)[0]
            n = int(unreadable.sum())
            detail = f"{n} cells of column {c!r} that are not numbers, treated as missing"
            findings.append(Finding(c.strip().upper(), first, "non_numeric", "read as missing", detail, n))
        kept.append(numbers.alias(c))
    if not kept and not head:
        raise SourceError(f"{where}: no wide price column holds numbers: " + "; ".join(str(f) for f in findings))
    # per column, in the order unpivot stacks them (column after column)
    keep = np.concatenate(
        [np.zeros(0, dtype=bool)]  # no column kept (the first rows of a file yet to list any): no rows
        + [_kept_cells(_given(raw[k.name]).to_numpy() & ~k.is_nan().fill_null(False).to_numpy()) for k in kept]
    )
    values = pl.DataFrame([raw[date_col].alias("date"), *kept])
    long = values.unpivot(index="date", variable_name="ticker", value_name="adj_close")
    return long.filter(pl.Series(keep)).with_columns(pl.col("adj_close").fill_nan(None)), findings


WIDE_HOLIDAY_ROWS = 10  # a ticker's empty cells in a row, at most: days it did not trade (a Chinese New Year
# beside a crypto column's every day); a longer hole is missing data, left to validation (which quarantines a run
# longer than validation.max_fill): as no rows, a six-week hole mid-history passed as one step


def _kept_cells(given: np.ndarray) -> np.ndarray:
    """Which cells of one wide column are rows, in the file's row order: every cell given, and the empty cells
    of a hole longer than `WIDE_HOLIDAY_ROWS` between its first and last price (as nulls, for validation)."""
    keep = given.copy()
    at = np.flatnonzero(given)
    holes = np.diff(at) - 1
    for start, length in zip(at[:-1][holes > WIDE_HOLIDAY_ROWS] + 1, holes[holes > WIDE_HOLIDAY_ROWS], strict=True):
        keep[start : start + length] = True
    return keep


_DUPLICATE = re.compile(r"^(.*)_duplicated_\d+$")  # polars' name for a CSV header's second column of a name


def _base_name(column: str) -> str:
    m = _DUPLICATE.match(column)
    return m.group(1) if m else column


def _named_twice(columns: list[str]) -> dict[str, list[str]]:
    """Tickers that more than one wide column names (the same header twice, or 'AAA' and 'aaa'): their columns,
    as the file names them."""
    by_ticker: dict[str, list[str]] = {}
    for c in columns:
        by_ticker.setdefault(_base_name(c).strip().upper(), []).append(_base_name(c))
    return {t: cs for t, cs in by_ticker.items() if len(cs) > 1}


def _named_alike(columns: list[str], where: str) -> None:
    """Refuse a file with two columns for one field ('close' and 'Close', 'adj_close' and 'Adj Close'): which
    one holds the prices cannot be known. Before, one pair stopped the run with a traceback and another kept the
    last column's values without a word."""
    names = [_base_name(c).lower().strip() for c in columns]  # a header's repeat is `close_duplicated_0` to polars
    for target, aliases in _ALIASES.items():
        named = [c for c, name in zip(columns, names, strict=True) if name in aliases]
        # a date or ticker field may have a second alias beside it (a 'timestamp' of the download): the first
        # alias listed is read, as always; a price or volume column twice is ambiguous
        spellings = {name for name in names if name in aliases}
        alike = len(spellings) < len(named) or target not in ("date", "ticker")
        if len(named) > 1 and alike:
            raise SourceError(f"{where}: columns {named} all name {target!r}: keep one of them")


def _spelt_twice(names: pl.Series, where: str) -> list[Finding]:
    """A warning per ticker the file names in more than one spelling ('nvda' and 'NVDA'): names are read
    case-insensitively, so their rows are one ticker's, and days they give different prices are dropped as
    conflicting. Unsaid, a second spelling's rows silently dropped every day of a ticker new to the lake."""
    spellings = names.drop_nulls().unique().to_frame("name").group_by(pl.col("name").str.to_uppercase().alias("t"))
    twice = spellings.agg(pl.col("name").sort()).filter(pl.col("name").list.len() > 1).sort("t")
    return [
        Finding(
            ticker,
            None,
            "ticker_spelling",
            "read as one",
            f"{where} names it {' and '.join(map(repr, spelt))}: ticker names are case-insensitive, so their rows are "
            "this ticker's (a day they give different prices is dropped as conflicting)",
            warn=True,
        )
        for ticker, spelt in twice.iter_rows()
    ]


def normalise_long(raw: pl.DataFrame, *, source: str, where: str) -> pl.DataFrame:
    """`normalise` without its findings (for sources that are numeric by construction: yfinance, Yahoo CSVs)."""
    return normalise(raw, source=source, where=where)[0]


def normalise(raw: pl.DataFrame, *, source: str, where: str, head: bool = False) -> tuple[pl.DataFrame, list[Finding]]:
    """Rename aliased columns, parse dates and numbers, conform to the lake schema.

    A price cell that is not a number becomes null (validation then repairs or rejects that ticker's row)
    and is reported per ticker; so is a row whose date cannot be parsed (dropped; see `_parse_dates`). `head`:
    `raw` is a file's first rows, read to find a file in the wrong format before anything starts.
    """
    _named_alike(raw.columns, where)
    lower = {c.lower().strip(): c for c in raw.columns}
    rename: dict[str, str] = {}
    for target, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lower:
                rename[lower[alias]] = target
                break
    _misspelt(raw.columns, rename, where, head)
    frame = raw.rename(rename)
    if "close" not in frame.columns and "adj_close" in frame.columns:  # a wide file: adjusted closes only
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("close"))
    missing = [c for c in ("date", "ticker", "close") if c not in frame.columns]
    if missing == ["ticker"]:  # e.g. one symbol's yf.download frame saved without its Ticker level
        raise SourceError(
            f"{where}: missing required column 'ticker' (which symbol are these prices?); found {raw.columns}: "
            "add a ticker column, name its one symbol with --tickers SYMBOL, or save yf.download's frame with both "
            "its Price and Ticker header rows"
        )
    if missing:
        other = _other_separator(raw.columns)
        hint = f" (fields separated by {other!r}? write commas)" if other else ""
        raise SourceError(f"{where}: missing required columns {missing}; found {raw.columns}{hint}")
    # a row without a ticker is the ticker "" throughout (validation's finding names it): a null among the names
    # made sorting them fail, and counted apart from the tickers
    frame = frame.with_columns(pl.col("ticker").cast(pl.String).str.strip_chars())
    spelt = _spelt_twice(frame["ticker"], where)
    frame = frame.with_columns(pl.col("ticker").str.to_uppercase().fill_null(""))
    frame, dropped = _dates(frame, where, head)
    frame, unread = _parsed(frame)
    lost = _no_number(frame, unread, where, head)
    if lost:  # rows of a ticker whose prices hold no number: its finding says why, not its cells one by one
        kept = ~frame["ticker"].is_in([f.ticker for f in lost])
        frame, unread = frame.filter(kept), {c: text.filter(kept) for c, text in unread.items()}
    findings = spelt + dropped + lost + _cells(frame, unread, where)
    frame = frame.with_columns(pl.lit(source).alias("source"), pl.lit(datetime.now(UTC)).alias("ingested_at"))
    return conform(frame), findings


def _parsed(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.Series]]:
    """`frame` with its price and volume columns as numbers, and per column whose cells did not all read, the
    text of those cells (null elsewhere). One column at a time, each text column replaced as it is read: the
    whole file as text beside it as numbers was 1.8x the memory of a 2.5M-row file's read."""
    unread: dict[str, pl.Series] = {}
    for c in (c for c in VALUE_COLUMNS if c in frame.columns):
        numbers = _numbers(frame[c])
        bad = numbers.is_null() & frame[c].is_not_null()
        if bad.any():
            unread[c] = pl.select(pl.when(bad).then(frame[c].cast(pl.String))).to_series().alias(c)
        frame = frame.with_columns(numbers)
    return frame, unread


def _dates(frame: pl.DataFrame, where: str, head: bool) -> tuple[pl.DataFrame, list[Finding]]:
    """The date column as dates. A timestamp is its date on its own zone's clock (casting took the UTC date:
    Tokyo's or Berlin's midnight became the day before, silently); text and whole numbers (20240102) are parsed
    (`_parse_dates`); any other type is an error."""
    kind = frame.schema["date"]
    if kind == pl.Date:
        return frame, []
    if isinstance(kind, pl.Datetime):
        return frame.with_columns(pl.col("date").dt.date()), []
    if kind.is_integer():  # YYYYMMDD stored as a number; days or seconds since 1970 fail to parse, and say so
        frame = frame.with_columns(pl.col("date").cast(pl.String))
    elif kind != pl.String:
        raise SourceError(f"{where}: column 'date' holds {kind} values, not dates: write dates as YYYY-MM-DD")
    return _parse_dates(frame, where, head)


_PRICES = ("close", "adj_close")


def _no_number(frame: pl.DataFrame, unread: dict[str, pl.Series], where: str, head: bool) -> list[Finding]:
    """A quarantine per ticker whose close or adjusted close column holds values, none of them a number (decimal
    commas, say): read as missing, the column looked absent, and the other price stood for it without a word.
    Every ticker so: the file's format, an error, but only from the full read (the first rows may hold nothing
    yet for a price that starts later). An export's "no value" (`_MISSING`: NA, null) is no value given.
    `unread`: the text of the cells that did not read, per column (`_parsed`)."""
    found: dict[str, tuple[str, str]] = {}
    for c in (c for c in _PRICES if c in unread):
        text = unread[c]
        per = (
            pl.DataFrame({"ticker": frame["ticker"], "odd": pl.select(pl.when(_given(text)).then(text)).to_series()})
            .with_columns(read=frame[c].is_not_null())
            .group_by("ticker")
            .agg(pl.col("odd").drop_nulls().first().alias("example"), pl.col("read").any())
            .filter(pl.col("example").is_not_null() & ~pl.col("read"))
            .sort("ticker")
        )
        for ticker, example, _ in per.iter_rows():
            found.setdefault(ticker, (c, example))
    if found and not head and len(found) == frame["ticker"].n_unique():
        c, example = next(iter(found.values()))
        raise SourceError(f"{where}: column {c!r} holds no number, e.g. {example!r}{_number_hint(example)}")
    return [
        Finding(
            t,
            None,
            "non_numeric",
            "quarantined",
            f"column {c!r} holds no number for it in {where}, e.g. {example!r}{_number_hint(example)}",
        )
        for t, (c, example) in found.items()
    ]


_TARGET = {alias: target for target, aliases in _ALIASES.items() for alias in aliases}


_NEEDED = ("date", "ticker", "close", "adj_close")  # what a file's prices are read from: a miss here misreads it
_LIKE_A_CLOSE = re.compile(r"close|price|last", re.I)


def _misspelt(columns: Sequence[str], read: dict[str, str], where: str, head: bool) -> None:
    """A column nightcast does not read is an error where it would misread the file, else a warning naming it
    (once: not for the first rows read before anything starts). An error: a name nearly that of a date, ticker,
    close or adjusted close column the file lacks (a header `clsoe` made the file close-less and its adjusted
    close was published as the price, without a word), or, in a file with an adjusted close and no close, a
    column named like a close (`Close Price`, `Last`)."""
    known = set(_TARGET) | {"source", "ingested_at"}
    ignored = [c for c in columns if c not in read and c.lower().strip() not in known]
    found = set(read.values())
    needed = sorted(alias for alias, target in _TARGET.items() if target in _NEEDED and target not in found)
    for column in ignored:
        near = difflib.get_close_matches(column.lower().strip(), needed, n=1, cutoff=0.8)
        if near:
            raise SourceError(
                f"{where}: column {column!r} is not one nightcast reads: did you mean {near[0]!r}? "
                f"(it reads {', '.join(_ALIASES)})"
            )
        if "close" not in found and "adj_close" in found and _LIKE_A_CLOSE.search(column):
            raise SourceError(
                f"{where}: no close column, and column {column!r} is not read: name the traded close 'close' "
                "(or drop the column if the file holds adjusted closes only)"
            )
    if ignored and not head:
        log.warning("%s: %s not read (nightcast reads %s)", where, _columns(ignored), ", ".join(_ALIASES))


def _columns(names: Sequence[str]) -> str:
    shown = ", ".join(repr(c) for c in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"column {shown}" if len(names) == 1 else f"columns {shown}"


def _parse_dates(frame: pl.DataFrame, where: str, head: bool = False) -> tuple[pl.DataFrame, list[Finding]]:
    """Dates written as text, parsed as YYYY-MM-DD (a time after the date is ignored) or YYYYMMDD.

    An empty cell stays null: validation drops the row (`missing_date`). Otherwise, from the widest to the
    narrowest: half the rows or more unparsed is a file in another format (day/month order, say): an error naming
    how many and the first, before anything is stored. Half a ticker's rows or more quarantines that ticker (its
    dates in another format), not the file. The rest are typos (a stray "n/a", 2014-02-30): at most `DATE_TYPOS`
    of the rows (or one) are dropped, each ticker's with a warning, so one bad day never sinks the file; more is
    an error. `head` (the file's first rows only, read before anything starts): only the format is judged.
    """
    clean = pl.col("date").str.strip_chars()
    text = frame.select(pl.when(clean.str.len_chars() > 0).then(clean)).to_series()  # a blank cell is empty
    iso = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    compact = text.str.extract(r"^(\d{8})$").str.to_date("%Y%m%d", strict=False)  # 20240102: one reading only
    frame = frame.with_columns(pl.coalesce(iso, compact).alias("date"))
    failed = frame["date"].is_null() & text.is_not_null()
    count = int(failed.sum())
    if count == 0:
        return frame, []
    # a file's first rows may all be one ticker's (a long file sorted by ticker): that ticker is the full read's to
    # quarantine, not grounds to refuse the file
    # ... unless every unparsed date is a number (Excel's serial days, Unix time): no ticker's own format, the
    # file's, refused before anything starts however the file is sorted
    numbers = text.filter(failed).str.contains(r"^\s*[+-]?\d+(\.\d*)?\s*$").all()
    one_ticker_head = head and frame["ticker"].n_unique() <= 1 and not numbers
    if 2 * count >= frame.height and not one_ticker_head:
        raise SourceError(f"{where}: {count} of {frame.height} rows have a date that {_unparsed(text.filter(failed))}")
    marked = frame.select(pl.col("ticker").fill_null("").alias("who"), text.alias("text"), failed.alias("failed"))
    per = marked.group_by("who").agg(
        pl.len().alias("rows"), pl.col("failed").sum().alias("n"), pl.col("text").filter("failed").alias("bad")
    )
    per = per.filter(pl.col("n") > 0).sort("who")
    found, lost = [], []
    for who, rows, n, bad in per.iter_rows():
        if 2 * n >= rows:
            why = f"{n} of its {rows} rows have a date that {_unparsed(pl.Series(bad))}, in {where}"
            found.append(Finding(who, None, "bad_date", "quarantined", why, n))
            lost.append(who)
        else:
            why = f"{n} rows whose date could not be parsed (expected YYYY-MM-DD), the first {bad[0]!r}, in {where}"
            found.append(Finding(who, None, "bad_date", "dropped", why, n, warn=True))
    typos = sum(f.count for f in found if f.action == "dropped")
    if not head and typos > max(1, int(DATE_TYPOS * frame.height)):
        everywhere = text.filter(failed & ~marked["who"].is_in(lost))
        raise SourceError(f"{where}: {typos} rows (over {DATE_TYPOS:.0%}) have a date that {_unparsed(everywhere)}")
    return frame.filter(~failed & ~marked["who"].is_in(lost)), found


def _unparsed(values: pl.Series) -> str:
    """'could not be parsed ...' for dates `values` (text): how many distinct and the first, with a hint."""
    first = values[0]
    hint = ""
    if re.fullmatch(r"\s*\d{1,2}/\d{1,2}/\d{2,4}.*", first):
        hint = " (day/month or month/day order is ambiguous: write dates as YYYY-MM-DD)"
    elif re.fullmatch(r"\s*[+-]?\d+(\.\d*)?\s*", first):
        hint = " (a number: Excel's serial days or Unix time? write dates as YYYY-MM-DD)"
    # distinct values: a wide file's date repeats once per ticker column after reshaping
    return f"could not be parsed (expected YYYY-MM-DD): {values.n_unique()} distinct, the first {first!r}{hint}"


def _cells(frame: pl.DataFrame, unread: dict[str, pl.Series], where: str) -> list[Finding]:
    """A finding per ticker with cells that are not numbers (read as missing), naming the first such cell; a
    warning when one is more than an export's "no value" (`_MISSING`: the rules then judge a price the file did
    give, and a run of them quarantines the ticker), as before a line of the log for an NA."""
    if not unread:
        return []
    texts = list(unread.values())
    rows = pl.DataFrame(
        {
            "ticker": frame["ticker"],
            "date": frame["date"],
            "odd": pl.select(pl.coalesce([pl.when(_given(t)).then(t) for t in texts])).to_series(),
            "cell": pl.select(pl.coalesce(texts)).to_series(),
        }
    ).filter(pl.col("cell").is_not_null())
    agg = rows.group_by("ticker").agg(
        pl.col("date").min(), pl.len().alias("n"), pl.col("odd").drop_nulls().first(), pl.col("cell").first()
    )
    return [
        Finding(
            t,
            d,
            "non_numeric",
            "read as missing",
            f"{n} rows with a price or volume that is not a number in {where}, the first "
            f"{odd or cell!r}{_number_hint(odd or cell)}"
            if odd is not None
            else f"{n} rows with a price or volume given as no value in {where}, the first {cell!r}",
            n,
            warn=odd is not None,
        )
        for t, d, n, odd, cell in agg.sort("ticker").iter_rows()
    ]


def read_yahoo_csv(path: Path, ticker: str) -> pl.DataFrame:
    """One symbol in Yahoo's CSV layout (`Date,Open,High,Low,Close,Adj Close,Volume`).

    Yahoo writes missing values as the string "null"; they become nulls here
    and are judged by validation.
    """
    raw = pl.read_csv(path, null_values=["null", "NaN", ""], infer_schema_length=10_000)
    return normalise_long(raw.with_columns(pl.lit(ticker).alias("ticker")), source="yahoo_csv", where=str(path))
