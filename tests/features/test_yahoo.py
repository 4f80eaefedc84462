import random
import sqlite3
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import polars as pl
import pytest

from features.prices import yahoo
from features.prices.yahoo import backoff_delay, fetch, from_yfinance
from features.settings import IngestSettings
from tests.fake_yahoo import FakeResponse, FakeYahoo

FAST = IngestSettings(chunk_size=2, max_concurrent=2, retries=3, backoff=1.0, backoff_max=8.0)


def yfinance_frame(bars: dict[str, int | None]) -> pd.DataFrame:
    """Built the way yfinance 1.7's `download(..., auto_adjust=False, group_by='column')` builds it:
    one `history()` frame per ticker (an all-NaN `empty_df` for failures), concatenated
    under keys with names ['Ticker', 'Price'], levels swapped and sorted."""
    dates = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=5), name="Date")
    dfs = {}
    for i, (ticker, n) in enumerate(bars.items()):
        if n is None:  # failed / unknown symbol
            dfs[ticker] = pd.DataFrame(
                index=pd.DatetimeIndex([], name="Date"),
                data={c: np.nan for c in ("Open", "High", "Low", "Close", "Adj Close", "Volume")},
            )
            continue
        close = 100.0 + i * 10 + np.arange(5)
        df = pd.DataFrame(
            {
                "Open": close - 0.5,
                "High": close + 1,
                "Low": close - 1,
                "Close": close,
                "Adj Close": close * 0.98,
                "Volume": np.full(5, 1e6),
            },
            index=dates,
        )
        df.iloc[n:] = np.nan  # fewer bars: trailing all-NaN rows after the concat
        dfs[ticker] = df.iloc[:n]
    data = pd.concat(dfs.values(), axis=1, sort=True, keys=dfs.keys(), names=["Ticker", "Price"])
    data.columns = data.columns.swaplevel(0, 1)
    data = data.sort_index(level=0, axis=1)
    return data


def test_yfinance_multiindex_to_lake_schema():
    raw = yfinance_frame({"AAPL": 5, "MSFT": 3, "DELISTED": None})
    assert raw.columns.names == ["Price", "Ticker"]
    frame = from_yfinance(raw)
    assert frame.columns[:8] == ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
    counts = dict(frame.group_by("ticker").len().iter_rows())
    assert counts == {"AAPL": 5, "MSFT": 3}  # NaN rows and the failed symbol dropped
    aapl = frame.filter(pl.col("ticker") == "AAPL").sort("date")
    assert aapl["close"].to_list() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert aapl["adj_close"][0] == pytest.approx(98.0)  # close and adj_close kept apart
    assert aapl["date"][0].isoformat() == "2024-01-02"


def test_yfinance_ticker_grouped_and_empty():
    raw = yfinance_frame({"AAPL": 5})
    raw.columns = raw.columns.swaplevel(0, 1)  # group_by="ticker"
    assert from_yfinance(raw).height == 5
    assert from_yfinance(pd.DataFrame()).is_empty()  # what 1.7 returns offline


@pytest.fixture
def fake(monkeypatch, tmp_path):
    listed = {
        "AAPL": (date(2024, 1, 2), date(2024, 3, 28)),
        "MSFT": (date(2024, 1, 2), date(2024, 3, 28)),
        "NVDA": (date(2024, 2, 1), date(2024, 3, 28)),
        "ORCL": (date(2024, 1, 2), date(2024, 3, 28)),
        "OLD": (date(2024, 1, 2), date(2024, 1, 31)),
    }
    return FakeYahoo(listed).install(monkeypatch, tmp_path / "yf-cache")


def test_real_yfinance_code_through_the_fake_network(fake):
    one_chunk = FAST.model_copy(update={"chunk_size": 3})
    result = fetch({t: date(2024, 3, 1) for t in ("AAPL", "MSFT", "NOPE")}, one_chunk, sleep=lambda s: None)
    counts = dict(result.frame.group_by("ticker").len().iter_rows())
    assert counts == {"AAPL": 20, "MSFT": 20}  # 2024-03-01 .. 2024-03-28 business days
    assert set(result.failed) == {"NOPE"}
    assert "possibly delisted" in result.failed["NOPE"]  # Yahoo answers 404 for unknown symbols: final, not retried
    assert result.attempts == 1  # the unknown symbol in a healthy batch is not retried
    aapl = result.frame.filter(pl.col("ticker") == "AAPL").sort("date")
    assert aapl["adj_close"].to_numpy() == pytest.approx(aapl["close"].to_numpy() * 0.99)  # kept apart
    assert aapl["date"][0] == date(2024, 3, 1) and aapl["source"][0] == "yfinance"


def test_chunks_share_a_start_and_respect_the_size(fake, monkeypatch):
    seen = []
    real = yahoo.download_chunk
    monkeypatch.setattr(yahoo, "download_chunk", lambda t, s, c: seen.append((tuple(t), s)) or real(t, s, c))
    starts = {"AAPL": date(2024, 3, 1), "MSFT": date(2024, 3, 1), "ORCL": date(2024, 3, 1), "NVDA": date(2024, 3, 20)}
    fetch(starts, FAST, sleep=lambda s: None)
    assert seen == [(("AAPL", "MSFT"), date(2024, 3, 1)), (("ORCL",), date(2024, 3, 1)), (("NVDA",), date(2024, 3, 20))]


def test_rate_limits_are_retried_with_jittered_backoff(fake):
    fake.rate_limited = {"AAPL": 2}
    sleeps = []
    result = fetch(
        {"AAPL": date(2024, 3, 20), "MSFT": date(2024, 3, 20)}, FAST, sleep=sleeps.append, rng=random.Random(0)
    )
    assert result.failed == {}
    assert sorted(result.frame["ticker"].unique().to_list()) == ["AAPL", "MSFT"]
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0
    assert len(fake.history_requests("MSFT")) == 1  # only the failed ticker is asked again


def test_gives_up_after_the_retries(fake):
    fake.rate_limited = {"AAPL": 99}
    sleeps = []
    result = fetch({"AAPL": date(2024, 3, 20)}, FAST, sleep=sleeps.append)
    assert "Rate limited" in result.failed["AAPL"] and len(sleeps) == FAST.retries
    assert result.attempts == FAST.retries + 1


def test_offline_returns_nothing_and_says_why(fake):
    fake.offline = True
    sleeps = []
    result = fetch({"AAPL": date(2024, 3, 20), "MSFT": date(2024, 3, 20)}, FAST, sleep=sleeps.append)
    assert result.frame.is_empty()
    # yfinance 1.7 itself calls this "possibly delisted"; a whole empty batch is treated as the network
    assert set(result.failed) == {"AAPL", "MSFT"}
    assert "offline or blocked" in result.failed["AAPL"]
    assert result.attempts == FAST.retries + 1 and len(sleeps) == FAST.retries


def test_backoff_is_capped_full_jitter():
    rng = random.Random(1)
    delays = [backoff_delay(a, 2.0, 10.0, rng) for a in range(8) for _ in range(50)]
    assert max(delays) <= 10.0 and min(delays) >= 0.0
    assert len({round(d, 6) for d in delays}) > 300  # jittered, not a fixed schedule


def test_a_second_cache_location_is_really_used(fake, tmp_path):
    """yfinance keeps the first cache database open for the process; `configure_cache` must move it, or two
    data dirs in one process share (and lock) the first one's database."""
    fetch({"AAPL": date(2024, 3, 20)}, FAST, sleep=lambda s: None)
    first = tmp_path / "yf-cache" / "tkr-tz.db"
    assert first.exists()
    yahoo.configure_cache(tmp_path / "second")
    fetch({"MSFT": date(2024, 3, 20)}, FAST, sleep=lambda s: None)

    def keys(path):
        with sqlite3.connect(path) as db:
            return {k for (k,) in db.execute("select key from _tz_kv")}

    assert keys(tmp_path / "second" / "tkr-tz.db") == {"MSFT"}
    assert "MSFT" not in keys(first)


def test_configuring_the_same_cache_again_leaves_it_alone(fake, tmp_path):
    """Parallel ingest chunks each configure the same folder while the others' download threads use the cache."""
    from yfinance import cache

    fetch({"AAPL": date(2024, 3, 20)}, FAST, sleep=lambda s: None)
    before = cache.get_tz_cache()
    yahoo.configure_cache(tmp_path / "yf-cache")
    assert cache.get_tz_cache() is before
    yahoo.configure_cache(tmp_path / "elsewhere")
    assert cache.get_tz_cache() is not before


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("grouped", [False, True], ids=["by_column", "by_ticker"])
def test_a_saved_yf_download_frame_reads_as_yfinance_does(tmp_path, suffix, grouped):
    """A new-user review: `yf.download(...).to_csv()` (two header rows, then the index's name) was refused with
    "missing required columns". It reads like the frame itself, as a file source."""
    from features.prices.sources import read_file

    raw = yfinance_frame({"AAPL": 5, "MSFT": 3, "DELISTED": None})
    if grouped:
        raw.columns = raw.columns.swaplevel(0, 1)
    path = tmp_path / f"yf.{suffix}"
    raw.to_csv(path) if suffix == "csv" else raw.to_parquet(path)
    frame, findings = read_file(path)
    assert findings == []
    want = from_yfinance(yfinance_frame({"AAPL": 5, "MSFT": 3, "DELISTED": None}))
    cols = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
    assert frame.select(cols).sort("ticker", "date").equals(want.select(cols).sort("ticker", "date"))
    assert frame["source"].unique().to_list() == [f"file:yf.{suffix}"]


def test_a_saved_export_with_a_bad_cell_keeps_the_ticker_and_says_where(tmp_path):
    from features.prices.sources import read_file

    path = tmp_path / "yf.csv"
    yfinance_frame({"AAPL": 5, "MSFT": 5}).to_csv(path)
    lines = path.read_text().splitlines()
    cells = lines[4].split(",")  # the second day; column 3 is ("Adj Close", "MSFT")
    lines[4] = ",".join([*cells[:2], "n/a", *cells[3:]])
    path.write_text("\n".join(lines) + "\n")
    frame, findings = read_file(path)
    assert frame.height == 10 and frame.filter(pl.col("adj_close").is_null())["ticker"].to_list() == ["MSFT"]
    assert [(f.ticker, str(f.date), f.rule, f.action) for f in findings] == [
        ("MSFT", "2024-01-03", "non_numeric", "read as missing")
    ]


def test_an_auto_adjusted_export_ingests_its_close_as_the_adjusted_close(tmp_path):
    """yfinance's default auto_adjust=True writes no `Adj Close`: its `Close` is already adjusted."""
    from features.prices.ingest import ingest
    from features.settings import SourceSettings, ValidationSettings

    raw = yfinance_frame({"AAPL": 5}).drop(columns="Adj Close", level=0)
    path = tmp_path / "yf.csv"
    raw.to_csv(path)
    report = ingest(SourceSettings(kind="file", path=path), FAST, ValidationSettings(), tmp_path / "lake")
    aapl = report.prices.sort("date")
    assert aapl["adj_close"].to_list() == aapl["close"].to_list() == [100.0, 101.0, 102.0, 103.0, 104.0]


class _Flaky(FakeYahoo):
    """The next `timeouts[symbol]` price requests of a symbol time out, as curl_cffi raises it."""

    timeouts: dict[str, int] = {}

    def get(self, yfdata, url, params=None, timeout=30):
        symbol = url.rstrip("/").rsplit("/", 1)[-1]
        if params and "period1" in params and self.timeouts.get(symbol, 0) > 0:
            from curl_cffi.requests.exceptions import Timeout

            self.timeouts[symbol] -= 1
            self.calls.append((url, dict(params)))
            raise Timeout("Failed to perform, curl: (28) Operation timed out after 20001 milliseconds")
        return super().get(yfdata, url, params, timeout)


def test_a_timeout_yfinance_reports_as_possibly_delisted_is_retried(monkeypatch, tmp_path):
    """A reviewer's finding: yfinance hides a symbol's timeout behind "possibly delisted; no price data found",
    so one glitch cost a healthy ticker the night's bar, as final, with a misleading reason."""
    listed = {t: (date(2024, 1, 2), date(2024, 3, 28)) for t in ("AAPL", "MSFT")}
    fake = _Flaky(listed).install(monkeypatch, tmp_path / "yf-cache")
    fake.timeouts = {"MSFT": 1}
    sleeps = []
    result = fetch({"AAPL": date(2024, 3, 20), "MSFT": date(2024, 3, 20)}, FAST, sleep=sleeps.append)
    assert result.failed == {} and sorted(result.frame["ticker"].unique().to_list()) == ["AAPL", "MSFT"]
    assert result.attempts == 2 and len(sleeps) == 1
    fake.timeouts = {"MSFT": 99}  # down for good: retried, then reported with the network's own words
    result = fetch({"AAPL": date(2024, 3, 20), "MSFT": date(2024, 3, 20)}, FAST, sleep=lambda s: None)
    assert result.attempts == FAST.retries + 1 and "Timeout: " in result.failed["MSFT"]


def test_a_delisted_symbol_alone_in_its_batch_is_final_not_retried(fake):
    """A reviewer's finding: a delisted ticker sits alone in its start-date batch, which comes back empty: it was
    taken for the network being down ("offline or blocked?") and retried with backoff every night."""
    sleeps = []
    result = fetch({"NOPE": date(2024, 3, 20)}, FAST, sleep=sleeps.append)
    assert sleeps == [] and result.attempts == 1
    assert "offline" not in result.failed["NOPE"] and "possibly delisted" in result.failed["NOPE"]


@dataclass
class _Slow(FakeYahoo):
    """Counts the price requests in flight at once."""

    def __post_init__(self):
        import threading

        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def get(self, yfdata, url, params=None, timeout=30):
        import time

        if params and "period1" in params:
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(0.2)
            with self.lock:
                self.now -= 1
        return super().get(yfdata, url, params, timeout)


@pytest.mark.parametrize("cap", [1, 3])
def test_max_concurrent_caps_the_requests_in_flight(monkeypatch, tmp_path, cap):
    """A reviewer's finding: `threads=` of yf.download sizes nothing (its pool is made at import, one slot per
    core): the setting's cap was the machine's core count whatever it said."""
    symbols = [f"T{i}" for i in range(6)]
    fake = _Slow({s: (date(2024, 1, 2), date(2024, 3, 28)) for s in symbols}).install(monkeypatch, tmp_path / "c")
    settings = FAST.model_copy(update={"chunk_size": 6, "max_concurrent": cap})
    result = fetch(dict.fromkeys(symbols, date(2024, 3, 20)), settings, sleep=lambda s: None)
    assert result.failed == {} and result.frame["ticker"].n_unique() == 6
    assert fake.peak == cap


class _Outage(FakeYahoo):
    """Yahoo answers its own 503 to the next `failures` price requests."""

    failures = 0

    def get(self, yfdata, url, params=None, timeout=30):
        if params and "period1" in params and self.failures > 0:
            self.failures -= 1
            self.calls.append((url, dict(params)))
            error = {"code": "Internal Server Error", "description": "Service unavailable"}
            return FakeResponse({"chart": {"result": None, "error": error}}, 503)
        return super().get(yfdata, url, params, timeout)


def test_a_batch_that_yahoo_answers_with_its_own_server_error_is_retried(monkeypatch, tmp_path):
    """A reviewer's finding on the first version of the probe: Yahoo's 503 is an answer, not an exception, and
    was read as "no data for this symbol": a few seconds of outage cost the night's bars."""
    listed = {t: (date(2024, 1, 2), date(2024, 3, 28)) for t in ("AAPL", "MSFT")}
    fake = _Outage(listed).install(monkeypatch, tmp_path / "yf-cache")
    fetch({"AAPL": date(2024, 3, 20)}, FAST, sleep=lambda s: None)  # the timezone cache warm, as on a later night
    fake.failures = 3  # both symbols' requests and the probe
    sleeps = []
    result = fetch({"AAPL": date(2024, 3, 20), "MSFT": date(2024, 3, 20)}, FAST, sleep=sleeps.append)
    assert result.failed == {} and result.frame["ticker"].n_unique() == 2
    assert result.attempts == 2 and len(sleeps) == 1


def test_a_saved_yf_download_csv_with_excels_byte_order_mark_is_recognised(tmp_path):
    """A reviewer's case: saved with encoding="utf-8-sig" (and CRLF), the first header cell read '\\ufeffprice' and
    the file was refused with "missing required columns"."""
    from features.prices.sources import read_file

    path = tmp_path / "yf.csv"
    yfinance_frame({"AAPL": 5}).to_csv(path, encoding="utf-8-sig", lineterminator="\r\n")
    frame, findings = read_file(path)
    assert findings == [] and frame.height == 5 and frame["ticker"].unique().to_list() == ["AAPL"]
