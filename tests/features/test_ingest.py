import json
import logging
from datetime import UTC, date, datetime

import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.prices import lake
from features.prices.ingest import ingest, stored_report, ticker_status
from features.settings import IngestSettings, SourceSettings, ValidationSettings
from nightcast.errors import SourceError
from tests.fake_yahoo import FakeYahoo

QUICK = IngestSettings(retries=1, backoff=0.0, chunk_size=10, overlap_days=5, stale_after=5)
VALID = ValidationSettings()
NOW = datetime(2024, 3, 29, 22, 0, tzinfo=UTC)  # Good Friday: the latest closed session is Thursday 28 March


def yf_source(*tickers: str) -> SourceSettings:
    return SourceSettings(kind="yfinance", tickers=list(tickers), start="2024-01-01")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    listed = {
        "AAPL": (date(2024, 1, 2), date(2024, 3, 28)),
        "MSFT": (date(2024, 1, 2), date(2024, 3, 28)),
        "OLD": (date(2024, 1, 2), date(2024, 1, 31)),
    }
    return FakeYahoo(listed).install(monkeypatch, tmp_path / "yf-cache")


def run(tmp_path, source, now=NOW, settings=QUICK):
    return ingest(source, settings, VALID, tmp_path / "lake", today=now.date(), now=now, sleep=lambda s: None)


def test_first_then_incremental_then_idempotent(fake, tmp_path):
    fake.listed["AAPL"] = fake.listed["MSFT"] = (date(2024, 1, 2), date(2024, 3, 15))
    first = run(tmp_path, yf_source("AAPL", "MSFT"), now=datetime(2024, 3, 15, 22, 0, tzinfo=UTC))
    s = {r["ticker"]: r for r in first.summary.iter_rows(named=True)}
    assert s["AAPL"]["rows_added"] == 52 and s["AAPL"]["last_date"] == date(2024, 3, 15)  # sessions 2 Jan..15 Mar
    manifest = lake.read_manifest(tmp_path / "lake")
    assert manifest["AAPL"]["last_date"] == "2024-03-15" and len(manifest["AAPL"]["fingerprint"]) == 16

    fake.listed["AAPL"] = fake.listed["MSFT"] = (date(2024, 1, 2), date(2024, 3, 28))
    fake.revised[("AAPL", date(2024, 3, 13))] = 123.0  # a revision inside the overlap window
    fake.calls.clear()
    second = run(tmp_path, yf_source("AAPL", "MSFT"))
    (request,) = fake.history_requests("AAPL")
    asked_from = datetime.fromtimestamp(request["period1"], UTC).date()
    assert date(2024, 3, 4) <= asked_from <= date(2024, 3, 8)  # ~5 trading days before 2024-03-15, not 2024-01-01
    s = {r["ticker"]: r for r in second.summary.iter_rows(named=True)}
    assert (s["AAPL"]["rows_added"], s["AAPL"]["rows_revised"]) == (9, 1)
    assert (s["MSFT"]["rows_added"], s["MSFT"]["rows_revised"]) == (9, 0)
    stored = lake.read_ticker(tmp_path / "lake", "AAPL")
    assert stored.filter(pl.col("date") == date(2024, 3, 13))["close"][0] == 123.0
    assert stored.height == 61 and stored["date"].is_unique().all()

    files = {p.name: p.read_bytes() for p in (tmp_path / "lake").rglob("*") if p.is_file()}
    third = run(tmp_path, yf_source("AAPL", "MSFT"))
    assert third.summary["rows_added"].sum() == 0 and third.summary["rows_revised"].sum() == 0
    # the report's rows are the lake's as stored, whether the upsert wrote a new file, revised it or kept it
    for report in (second, third):  # the third changed nothing: the lake is as the second left it
        assert_frame_equal(report.prices, lake.read_prices(tmp_path / "lake", ["AAPL", "MSFT"]), check_exact=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "lake").rglob("*") if p.is_file()} == files  # byte for byte


def test_offline_falls_back_to_the_lake_loudly(fake, tmp_path, caplog):
    fake.listed["AAPL"] = fake.listed["MSFT"] = (date(2024, 1, 2), date(2024, 3, 15))
    run(tmp_path, yf_source("AAPL", "MSFT"), now=datetime(2024, 3, 15, 22, 0, tzinfo=UTC))
    fake.offline = True
    with caplog.at_level(logging.WARNING, logger="nightcast"):
        report = run(tmp_path, yf_source("AAPL", "MSFT"))
    assert sorted(report.prices["ticker"].unique().to_list()) == ["AAPL", "MSFT"]
    assert report.prices["date"].max() == date(2024, 3, 15)
    assert set(report.fetch_failed) == {"AAPL", "MSFT"}
    assert report.summary["behind"].to_list() == [9, 9]  # sessions 18..28 March, Good Friday excluded
    assert "STALE DATA" in caplog.text and "AAPL (9)" in caplog.text


def test_offline_with_an_empty_lake_is_a_clear_error(fake, tmp_path):
    fake.offline = True
    with pytest.raises(
        SourceError,
        match="no data at all for AAPL: nothing stored in .*lake and AAPL: nothing came back.*offline or blocked.*"
        "Could not resolve host: query2.finance.yahoo.com",  # the real error, not only yfinance's 'delisted'
    ):
        run(tmp_path, yf_source("AAPL"))


def test_delisted_ticker_is_flagged_stale_not_dropped(fake, tmp_path):
    report = run(tmp_path, yf_source("AAPL", "OLD"))
    assert report.stale == {"OLD": 40}  # NYSE sessions 1 Feb .. 28 Mar 2024
    old = report.prices.filter(pl.col("ticker") == "OLD")["date"]  # its history still trains the model
    assert (old.min(), old.max(), old.len()) == (date(2024, 1, 2), date(2024, 1, 31), 21)  # NYSE sessions
    assert report.summary.filter(pl.col("ticker") == "AAPL")["status"][0] == "ok"


def test_unsafe_symbols_never_reach_network_or_disk(fake, tmp_path):
    report = run(tmp_path, SourceSettings(kind="yfinance", tickers=["AAPL", "../ETC", "A/B"], start="2024-01-01"))
    assert set(report.quarantined) == {"../ETC", "A/B"}
    assert all("/ETC" not in url and "A/B" not in url for url, _ in fake.calls)
    assert sorted(p.name for p in (tmp_path / "lake" / "prices").iterdir()) == ["AAPL.parquet"]


def test_wide_adjusted_close_file(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(
        "Date,AAA,bbb,CCC\n"
        "2024-01-02,,10.0,5\n"
        "2024-01-03,,10.5,5.1\n"
        "2024-01-04,20.0,NaN,5.2\n"
        "2024-01-05,20.5,11.0,\n"
        "2024-01-08,21.0,11.5,\n"
    )
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    s = {r["ticker"]: r for r in report.summary.iter_rows(named=True)}
    assert s["AAA"]["rows_added"] == 3 and s["AAA"]["first_date"] == date(2024, 1, 4)  # nothing before listing
    # an interior empty or NaN cell is no row, as a day missing from a long file (it was a bar invented by carrying
    # the day before forward: a wide file's dates are the union of its tickers' days, a London holiday beside US
    # stocks, a weekend beside a crypto column)
    assert s["BBB"]["rows_added"] == 4 and s["BBB"]["repaired"] == 0
    assert s["CCC"]["last_date"] == date(2024, 1, 4) and s["CCC"]["status"] == "ok"  # 2 sessions behind: within 5
    bbb = report.prices.filter(pl.col("ticker") == "BBB").sort("date")
    assert date(2024, 1, 4) not in bbb["date"].to_list() and (bbb["close"] == bbb["adj_close"]).all()


def test_a_conflicting_day_drops_that_day_not_the_ticker(tmp_path):
    path = tmp_path / "long.csv"
    rows = ["date,ticker,close"] + [f"2024-01-{d:02d},GOOD,{10 + d}" for d in range(2, 12)]
    rows += ["2024-01-02,BAD,1", "2024-01-02,BAD,2", "2024-01-03,BAD,3"]
    path.write_text("\n".join(rows) + "\n")
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    # one conflicting day drops that day (reported), not the ticker's whole history
    assert report.quarantined == {} and any(f.rule == "conflicting_day" and f.ticker == "BAD" for f in report.findings)
    assert lake.read_ticker(tmp_path / "lake", "BAD")["date"].to_list() == [date(2024, 1, 3)]
    assert lake.read_ticker(tmp_path / "lake", "GOOD").height == 10


def test_a_report_as_of_a_past_date_sees_nothing_after_it(tmp_path):
    from tests.conftest import synthetic_prices

    prices = synthetic_prices(["AAA", "LATE", "GONE"], 60, seed=1, start=date(2024, 1, 2))
    prices = prices.filter(
        ~((pl.col("ticker") == "LATE") & (pl.col("date") < date(2024, 2, 1)))  # listed on 1 February
        & ~((pl.col("ticker") == "GONE") & (pl.col("date") > date(2024, 1, 10)))  # no bar after 10 January
    )
    path = tmp_path / "p.parquet"
    prices.select("date", "ticker", "close").write_parquet(path)
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    assert report.stale == {"GONE": report.summary.filter(pl.col("ticker") == "GONE")["behind"][0]}

    then = report.as_of(date(2024, 1, 12), stale_after=5)
    assert then.prices["date"].max() == date(2024, 1, 12) and then.reference == date(2024, 1, 12)
    status = dict(then.summary.select("ticker", "status").iter_rows())
    assert status == {"AAA": "ok", "GONE": "ok", "LATE": "failed"}  # GONE was current then, LATE not listed yet
    assert then.stale == {} and sorted(then.prices["ticker"].unique()) == ["AAA", "GONE"]
    later = report.as_of(date(2024, 1, 25), stale_after=5)
    assert later.stale == {"GONE": 10}  # 11 .. 25 January: 10 sessions (Martin Luther King Day closed)

    # the lake alone gives the same answer as the ingest it stored
    stored = stored_report(tmp_path / "lake", [])
    assert stored.as_of(date(2024, 1, 25), stale_after=5).prices.equals(later.prices)


def test_a_close_only_file_never_erases_stored_bars(tmp_path):
    """Issue 12, row 2: a close-only CSV into a lake that holds OHLCV for the same ticker."""
    from tests.conftest import synthetic_prices

    bars = synthetic_prices(["NVDA"], 80, seed=3)
    full, close_only = tmp_path / "bars.parquet", tmp_path / "close.csv"
    bars.drop("source", "ingested_at").write_parquet(full)
    bars.select("date", "ticker", "close").write_csv(close_only)
    lake_dir = tmp_path / "lake"
    ingest(SourceSettings(kind="file", path=full), QUICK, VALID, lake_dir, today=date(2024, 6, 1))
    before = lake.read_ticker(lake_dir, "NVDA")
    report = ingest(SourceSettings(kind="file", path=close_only), QUICK, VALID, lake_dir, today=date(2024, 6, 1))
    row = report.summary.row(0, named=True)
    assert (row["rows_added"], row["rows_revised"], row["rows_filled"], row["status"]) == (0, 0, 0, "ok")
    after = lake.read_ticker(lake_dir, "NVDA")
    assert after.drop("ingested_at", "source").equals(before.drop("ingested_at", "source"))
    assert after["open"].null_count() == 0 and after["volume"].null_count() == 0


def test_a_wide_file_with_a_text_column_quarantines_that_column_only(tmp_path):
    """Issue 12, row 8: one all-text column used to reject the whole file with a raw cast error."""
    path = tmp_path / "wide.csv"
    path.write_text(
        "Date,AAA,NOTES,CCC\n2024-01-02,10.0,hello,5\n2024-01-03,10.5,world,5.1\n2024-01-04,11.0,,oops\n"
        "2024-01-05,11.5,again,5.3\n"
    )
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    status = dict(report.summary.select("ticker", "status").iter_rows())
    assert status == {"AAA": "ok", "CCC": "ok", "NOTES": "quarantined"}
    assert "holds no number, e.g. 'hello'" in report.quarantined["NOTES"]
    ccc = lake.read_ticker(tmp_path / "lake", "CCC")
    # the one unreadable cell is a missing close, carried forward by validation and reported
    assert ccc["close"].to_list() == [5.0, 5.1, 5.1, 5.3]
    assert {f.rule for f in report.findings if f.ticker == "CCC"} == {"non_numeric", "bad_price"}


def test_one_missing_adjusted_close_is_not_taken_from_the_close(tmp_path):
    """Only a source that lacks the column for a ticker stands in with the other price; one missing cell
    would otherwise become an unadjusted price (a fake jump) with no finding."""
    path = tmp_path / "p.csv"
    path.write_text(
        "date,ticker,close,adj_close\n2024-01-02,AAA,200,100\n2024-01-03,AAA,202,\n2024-01-04,AAA,204,102\n"
        "2024-01-02,CLS,10,\n2024-01-03,CLS,11,\n"
    )
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    aaa = lake.read_ticker(tmp_path / "lake", "AAA")
    assert aaa["adj_close"].to_list() == [100.0, 100.0, 102.0]  # carried forward by validation, not 202
    assert any(f.ticker == "AAA" and f.rule == "bad_price" for f in report.findings)
    assert lake.read_ticker(tmp_path / "lake", "CLS")["adj_close"].to_list() == [10.0, 11.0]  # close-only


@pytest.mark.parametrize(
    "quarantine, has_rows, behind, failed, expected",
    [
        pytest.param("bad [rule]", True, 0, None, ("quarantined", "bad [rule]"), id="quarantine-wins"),
        pytest.param(None, True, 5, None, ("ok", ""), id="behind-by-stale-after-is-ok"),
        pytest.param(None, True, 6, None, ("stale", "no new bar for 6 sessions (delisted or halted?)"), id="stale"),
        pytest.param(None, True, 2, "timeout", ("ok", "fetch failed, using stored rows: timeout"), id="stored-rows"),
        pytest.param(  # offline for a week: nothing says delisted (a new user's review)
            None,
            True,
            6,
            "offline",
            ("stale", "no new bar for 6 sessions: its fetch failed (offline)"),
            id="stale-failed",
        ),
        pytest.param(None, False, None, "HTTP 404", ("failed", "HTTP 404"), id="failed-and-nothing-stored"),
        pytest.param(None, False, None, None, ("failed", "no rows"), id="source-had-no-rows"),
    ],
)
def test_ticker_status(quarantine, has_rows, behind, failed, expected):
    assert ticker_status(quarantine, has_rows, behind, 5, failed) == expected


def test_context_series_are_fetched_beside_the_tickers_and_set_apart(fake, tmp_path):
    """The market family's ^GSPC and ^VIX: fetched and stored like tickers; the report of the universe holds them
    apart, so nothing downstream forecasts them."""
    fake.listed |= {"^GSPC": fake.listed["AAPL"], "^VIX": fake.listed["AAPL"]}
    report = ingest(
        yf_source("AAPL"),
        QUICK,
        VALID,
        tmp_path / "lake",
        today=NOW.date(),
        now=NOW,
        sleep=lambda s: None,
        context=["^GSPC", "^VIX"],
    )
    assert sorted(report.summary["ticker"]) == ["AAPL", "^GSPC", "^VIX"]
    assert len(fake.history_requests("^VIX")) == 1
    vix = lake.read_ticker(tmp_path / "lake", "^VIX")
    assert vix.height == 61 and (vix["volume"] == 0).all() and vix["adj_close"].equals(vix["close"])
    universe = report.set_apart(["^GSPC", "^VIX"])
    assert universe.summary["ticker"].to_list() == ["AAPL"] and universe.prices["ticker"].unique().to_list() == ["AAPL"]
    assert sorted(universe.context["ticker"]) == ["^GSPC", "^VIX"] and set(universe.context["status"]) == {"ok"}
    assert universe.as_of(date(2024, 2, 1), stale_after=5).context.equals(universe.context)


def test_context_series_are_read_from_a_file_only_when_it_holds_them(tmp_path, sample):
    path = tmp_path / "p.parquet"
    sample.filter(pl.col("ticker").is_in(["NVDA", "ORCL", "^GSPC"])).write_parquet(path)
    source = SourceSettings(kind="file", path=path, tickers=["NVDA"])
    report = ingest(source, QUICK, VALID, tmp_path / "lake", context=["^GSPC", "SPY", "^VIX"])  # no SPY, no VIX
    assert sorted(report.summary["ticker"]) == ["NVDA", "^GSPC"]  # ORCL was not asked for


def test_an_ingest_reads_each_lake_file_once_after_writing(tmp_path, monkeypatch):
    # the report's rows and the manifest's entries come from one read of the lake: the manifest used to read
    # every file again (about 1 s on 500 tickers x 25 years)
    from tests.conftest import synthetic_prices

    path = tmp_path / "prices.parquet"
    synthetic_prices(["AAA", "BBB"], 40, start=date(2024, 1, 2)).write_parquet(path)
    reads = []
    read_ticker, read_prices = lake.read_ticker, lake.read_prices
    monkeypatch.setattr(lake, "read_ticker", lambda lake_dir, t: reads.append(t) or read_ticker(lake_dir, t))
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    assert reads == []  # nothing stored yet: no file to read
    # a rerun with one more day: each file read once, before the upsert (the stored rows to validate with),
    # which merges onto those same rows; none after it: the rows as stored come from the upsert (reading every
    # file back cost ~1 s on 500 tickers x 25 years, and reading it again inside the upsert ~0.6 s)
    synthetic_prices(["AAA", "BBB"], 41, start=date(2024, 1, 2)).write_parquet(path)
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    assert sorted(reads) == ["AAA", "BBB"]
    assert_frame_equal(report.prices, read_prices(tmp_path / "lake", ["AAA", "BBB"]), check_exact=True)
    manifest = lake.read_manifest(tmp_path / "lake")
    assert set(manifest) == {"AAA", "BBB"} and manifest["AAA"]["rows"] == 41
    assert manifest["AAA"]["fingerprint"] == lake.fingerprint(report.prices.filter(pl.col("ticker") == "AAA"))


def test_the_ingest_fingerprints_its_rows_on_the_way(tmp_path):
    # the nightly reuses it instead of hashing the universe's CSV text again (~2 s on 500 tickers x 25 years)
    from tests.conftest import synthetic_prices

    path = tmp_path / "prices.parquet"
    frame = synthetic_prices(["BBB", "AAA", "SPY"], 40, start=date(2024, 1, 2)).with_columns(pl.col("adj_close") / 3.0)
    frame.write_parquet(path)
    source = SourceSettings(kind="file", path=path)
    report = ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    assert report.fingerprint == lake.fingerprint(report.prices) == lake.fingerprint(frame)
    apart = report.set_apart(["SPY"])  # the rows change: not known any more
    assert apart.fingerprint is None and set(apart.prices["ticker"]) == {"AAA", "BBB"}
    assert report.set_apart(["VIX"]).fingerprint == report.fingerprint  # nothing of it held: the same rows
    assert report.as_of(date(2024, 1, 20), 5).fingerprint is None
    manifest = (tmp_path / "lake" / lake.MANIFEST).read_bytes()
    again = ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    assert again.fingerprint == report.fingerprint  # reconciled every time: the nightly hashes nothing again
    assert (tmp_path / "lake" / lake.MANIFEST).read_bytes() == manifest  # nothing changed: byte for byte


def test_a_manifest_left_behind_by_a_killed_ingest_is_mended_by_the_next(tmp_path, caplog):
    """A crash test: killed after its last ticker file and before the manifest, an ingest left entries that
    disagreed with their files and a new ticker out of it; the next ingest, with nothing left to write, kept
    that manifest for good, and replays (which read the manifest's tickers) lost the new ticker without a word."""
    from tests.conftest import synthetic_prices

    path = tmp_path / "prices.parquet"
    frame = synthetic_prices(["AAA", "BBB"], 40, start=date(2024, 1, 2))
    frame.write_parquet(path)
    source = SourceSettings(kind="file", path=path)
    ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    manifest_file = tmp_path / "lake" / lake.MANIFEST
    good = json.loads(manifest_file.read_text())
    stale = {"AAA": good["AAA"] | {"rows": 3, "fingerprint": "0" * 16}}  # as if killed before the manifest
    manifest_file.write_text(json.dumps(stale))
    caplog.clear()
    ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))  # every file unchanged
    repairs = [r.getMessage() for r in caplog.records if "manifest" in r.getMessage() and r.levelname == "WARNING"]
    assert repairs == [  # said, not done silently; a ticker whose file this ingest wrote is no repair
        "lake manifest: the entries of 2 tickers did not match their files and were rebuilt from them (AAA, BBB): "
        "an earlier ingest stopped before writing the manifest, or a file was replaced by hand"
    ]
    mended = json.loads(manifest_file.read_text())
    assert sorted(mended) == ["AAA", "BBB"] and mended["AAA"]["rows"] == good["AAA"]["rows"] == 40
    for ticker in ("AAA", "BBB"):  # as the first ingest wrote them (but for the time of the writing)
        assert {k: v for k, v in mended[ticker].items() if k != "updated_at"} == {
            k: v for k, v in good[ticker].items() if k != "updated_at"
        }
    caplog.clear()
    frame.vstack(synthetic_prices(["CCC"], 40, start=date(2024, 1, 2))).write_parquet(path)
    ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))  # a new ticker: no repair
    assert not [r for r in caplog.records if "manifest" in r.getMessage() and r.levelname == "WARNING"]
    assert sorted(json.loads(manifest_file.read_text())) == ["AAA", "BBB", "CCC"]

    # a verifier's findings: an entry with no file stayed for good, silently; and the advice for an unreadable
    # manifest (delete it) was followed by a warning of a killed ingest or a file replaced by hand
    caplog.clear()
    manifest_file.write_text(json.dumps(json.loads(manifest_file.read_text()) | {"FAKE": good["AAA"]}))
    ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("lake manifest")]
    assert said == [("WARNING", "lake manifest: entries without a file in the lake removed (FAKE)")]
    assert sorted(json.loads(manifest_file.read_text())) == ["AAA", "BBB", "CCC"]
    caplog.clear()
    manifest_file.unlink()
    ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("lake manifest")]
    assert said == [("INFO", "lake manifest: none found; built from the files of 3 tickers")]
    assert sorted(json.loads(manifest_file.read_text())) == ["AAA", "BBB", "CCC"]


@pytest.mark.parametrize("bad", ["-12.5", "0", "NaN", "inf"])
@pytest.mark.parametrize("layout", ["long", "wide"])
def test_a_bad_cell_for_a_stored_day_keeps_the_stored_price(tmp_path, bad, layout, caplog):
    """A new-user review: a negative (or NaN, inf, 0) price in a re-read file was carried forward from the day
    before by validation and stored as a "revision" of the good price. The stored value is kept, said once."""
    days = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    closes = ["10.0", "10.5", "11.0", "11.5"]

    def write(name, values):
        path = tmp_path / name
        if layout == "long":
            rows = [f"{d},AAA,{c},{c}" for d, c in zip(days, values, strict=True)]
            path.write_text("date,ticker,close,adj_close\n" + "\n".join(rows) + "\n")
        else:
            path.write_text("Date,AAA\n" + "\n".join(f"{d},{c}" for d, c in zip(days, values, strict=True)) + "\n")
        return SourceSettings(kind="file", path=path)

    lake_dir = tmp_path / "lake"
    ingest(write("good.csv", closes), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    before = lake.read_ticker(lake_dir, "AAA")
    with caplog.at_level(logging.INFO, logger="nightcast"):
        report = ingest(write("bad.csv", [*closes[:2], bad, closes[3]]), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    after = lake.read_ticker(lake_dir, "AAA")
    assert after.drop("ingested_at", "source").equals(before.drop("ingested_at", "source"))
    row = report.summary.row(0, named=True)
    assert (row["rows_revised"], row["repaired"]) == (0, 0)
    if layout == "wide" and bad == "NaN":  # a wide file's NaN is read as an empty cell: missing, filled silently
        assert not [f for f in report.findings if f.ticker == "AAA"]
        return
    (kept,) = [f for f in report.findings if f.action == "kept stored"]
    assert (kept.ticker, kept.date, kept.count) == ("AAA", date(2024, 1, 4), 1)
    assert sum("kept stored" in r.getMessage() for r in caplog.records) == 1


def test_a_cell_that_is_not_a_number_is_logged_and_counted_once(tmp_path, caplog):
    path = tmp_path / "p.csv"
    path.write_text("date,ticker,close\n2024-01-02,AAA,10\n2024-01-03,AAA,n/a\n2024-01-04,AAA,11\n")
    with caplog.at_level(logging.INFO, logger="nightcast"):
        report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    assert report.summary["repaired"].to_list() == [1]  # the carried-forward close, not also the unread cell
    messages = [r.getMessage() for r in caplog.records]
    assert any("[non_numeric] read as missing" in m and "AAA 2024-01-03" in m for m in messages)
    # read again into the lake that holds the day: the stored close fills the cell, nothing is repaired
    caplog.clear()
    again = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    assert again.summary["repaired"].to_list() == [0]
    assert lake.read_ticker(tmp_path / "lake", "AAA")["close"].to_list() == [10.0, 10.0, 11.0]


def test_a_header_only_file_says_it_holds_no_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("date,ticker,close\n")
    with pytest.raises(SourceError, match=r"^no data at all: the source holds no price rows and names no ticker"):
        ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))


def _closeless_file(path, prices, bar_factor: float, adjust: float = 0.5):
    """open/high/low (scaled by `bar_factor`) and adj_close (`adjust` x the close), no close column."""
    prices.select(
        "date",
        "ticker",
        *(pl.col(c) * bar_factor for c in ("open", "high", "low")),
        (pl.col("close") * adjust).alias("adj_close"),
    ).write_csv(path)
    return SourceSettings(kind="file", path=path)


@pytest.mark.parametrize("adjusted_bars", [False, True])
def test_bars_beside_an_adjusted_close_and_no_close_are_kept_only_on_its_basis(tmp_path, adjusted_bars):
    """A crash-test finding: a file of open/high/low and adj_close but no close had every unadjusted bar widened
    down to the adjusted close (a low that never traded). Such bars are now read as missing, and said so; bars
    on the adjusted close's own basis are kept; a rerun changes nothing."""
    from tests.conftest import synthetic_prices

    prices = synthetic_prices(["AAA"], 40, start=date(2024, 1, 2))
    source = _closeless_file(tmp_path / "prices.csv", prices, 0.5 if adjusted_bars else 1.0)
    report = ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    stored = lake.read_ticker(tmp_path / "lake", "AAA")
    assert stored["close"].to_list() == pytest.approx((prices["close"] * 0.5).to_list())
    rules = {f.rule: f for f in report.findings}
    assert "ohlc_bounds" not in rules  # nothing widened
    if adjusted_bars:
        assert "ohlc_basis" not in rules
        assert stored["low"].to_list() == pytest.approx((prices["low"] * 0.5).to_list())
    else:
        assert rules["ohlc_basis"].count == 40 and rules["ohlc_basis"].date == date(2024, 1, 2)
        assert rules["ohlc_basis"].detail.startswith("40 of 40 bars do not contain the adjusted close")
        assert report.summary["repaired"].to_list() == [40]  # in the summary, not only in the log
        assert stored.select("open", "high", "low").null_count().row(0) == (40, 40, 40)
    file = (tmp_path / "lake" / "prices" / "AAA.parquet").read_bytes()
    again = ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    assert (tmp_path / "lake" / "prices" / "AAA.parquet").read_bytes() == file  # the rerun changes nothing
    assert ("ohlc_basis" in {f.rule for f in again.findings}) is not adjusted_bars  # said on every read


def test_a_few_bad_bars_beside_an_adjusted_close_are_bad_bars_not_another_basis(tmp_path):
    """A review finding: one bar missing the adjusted close by rounding, or one glitch, read every bar of the
    ticker as missing. Rounding is tolerated; a few bars outside it are widened as any bad bar."""
    from tests.conftest import synthetic_prices

    prices = synthetic_prices(["AAA"], 40, start=date(2024, 1, 2))
    adjusted = prices.with_columns(pl.col(c) * 0.5 for c in ("open", "high", "low", "close"))
    rounding = pl.max_horizontal("open", "close") * (1 - 1e-6)  # a high a hair under the bar's top
    glitch = adjusted.with_row_index().with_columns(
        high=pl.when(pl.col("index") == 3).then(rounding).otherwise("high"),
        low=pl.when(pl.col("index") == 7).then(pl.col("high") * 1.1).otherwise("low"),  # low above the high
    )
    source = _closeless_file(tmp_path / "prices.csv", glitch.drop("index"), 1.0, adjust=1.0)
    report = ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    stored = lake.read_ticker(tmp_path / "lake", "AAA")
    assert "ohlc_basis" not in {f.rule for f in report.findings}
    assert stored.select("open", "high", "low").null_count().row(0) == (0, 0, 0)  # the bars kept
    bounds = [f for f in report.findings if f.rule == "ohlc_bounds"]
    assert len(bounds) == 1 and bounds[0].count == 2  # the two bars widened, as before


def test_bars_stored_in_the_lake_outlive_a_closeless_file_on_another_basis(tmp_path):
    """A review finding: the lake's bars for the days a close-less file repeats are kept, never replaced by
    its missing ones; its new days' bars, missing in a ticker that has bars, become the day's close (said)."""
    from tests.conftest import synthetic_prices

    prices = synthetic_prices(["AAA"], 40, start=date(2024, 1, 2))
    first = tmp_path / "first.parquet"
    prices.head(30).write_parquet(first)
    ingest(SourceSettings(kind="file", path=first), QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    before = lake.read_ticker(tmp_path / "lake", "AAA")
    source = _closeless_file(tmp_path / "prices.csv", prices, 1.0)
    report = ingest(source, QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    stored = lake.read_ticker(tmp_path / "lake", "AAA")
    rules = {f.rule: f for f in report.findings}
    assert rules["ohlc_basis"].action == rules["bad_ohlc"].action == "repaired"
    assert stored.head(30).select("open", "high", "low").equals(before.select("open", "high", "low"))
    new_days = stored.tail(10)
    assert (new_days["high"] == new_days["close"]).all() and (new_days["low"] == new_days["close"]).all()


NIGHT_1 = datetime(2024, 3, 15, 22, 0, tzinfo=UTC)  # a Friday; the events below are on Monday 18 March


def _lake_rows(tmp_path, name: str) -> pl.DataFrame:
    return lake.read_prices(tmp_path / name, ["AAPL", "MSFT"]).select("ticker", "date", "close", "adj_close")


def test_a_split_or_dividend_moves_the_whole_stored_history_to_yahoos_new_basis(fake, tmp_path, caplog):
    """A reviewer's finding: Yahoo rewrites a split-adjusted close and a dividend-adjusted adjusted close over the
    whole history on the event, while the nightly re-fetches a few days only: the lake held both bases, a false
    -69% day at the seam for a 2:1 split and a false dividend-sized one, for good."""
    fake.listed["AAPL"] = fake.listed["MSFT"] = (date(2024, 1, 2), date(2024, 3, 15))
    fake.before = {"AAPL": (date(2024, 3, 18), 2.0, 2.0), "MSFT": (date(2024, 3, 18), 1.0, 1 / (1 - 0.02))}
    run(tmp_path, yf_source("AAPL", "MSFT"), now=NIGHT_1)
    fake.listed["AAPL"] = fake.listed["MSFT"] = (date(2024, 1, 2), date(2024, 3, 28))
    fake.before = {}  # Yahoo has applied both events to every earlier day
    with caplog.at_level(logging.WARNING, logger="nightcast"):
        report = run(tmp_path, yf_source("AAPL", "MSFT"))
    fresh = ingest(yf_source("AAPL", "MSFT"), QUICK, VALID, tmp_path / "fresh", today=NOW.date(), now=NOW)
    assert_frame_equal(_lake_rows(tmp_path, "lake"), _lake_rows(tmp_path, "fresh"), check_exact=True)
    cols = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
    assert_frame_equal(report.prices.select(cols), fresh.prices.select(cols), check_exact=True)
    s = {r["ticker"]: r for r in report.summary.iter_rows(named=True)}
    assert (s["AAPL"]["rows_revised"], s["MSFT"]["rows_revised"]) == (52, 52)  # every stored day, 2 Jan .. 15 Mar
    assert "AAPL: Yahoo rebased its history" in caplog.text and "its close is 0.5000x" in caplog.text
    assert "MSFT: Yahoo rebased its history" in caplog.text and "its close is 1.0000x" in caplog.text


def test_a_rebased_ticker_whose_refetch_fails_keeps_its_stored_days_on_one_basis(fake, tmp_path, monkeypatch):
    from features.prices import yahoo

    fake.listed["AAPL"] = fake.listed["MSFT"] = (date(2024, 1, 2), date(2024, 3, 15))
    fake.before = {"MSFT": (date(2024, 3, 18), 2.0, 2.0)}
    run(tmp_path, yf_source("AAPL", "MSFT"), now=NIGHT_1)
    stored = lake.read_ticker(tmp_path / "lake", "MSFT")
    fake.listed["AAPL"] = fake.listed["MSFT"] = (date(2024, 1, 2), date(2024, 3, 28))
    fake.before = {}
    real, calls = yahoo.fetch, []

    def offline_for_the_refetch(starts, settings, **kw):  # the network goes away after the night's own fetch
        calls.append(starts)
        fake.offline = len(calls) > 1
        return real(starts, settings, **kw)

    monkeypatch.setattr(yahoo, "fetch", offline_for_the_refetch)
    report = run(tmp_path, yf_source("AAPL", "MSFT"))
    assert calls[1] == {"MSFT": date(2024, 1, 1)}  # the whole history, from the source's start
    assert_frame_equal(lake.read_ticker(tmp_path / "lake", "MSFT"), stored, check_exact=True)  # not one new day
    s = {r["ticker"]: r for r in report.summary.iter_rows(named=True)}
    assert s["MSFT"]["status"] == "stale" and "Yahoo rebased its history" in s["MSFT"]["reason"]
    assert s["AAPL"]["status"] == "ok" and s["AAPL"]["last_date"] == date(2024, 3, 28)


def test_a_bar_of_a_session_not_yet_closed_is_not_stored(fake, tmp_path):
    """A reviewer's finding: at 14:00 in New York, Yahoo serves the day's bar as it stands; stored as that
    day's close, it was a price the day never closed at, and forecasts were made from it."""
    fake.listed["AAPL"] = (date(2024, 1, 2), date(2024, 3, 27))
    fake.revised[("AAPL", date(2024, 3, 27))] = 40.0  # the price at 14:00
    midday = datetime(2024, 3, 27, 18, 0, tzinfo=UTC)
    report = run(tmp_path, yf_source("AAPL"), now=midday)
    assert report.reference == date(2024, 3, 26) and report.prices["date"].max() == date(2024, 3, 26)
    assert lake.read_ticker(tmp_path / "lake", "AAPL")["date"].max() == date(2024, 3, 26)
    fake.revised[("AAPL", date(2024, 3, 27))] = 41.5  # its close
    evening = run(tmp_path, yf_source("AAPL"), now=datetime(2024, 3, 27, 21, 30, tzinfo=UTC))
    last = evening.prices.sort("date").tail(1)
    assert (last["date"][0], last["close"][0]) == (date(2024, 3, 27), 41.5)


class _BareFirstDay(FakeYahoo):
    """Serves the first day of a price request with a close only (no open, high or low), as Yahoo does for some
    old days."""

    def chart(self, symbol, start, end):
        answer = super().chart(symbol, start, end)
        quote = answer["chart"]["result"][0]["indicators"]["quote"][0]
        for column in ("open", "high", "low"):
            if quote.get(column):
                quote[column][0] = None
        return answer


def test_stored_days_yahoo_no_longer_serves_move_to_the_new_basis_too(monkeypatch, tmp_path, caplog):
    """A reviewer's finding on the first version: after the whole history's re-fetch, stored days Yahoo no longer
    serves stayed on the old basis (a false -50% where they met), and a re-fetched day without a bar had it
    filled from the old basis."""
    fake = _BareFirstDay({"AAPL": (date(2024, 1, 2), date(2024, 3, 15))}).install(monkeypatch, tmp_path / "yf")
    fake.before = {"AAPL": (date(2024, 3, 18), 2.0, 2.0)}
    run(tmp_path, yf_source("AAPL"), now=NIGHT_1)
    old_low = lake.read_ticker(tmp_path / "lake", "AAPL").filter(pl.col("date") == date(2024, 2, 1))["low"][0]
    fake.listed["AAPL"] = (date(2024, 2, 1), date(2024, 3, 28))  # Yahoo now serves February on, split applied
    fake.before = {}
    with caplog.at_level(logging.WARNING, logger="nightcast"):
        report = run(tmp_path, yf_source("AAPL"))
    stored = lake.read_ticker(tmp_path / "lake", "AAPL").sort("date")
    assert stored["date"].min() == date(2024, 1, 2) and stored.height == 61  # no day lost
    jumps = (stored["adj_close"].log().diff().abs().drop_nulls()).max()
    assert jumps < 0.1  # the fake's path moves a few percent a day; the seam was -0.69
    january = stored.filter(pl.col("date") < date(2024, 2, 1))
    fresh = FakeYahoo({"AAPL": (date(2024, 1, 2), date(2024, 3, 28))}).chart(
        "AAPL", pd.Timestamp("2024-01-02"), pd.Timestamp("2024-02-01")
    )["chart"]["result"][0]["indicators"]["quote"][0]["close"]
    assert january["close"].to_list() == pytest.approx(fresh, rel=1e-12)  # rescaled by the split's factor
    first = stored.filter(pl.col("date") == date(2024, 2, 1))
    assert first["low"][0] == pytest.approx(old_low / 2, rel=1e-12)  # the bare day's bar: the stored one, rescaled
    assert "21 stored days Yahoo no longer serves put on the new basis" in caplog.text  # January's sessions
    assert report.summary["rows_revised"][0] == 52


@pytest.mark.parametrize("stored_adj", [None, 0.5], ids=["close-only-lake", "lake-with-adjustments"])
def test_a_revised_close_in_a_close_only_file_moves_the_adjusted_close_with_it(tmp_path, stored_adj):
    """A reviewer's case: the run reported AAA revised, while the lake kept the old adjusted close (the series
    every feature and target reads) beside the new close. The stored ratio of the two now carries over."""
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    closes = [100.0, 102.0, 104.0]
    first = tmp_path / "first.csv"
    if stored_adj is None:
        first.write_text("date,ticker,close\n" + "".join(f"{d},AAA,{c}\n" for d, c in zip(days, closes, strict=True)))
    else:
        body = "".join(f"{d},AAA,{c},{c * stored_adj}\n" for d, c in zip(days, closes, strict=True))
        first.write_text("date,ticker,close,adj_close\n" + body)
    revised = tmp_path / "revised.csv"
    revised.write_text(
        "date,ticker,close\n"
        + "".join(f"{d},AAA,{c + 10 * (d == days[1])}\n" for d, c in zip(days, closes, strict=True))
    )
    lake_dir, factor = tmp_path / "lake", stored_adj or 1.0
    ingest(SourceSettings(kind="file", path=first), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    stored = lake.read_ticker(lake_dir, "AAA")
    report = ingest(SourceSettings(kind="file", path=revised), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    assert report.summary.row(0, named=True)["rows_revised"] == 1
    after = lake.read_ticker(lake_dir, "AAA")
    assert after["close"].to_list() == [100.0, 112.0, 104.0]
    assert after["adj_close"].to_list() == pytest.approx([100 * factor, 112 * factor, 104 * factor], rel=1e-12)
    # the unchanged days keep their stored adjusted close exactly, and the same file again changes nothing
    assert after["adj_close"][0] == stored["adj_close"][0] and after["adj_close"][2] == stored["adj_close"][2]
    again = ingest(SourceSettings(kind="file", path=revised), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    assert again.summary.row(0, named=True)["rows_revised"] == 0
    assert lake.read_ticker(lake_dir, "AAA").drop("ingested_at").equals(after.drop("ingested_at"))


def test_a_row_without_a_ticker_is_its_finding_not_a_ticker_named_none(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("date,ticker,close\n2024-01-02,AAA,10\n2024-01-03,AAA,11\n2024-01-02,,5\n")
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    status = dict(report.summary.select("ticker", "status").iter_rows())
    assert "None" not in status and status["AAA"] == "ok" and status[""] == "quarantined"


def test_a_long_hole_in_a_wide_column_is_missing_data_a_short_one_days_it_did_not_trade(tmp_path):
    """A reviewer's case: with every empty wide cell read as no row, a 30-session hole mid-history passed as one
    step (it quarantined the ticker before). Up to 10 empty cells in a row are days it did not trade."""
    days = [date(2024, 1, 1) + pd.Timedelta(days=k) for k in range(80)]
    short = [None if 20 <= k < 24 else 10 + k for k in range(80)]
    long = [None if 20 <= k < 50 else 10 + k for k in range(80)]
    path = tmp_path / "wide.csv"
    pl.DataFrame({"date": days, "SHORT": short, "LONG": long}).write_csv(path)
    report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
    status = dict(report.summary.select("ticker", "status").iter_rows())
    assert status == {"LONG": "quarantined", "SHORT": "ok"}
    assert "30 invalid closes in runs longer than max_fill" in report.quarantined["LONG"]
    assert lake.read_ticker(tmp_path / "lake", "SHORT").height == 76  # four days it did not trade: no rows


def test_a_long_gap_is_said_when_it_arrives_and_not_every_night_after(tmp_path):
    """Weeks without a ticker's price (a file that lost them, a feed resuming after a halt) passed without a word
    in a long file: the model reads them as one step. Said once, by the ingest that brings the rows ending it."""
    days = [date(2024, 1, 1) + pd.Timedelta(days=k) for k in range(120)]
    kept = [d for d in days if not date(2024, 2, 1) <= d <= date(2024, 3, 10)]
    path = tmp_path / "p.csv"

    def write(upto: date) -> None:
        pl.DataFrame({"date": [d for d in kept if d <= upto], "ticker": "AAA", "close": 10.0}).write_csv(path)

    def gaps() -> list:
        report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 6, 1))
        return [f for f in report.findings if f.rule == "long_gap"]

    write(date(2024, 1, 20))
    assert gaps() == []
    write(date(2024, 3, 20))  # the rows that end the gap arrive
    [finding] = gaps()
    assert (finding.ticker, finding.date, finding.warn) == ("AAA", date(2024, 1, 31), True)
    assert (
        "1 gap of more than 14 days without a price, the longest 40 days (2024-01-31 .. 2024-03-11)" in finding.detail
    )
    assert gaps() == []  # the same file again: nothing new, nothing said


def test_a_close_only_new_day_carries_the_nearest_stored_ratio_to_its_adjusted_close(tmp_path):
    """A hostile user's case: a close-only daily file's new day took its close as its adjusted close, a false
    +5.5% return (sign flipped on NVDA) after a history adjusted for every dividend since. The nearest stored
    day's ratio carries over: the latest for a day after the history, the first for one before it; a ticker
    new to the lake stands with its close."""
    first = tmp_path / "first.csv"
    first.write_text(
        "date,ticker,close,adj_close\n2024-01-03,AAA,100,80\n2024-01-04,AAA,101,80.8\n2024-01-08,AAA,102,81.6\n"
        "2024-01-09,AAA,104,83.2\n"
    )
    new_days = tmp_path / "close_only.csv"
    new_days.write_text(
        "date,ticker,close\n2024-01-02,AAA,99\n2024-01-05,AAA,101.5\n2024-01-10,AAA,103\n2024-01-10,NEW,50\n"
    )
    lake_dir = tmp_path / "lake"
    ingest(SourceSettings(kind="file", path=first), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    report = ingest(SourceSettings(kind="file", path=new_days), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    assert report.summary.filter(pl.col("ticker") == "AAA")["rows_added"].item() == 3
    adjusted = dict(lake.read_ticker(lake_dir, "AAA").select("date", "adj_close").iter_rows())
    assert adjusted[date(2024, 1, 10)] == pytest.approx(103 * 0.8, rel=1e-12)  # was 103: a +21% "return"
    assert adjusted[date(2024, 1, 2)] == pytest.approx(99 * 0.8, rel=1e-12)  # before the history: its first ratio
    assert adjusted[date(2024, 1, 5)] == pytest.approx(101.5 * 0.8, rel=1e-12)  # between stored days
    assert adjusted[date(2024, 1, 9)] == 83.2  # stored days untouched
    assert lake.read_ticker(lake_dir, "NEW")["adj_close"].to_list() == [50.0]
    # the mirror (a reviewer's): an adjusted-only wide file's new day took its adjusted close as its traded close,
    # a -6.5% close move on ORCL's -0.6% day and a published last_price 6% low
    wide = tmp_path / "wide.csv"
    wide.write_text("date,AAA\n2024-01-09,83.2\n2024-01-11,84\n")
    ingest(SourceSettings(kind="file", path=wide), QUICK, VALID, lake_dir, today=date(2024, 2, 1))
    stored = dict(lake.read_ticker(lake_dir, "AAA").select("date", "close").iter_rows())
    assert stored[date(2024, 1, 11)] == pytest.approx(84 / 0.8, rel=1e-12) and stored[date(2024, 1, 9)] == 104.0


def test_a_ticker_spelt_two_ways_is_read_as_one_and_said_so(tmp_path, caplog):
    """A hostile user's case: 'nvda' rows beside 'NVDA' ones (prices x1.001) dropped every day of NVDA as
    conflicting, at INFO, with no word of the two spellings."""
    path = tmp_path / "p.csv"
    path.write_text(
        "date,ticker,close\n2024-01-02,NVDA,10\n2024-01-03,NVDA,11\n2024-01-02,nvda,10.01\n2024-01-03,nvda,11\n"
        "2024-01-02,AAA,5\n2024-01-03,AAA,5.5\n"
    )
    with caplog.at_level(logging.WARNING, logger="nightcast"):
        report = ingest(SourceSettings(kind="file", path=path), QUICK, VALID, tmp_path / "lake", today=date(2024, 2, 1))
    (spelt,) = [f for f in report.findings if f.rule == "ticker_spelling"]
    assert spelt.ticker == "NVDA" and spelt.warn and "names it 'NVDA' and 'nvda'" in spelt.detail
    assert "NVDA [ticker_spelling] read as one" in caplog.text
    assert lake.read_ticker(tmp_path / "lake", "NVDA")["close"].to_list() == [11.0]  # 01-02 conflicts: dropped
    assert not any(f.rule == "ticker_spelling" and f.ticker == "AAA" for f in report.findings)
