"""yfinance source: batched, incremental, retried with backoff, and honest about failures.

yfinance 1.7 fetches one chart request per symbol; `download` runs them on a
thread pool and never raises for a failed symbol: it leaves all-NaN columns,
logs "N Failed downloads" with the reason, and returns an empty frame when
nothing at all came back (e.g. offline). It also hides a symbol's transport
error (a timeout, a refused connection) behind the same "possibly delisted"
as an unknown symbol. This module calls it per chunk of tickers, caps its
concurrent requests, reads the reasons from its log, asks the network itself
what a failed symbol's request really answers (`network_cause`), and retries
transient failures (rate limits, timeouts, connection errors); a symbol that
Yahoo answers without data (unknown, delisted) is final.
"""

from __future__ import annotations

import ast
import logging
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from features.prices.schema import conform
from features.settings import IngestSettings
from nightcast.errors import SourceError

log = logging.getLogger("nightcast.features.prices.yahoo")

# Reasons worth another attempt; anything else (unknown symbol, delisted) is final.
_TRANSIENT = re.compile(
    r"rate ?limit|too many requests|timed? ?out|timeout|connection|could not resolve|temporar|reset|503|502|500"
    r"|the download raised",
    re.I,
)


@dataclass
class FetchResult:
    frame: pl.DataFrame
    failed: dict[str, str] = field(default_factory=dict)  # ticker -> last reason
    attempts: int = 0


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt))."""
    return rng.uniform(0.0, min(cap, base * 2**attempt))


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


class _FailureLog(logging.Handler):
    """Collects yfinance's "['SYM', ...]: reason" error lines."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        match = re.match(r"^(\[.*?\]):\s*(.*)$", message, re.S)
        if not match:
            return
        try:
            symbols = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            return
        for sym in symbols:
            self.reasons[str(sym)] = match.group(2).strip()


@contextmanager
def _capture_failures() -> Iterator[_FailureLog]:
    handler = _FailureLog()
    yf_logger = logging.getLogger("yfinance")
    # yfinance's own lines ("ERROR ... $MSFT: possibly delisted" for a symbol then retried and stored, and empty
    # ERROR lines) stay out of the console: nightcast reads them here and says what failed, after its retries
    yf_logger.propagate = False
    yf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas deprecation chatter from inside yfinance
            yield handler
    finally:
        yf_logger.removeHandler(handler)


_cache_lock = threading.Lock()
_cache_dir: str | None = None  # where this process last pointed yfinance's caches


def configure_cache(cache_dir: Path) -> None:
    """Keep yfinance's timezone/cookie cache inside the project instead of the user's home.

    Idempotent and locked: every parallel ingest chunk calls it with the same folder while other chunks'
    download threads use the caches, which must then be left alone (re-pointing them under those threads
    raised "Connection already opened" by the thousand in a reviewer's stress test)."""
    global _cache_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _cache_lock:
        if _cache_dir != str(cache_dir):
            _point_caches(str(cache_dir))
            _cache_dir = str(cache_dir)


def _point_caches(location: str) -> None:
    import yfinance as yf
    from yfinance import cache

    yf.set_tz_cache_location(location)
    # yfinance 1.7 keeps each cache object, and the database handle it opened first, for the life of the
    # process: a second call (another data dir in one process: a test worker, a replay beside a run) would
    # otherwise go on writing into the first directory, from several download threads at once ("database
    # is locked"). Dropping the objects makes the next lookup open the new location.
    for manager, attr in (
        ("_TzCacheManager", "_tz_cache"),
        ("_CookieCacheManager", "_Cookie_cache"),
        ("_ISINCacheManager", "_isin_cache"),
    ):
        if hasattr(getattr(cache, manager, None), attr):
            setattr(getattr(cache, manager), attr, None)
    # Create the new databases here, in one thread: left to the download's thread pool, two threads switch
    # a fresh file to WAL and create its tables at once, and one of them fails its ticker with "database is
    # locked".
    cache.get_tz_cache().lookup("")
    cache.get_cookie_cache().lookup("")


_slots_lock = threading.Lock()
_slots: int | None = None  # the request cap this process's yfinance pool was last given
_sequential = threading.Lock()  # a cap of 1: one download at a time, its symbols one after another


def _request_slots(cap: int) -> int | bool:
    """What to pass `yf.download` as `threads` for at most `cap` chart requests at once in this process.

    yfinance's `threads=n` does not cap anything: its requests run on the `multitasking` package's pool, made
    once when yfinance is imported (one slot per CPU core) and shared by every download of the process (the
    parallel ingest chunks included); `set_max_threads` only sizes pools made later. So the cap is a pool of our
    own with `cap` slots, made active for every download of the process. That package reads a pool of fewer
    than 2 slots as unlimited: a cap of 1 downloads without threads instead (`_one_at_a_time`)."""
    global _slots
    if cap < 2:
        return False
    import multitasking

    with _slots_lock:
        if _slots != cap or multitasking.config["POOL_NAME"] != f"nightcast-{cap}":
            multitasking.createPool(name=f"nightcast-{cap}", threads=cap)
            _slots = cap
    return cap


@contextmanager
def _one_at_a_time(threads: int | bool) -> Iterator[None]:
    """Without threads (a cap of 1), downloads of parallel chunks take turns: one request at a time in all."""
    if threads:
        yield
        return
    with _sequential:
        yield


def download_chunk(tickers: list[str], start: date, settings: IngestSettings) -> tuple[pl.DataFrame, dict[str, str]]:
    """One yfinance call for `tickers` from `start`: (rows in the lake schema, failure reasons)."""
    import yfinance as yf

    threads = _request_slots(settings.max_concurrent)
    with _capture_failures() as failures, _one_at_a_time(threads):
        try:
            raw = yf.download(
                tickers,
                start=start.isoformat(),
                auto_adjust=False,
                actions=False,
                group_by="column",
                progress=False,
                threads=threads,
                timeout=settings.timeout,
            )
        except Exception as exc:  # yfinance raises only for whole-call failures; treat them as transient
            reason = f"the download raised {exc!r}"
            return conform(pl.DataFrame(schema={"ticker": pl.String})), dict.fromkeys(tickers, reason)
    frame = from_yfinance(raw)
    got = set(frame["ticker"].unique().to_list()) if not frame.is_empty() else set()
    reasons = {t: failures.reasons.get(t, "no rows returned") for t in tickers if t not in got}
    return frame, reasons


def network_cause(symbol: str, start: date, timeout: float) -> str | None:
    """Why a failed symbol's request may succeed on another attempt, or None when Yahoo has no data for it.

    yfinance swallows a symbol's transport error (a timeout, a refused connection) and Yahoo's own errors, and
    reports "possibly delisted" as for an unknown symbol. One plain chart request for the same days, through
    yfinance's own session, tells them apart: only an answer that is a chart without any day (Yahoo's 404 "No data
    found", or a chart with no timestamp) says the symbol has nothing to give; a request that raises, an HTTP
    error of Yahoo's (5xx), an answer that is not a chart, or a chart with days are worth another attempt."""
    from yfinance.data import YfData

    url = f"https://query2.finance.yahoo.com/v8/finance/chart/{symbol}"
    period = {"period1": int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())}
    period["period2"] = int(time.time())
    try:
        answer = YfData().get(url, params={**period, "interval": "1d"}, timeout=timeout)
    except Exception as exc:  # whatever the transport raised is the answer
        return f"{type(exc).__name__}: {str(exc).split(' See https://', 1)[0]}"
    status = getattr(answer, "status_code", 200)
    if status >= 500 or status == 429:
        return f"Yahoo answered HTTP {status} for {symbol}"
    try:
        chart = answer.json()["chart"]
        days = (chart["result"] or [{}])[0].get("timestamp")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return f"Yahoo's answer for {symbol} (HTTP {status}) is not a chart"
    return f"a second request for {symbol} got {len(days)} days: the first failed in passing" if days else None


def fetch(
    starts: dict[str, date],
    settings: IngestSettings,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> FetchResult:
    """Download every ticker of `starts` from its start date, in chunks, retrying transient failures.

    Tickers sharing a start date share chunks (an incremental nightly run asks for
    the same few days for most of the universe).
    """
    rng = rng or random.Random()
    frames: list[pl.DataFrame] = []
    failed: dict[str, str] = {}
    attempts = 0
    by_start: dict[date, list[str]] = {}
    for ticker, start in sorted(starts.items()):
        by_start.setdefault(start, []).append(ticker)
    for start, group in sorted(by_start.items()):
        for chunk in chunks(group, settings.chunk_size):
            pending = chunk
            for attempt in range(settings.retries + 1):
                attempts += 1
                frame, reasons = download_chunk(pending, start, settings)
                if not frame.is_empty():
                    frames.append(frame)
                for t in pending:
                    failed.pop(t, None)
                reasons, retry = _with_causes(reasons, frame.is_empty(), start, settings.timeout)
                failed.update(reasons)
                if not retry or attempt == settings.retries:
                    break
                delay = backoff_delay(attempt, settings.backoff, settings.backoff_max, rng)
                log.warning(
                    "yfinance: %d tickers failed transiently (%s); retry %d/%d in %.1fs",
                    len(retry),
                    reasons[retry[0]][:200],
                    attempt + 1,
                    settings.retries,
                    delay,
                )
                sleep(delay)
                pending = retry
    frame = pl.concat(frames) if frames else conform(pl.DataFrame(schema={"ticker": pl.String}))
    return FetchResult(frame, failed, attempts)


PROBES = 3  # symbols `_with_causes` asks about per attempt


def _with_causes(
    reasons: dict[str, str], nothing_back: bool, start: date, timeout: float
) -> tuple[dict[str, str], list[str]]:
    """Failure reasons with what the network really answered where yfinance's may hide it, and which of the
    tickers are worth another attempt.

    yfinance swallows a symbol's transport error and reports "possibly delisted" (and a batch where nothing came
    back is how it reports being offline): one plain request per such symbol (`network_cause`) says whether Yahoo
    has no data for it (final) or the first request failed in passing (retried). At most `PROBES` symbols are
    asked per attempt, the rest going with them (retried if any asked one failed in passing); when a whole batch
    came back empty, the first symbol's answer stands for the batch. A reason that already names a transient
    failure (a rate limit, a whole call that raised) is retried without asking."""
    transient = [t for t, why in reasons.items() if _TRANSIENT.search(why)]
    hidden = [t for t in reasons if t not in transient]
    if nothing_back:
        cause = network_cause(hidden[0], start, timeout) if hidden else None
        if cause is None:
            return reasons, transient
        why = "nothing came back for the whole batch (offline or blocked?): "
        return {t: f"{why}{cause} / {reason}" for t, reason in reasons.items()}, list(reasons)
    # a few symbols asked, not every one: on a degraded network each probe may take the whole timeout
    causes = {t: network_cause(t, start, timeout) for t in hidden[:PROBES]}
    unasked = hidden[PROBES:]
    if unasked and any(causes.values()):  # the network failed the ones asked: the others are retried too
        cause = next(c for c in causes.values() if c)
        causes |= dict.fromkeys(unasked, f"not asked; a symbol asked beside it failed in passing ({cause})")
    failed = [t for t, cause in causes.items() if cause is not None]
    told = {t: f"{causes[t]} (yfinance: {why})" if causes.get(t) else why for t, why in reasons.items()}
    return told, transient + failed


def from_yfinance(raw) -> pl.DataFrame:
    """Convert `yf.download(..., auto_adjust=False)` output to the lake schema.

    yfinance 1.7 returns a pandas frame indexed by `Date` with MultiIndex
    columns `(Price, Ticker)` (or `(Ticker, Price)` with group_by="ticker"),
    all-NaN columns for symbols that failed, and an empty frame when nothing
    could be fetched. Rows without a close (a ticker with no bar that day) are
    dropped; `close` and `adj_close` are kept apart.
    """
    from features.prices.sources import normalise_long

    if raw is None or len(raw) == 0:
        return conform(pl.DataFrame(schema={"ticker": pl.String}))
    frame = yfinance_rows(raw, where="yfinance")
    return normalise_long(frame.with_columns(pl.col("date").cast(pl.Date)), source="yfinance", where="yfinance")


def yfinance_rows(raw, *, where: str) -> pl.DataFrame:
    """A `yf.download` frame's (Price, Ticker) columns as long rows `date, ticker, Close, ...` (yfinance's
    names), only the rows with a close: a symbol's empty cells before its listing are not days it traded."""
    columns = raw.columns
    if getattr(columns, "nlevels", 1) != 2:
        raise SourceError(f"{where}: unexpected yfinance frame: columns {list(columns)[:8]} are not (Price, Ticker)")
    price_level = 0 if "Close" in columns.get_level_values(0) else 1
    long = raw.stack(level=1 - price_level, future_stack=True)  # rows (Date, Ticker), columns Price
    long.index = long.index.set_names(["date", "ticker"])
    long = long.reset_index()
    long.columns = [str(c) for c in long.columns]
    frame = pl.from_pandas(long)  # NaN becomes null here
    if "Close" not in frame.columns:
        raise SourceError(f"{where}: unexpected yfinance frame: no 'Close' column in {frame.columns}")
    return frame.filter(pl.col("Close").is_not_null())


# What `yf.download(...).to_csv()` writes above its rows: its two column levels (either order), then the index's name.
_EXPORT_LEVELS = {"price", "ticker"}
_TUPLE_NAME = re.compile(r"^\('[^']*', '[^']*'\)$")  # how a pandas MultiIndex column is named in Parquet


def is_export(path: Path, columns: Sequence[str] = ()) -> bool:
    """Whether `path` is a `yf.download` frame saved by pandas: a CSV with its `Price` and `Ticker` header rows,
    or a Parquet file whose columns (`columns`, as polars read them) are pandas' `('Close', 'AAPL')` tuples."""
    if path.suffix.lower() == ".parquet":
        return any(_TUPLE_NAME.match(c) for c in columns)
    with open(path, encoding="utf-8-sig", errors="replace") as f:  # -sig: Excel's byte-order mark is no name
        first = [f.readline().split(",", 1)[0].strip().lower() for _ in range(2)]
    return set(first) == _EXPORT_LEVELS


def read_export(path: Path) -> pl.DataFrame:
    """A saved `yf.download` frame as long rows with yfinance's column names (`yfinance_rows`).

    Read back the way pandas wrote it (two header levels, the date index); dates stay text here so that the
    file's own reader parses and judges them, and only an empty cell is missing: text such as "n/a" is reported
    where it stands, as in any other file. Without an `Adj Close` column (yfinance's default
    auto_adjust=True) `Close` is already adjusted, and ingest takes it for the adjusted close too."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            raw = pd.read_parquet(path)
        else:
            raw = pd.read_csv(
                path, header=[0, 1], index_col=0, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig"
            )
    except (ValueError, OSError) as exc:
        raise SourceError(f"{path}: cannot read as a saved yf.download frame: {exc}") from exc
    frame = yfinance_rows(raw, where=str(path))
    if "Adj Close" not in frame.columns:
        log.info("%s: no 'Adj Close' column (yfinance's auto_adjust=True): its Close is read as adjusted", path)
    return frame
