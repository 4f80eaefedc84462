"""Price sources: the bundled sample and price files (yfinance lives in `features.yahoo`).

Each returns a polars frame in the lake schema (`features.schema.LAKE_SCHEMA`).
Files come in two layouts:

- long: `date,ticker,close[,open,high,low,adj_close,volume]`, names case-insensitive;
- wide: a `date` column plus one column of adjusted closes per ticker, empty (or
  NaN) before a ticker's listing and after its delisting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from features.errors import SourceError
from features.schema import conform
from features.settings import SourceSettings

log = logging.getLogger("nightcast.features.sources")

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "sample" / "prices.parquet"

# Accepted spellings of each lake column in files (compared case-insensitively).
_ALIASES = {
    "date": ("date", "datetime", "timestamp"),
    "ticker": ("ticker", "symbol"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "adj_close": ("adj_close", "adj close", "adjclose", "adjusted_close"),
    "volume": ("volume",),
}


def load(settings: SourceSettings) -> pl.DataFrame:
    """Load prices from the sample or a file, filtered to `settings.tickers`."""
    if settings.kind == "sample":
        frame = load_sample()
    elif settings.kind == "file":
        assert settings.path is not None  # enforced by SourceSettings
        frame = load_file(settings.path)
    else:
        raise SourceError("yfinance is fetched incrementally against the lake: use features.ingest.ingest")
    return select_tickers(frame, settings.tickers)


def select_tickers(frame: pl.DataFrame, tickers: Sequence[str]) -> pl.DataFrame:
    """Keep only `tickers` (all when empty); a requested ticker absent from the source is an error."""
    if not tickers:
        return frame
    present = set(frame["ticker"].unique().to_list())
    missing = [t for t in tickers if t not in present]
    if missing:
        raise SourceError(f"tickers not in the source: {missing}; available: {sorted(present)}")
    return frame.filter(pl.col("ticker").is_in(list(tickers)))


def load_sample(path: Path = SAMPLE_PATH) -> pl.DataFrame:
    """The bundled real sample (5 US series, lake schema, ending 2014-12-31)."""
    if not path.exists():
        raise SourceError(f"bundled sample not found at {path}; is this a full checkout of nightcast?")
    return conform(pl.read_parquet(path))


def load_file(path: Path) -> pl.DataFrame:
    """Read a CSV or Parquet price file in long or wide layout (module docstring).

    Column names are matched case-insensitively; `adj_close` defaults to `close`.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"price file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            raw = pl.read_parquet(path)
        elif suffix in (".csv", ".txt"):
            raw = pl.read_csv(path, infer_schema_length=10_000, try_parse_dates=False)
        else:
            raise SourceError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from exc
    if _is_wide(raw):
        return normalise_long(wide_to_long(raw, where=str(path)), source=f"file:{path.name}", where=str(path))
    return normalise_long(raw, source=f"file:{path.name}", where=str(path))


def _is_wide(raw: pl.DataFrame) -> bool:
    lower = {c.lower().strip() for c in raw.columns}
    return "date" in lower and not lower & {"ticker", "symbol"} and not lower & {"close", "adj_close", "adj close"}


def wide_to_long(raw: pl.DataFrame, *, where: str) -> pl.DataFrame:
    """`date` + one adjusted-close column per ticker -> long rows (close = adj_close: that is all a wide file has).

    Empty cells before a ticker's first and after its last price are not rows;
    gaps in between stay (as nulls) for validation to repair or reject.
    """
    date_col = next(c for c in raw.columns if c.lower().strip() == "date")
    value_cols = [c for c in raw.columns if c != date_col]
    if not value_cols:
        raise SourceError(f"{where}: wide layout needs one price column per ticker besides '{date_col}'")
    try:
        values = raw.select(pl.col(date_col).alias("date"), *(pl.col(c).cast(pl.Float64) for c in value_cols))
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"{where}: non-numeric values in wide price columns: {exc}") from exc
    long = values.unpivot(index="date", variable_name="ticker", value_name="adj_close").with_columns(
        pl.col("adj_close").fill_nan(None)
    )
    seen = pl.col("adj_close").is_not_null()
    listed = (seen.cum_sum().over("ticker") > 0) & (seen.cum_sum(reverse=True).over("ticker") > 0)
    return long.filter(listed).with_columns(pl.col("adj_close").alias("close"))


def normalise_long(raw: pl.DataFrame, *, source: str, where: str) -> pl.DataFrame:
    """Rename aliased columns, parse dates, fill `adj_close`, and conform to the lake schema."""
    lower = {c.lower().strip(): c for c in raw.columns}
    rename: dict[str, str] = {}
    for target, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lower:
                rename[lower[alias]] = target
                break
    frame = raw.rename(rename)
    missing = [c for c in ("date", "ticker", "close") if c not in frame.columns]
    if missing:
        raise SourceError(f"{where}: missing required columns {missing}; found {raw.columns}")
    if frame.schema["date"] == pl.String:
        frame = frame.with_columns(
            pl.col("date").str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
        )
        if frame["date"].null_count():
            raise SourceError(f"{where}: {frame['date'].null_count()} dates could not be parsed (expected YYYY-MM-DD)")
    elif frame.schema["date"] != pl.Date:
        frame = frame.with_columns(pl.col("date").cast(pl.Date))
    if "adj_close" not in frame.columns:
        frame = frame.with_columns(pl.col("close").alias("adj_close"))
    numeric = [c for c in ("open", "high", "low", "close", "adj_close", "volume") if c in frame.columns]
    try:
        frame = frame.with_columns(pl.col(c).cast(pl.Float64) for c in numeric)
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"{where}: non-numeric values in price columns {numeric}: {exc}") from exc
    frame = frame.with_columns(
        pl.col("ticker").cast(pl.String).str.strip_chars().str.to_uppercase(),
        pl.lit(source).alias("source"),
        pl.lit(datetime.now(UTC)).alias("ingested_at"),
    )
    return conform(frame)


def read_yahoo_csv(path: Path, ticker: str) -> pl.DataFrame:
    """One symbol in Yahoo's CSV layout (`Date,Open,High,Low,Close,Adj Close,Volume`).

    Yahoo writes missing values as the string "null"; they become nulls here
    and are judged by validation.
    """
    raw = pl.read_csv(path, null_values=["null", "NaN", ""], infer_schema_length=10_000)
    return normalise_long(raw.with_columns(pl.lit(ticker).alias("ticker")), source="yahoo_csv", where=str(path))
