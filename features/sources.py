"""Price sources: the bundled sample, a long-layout file, yfinance.

Each returns a polars frame in the lake schema (`features.schema.LAKE_SCHEMA`).
Pandas stops at this boundary: yfinance's frames are converted here.
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
    """Load prices from the source `settings` names, filtered to `settings.tickers`."""
    if settings.kind == "sample":
        frame = load_sample()
    elif settings.kind == "file":
        assert settings.path is not None  # enforced by SourceSettings
        frame = load_file(settings.path)
    else:
        frame = load_yfinance(settings.tickers, start=settings.start)
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
    """Read a long-layout CSV or Parquet file: `date,ticker,close[,open,high,low,adj_close,volume]`.

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
    return normalise_long(raw, source=f"file:{path.name}", where=str(path))


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
        pl.col("ticker").cast(pl.String).str.strip_chars(),
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


def load_yfinance(tickers: Sequence[str], *, start: str) -> pl.DataFrame:
    """Download daily bars for `tickers` from yfinance (unadjusted close and adj close both kept)."""
    import yfinance as yf  # imported lazily: slow, and only this source needs it

    raw = yf.download(
        list(tickers),
        start=start,
        auto_adjust=False,
        actions=False,
        group_by="column",
        progress=False,
        threads=False,
        timeout=30,
    )
    frame = from_yfinance(raw)
    if frame.is_empty():
        raise SourceError(f"yfinance returned no data for {list(tickers)} (offline, rate-limited, or unknown symbols)")
    got = set(frame["ticker"].unique().to_list())
    lost = [t for t in tickers if t not in got]
    if lost:
        log.warning("yfinance returned no rows for %s", lost)
    return frame


def from_yfinance(raw) -> pl.DataFrame:
    """Convert `yf.download(..., auto_adjust=False)` output to the lake schema.

    yfinance 1.7 returns a pandas frame indexed by `Date` with MultiIndex
    columns `(Price, Ticker)` (or `(Ticker, Price)` with group_by="ticker");
    an empty frame when nothing could be fetched. All-NaN rows (a ticker with
    no bar that day) are dropped.
    """
    if raw is None or len(raw) == 0:
        return conform(pl.DataFrame(schema={"ticker": pl.String, "date": pl.Date}))
    columns = raw.columns
    if getattr(columns, "nlevels", 1) != 2:
        raise SourceError(f"unexpected yfinance frame: columns {list(columns)[:8]} are not (Price, Ticker)")
    price_level = 0 if "Close" in columns.get_level_values(0) else 1
    long = raw.stack(level=1 - price_level, future_stack=True)  # rows (Date, Ticker), columns Price
    long.index = long.index.set_names(["date", "ticker"])
    long = long.reset_index()
    long.columns = [str(c) for c in long.columns]
    frame = pl.from_pandas(long)  # NaN becomes null here
    if "Close" not in frame.columns:
        raise SourceError(f"unexpected yfinance frame: no 'Close' column in {frame.columns}")
    frame = frame.filter(pl.col("Close").is_not_null())  # days a ticker did not trade
    return normalise_long(frame.with_columns(pl.col("date").cast(pl.Date)), source="yfinance", where="yfinance")
