"""The ingest flow and `nightcast ingest` under a real (temporary) Prefect server."""

import re
from datetime import date

import polars as pl
import pytest

from flows.cli import main
from flows.settings import load_settings

pytestmark = pytest.mark.slow

WIDE = "date,AAA,BBB\n" + "\n".join(
    f"2024-{m:02d}-{d:02d},{'' if m == 1 else 10 + d},{20 + d}"
    for m in (1, 2, 3)
    for d in range(1, 29)
    if date(2024, m, d).weekday() < 5
)


def test_ingest_flow_and_cli(prefect_harness, tmp_path, monkeypatch):
    # The CLI's table goes to a recording console: capsys must not be active while Prefect
    # runs a flow (its log handler would keep writing to the captured stream after the test).
    from rich.console import Console

    import flows.cli

    recorder = Console(record=True, width=140)
    monkeypatch.setattr(flows.cli, "console", recorder)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "wide.csv"
    path.write_text(WIDE + "\n")
    from flows.ingest import ingest_flow

    settings = load_settings(
        None, environ={}, overrides={"source": {"kind": "file", "path": path}, "paths": {"lake_dir": tmp_path / "lake"}}
    )
    state = ingest_flow(settings, return_state=True)
    assert state.is_completed()
    report = state.result()
    rows = {r["ticker"]: r for r in report.summary.iter_rows(named=True)}
    assert rows["AAA"]["first_date"] == date(2024, 2, 1) and rows["BBB"]["first_date"] == date(2024, 1, 1)
    assert rows["AAA"]["rows_added"] == report.prices.filter(pl.col("ticker") == "AAA").height

    assert main(["ingest", "--path", str(path), "--lake", str(tmp_path / "lake")]) == 0
    out = recorder.export_text()
    assert "Ingest summary" in out and "AAA" in out and "BBB" in out
    summary_lines = [line for line in out.splitlines() if line.startswith("│ AAA") or line.startswith("│ BBB")]
    added = [[c.strip() for c in line.split("│")][2] for line in summary_lines]
    assert added == ["0", "0"]  # nothing new the second time


def test_yfinance_universe_is_ingested_in_parallel_chunks(prefect_harness, tmp_path, monkeypatch):
    """Chunks of one ticker each (one unknown): the merged report and the manifest match a single ingest."""
    from datetime import date as day

    from features.prices import lake
    from flows.ingest import ingest_flow
    from tests.fake_yahoo import FakeYahoo

    listed = {t: (day(2024, 1, 2), day(2024, 3, 28)) for t in ("AAPL", "MSFT")}
    fake = FakeYahoo(listed).install(monkeypatch, tmp_path / "yf-cache")
    settings = load_settings(
        None,
        environ={},
        overrides={
            "source": {"kind": "yfinance", "tickers": ["AAPL", "MSFT", "NOPE"], "start": "2024-01-01"},
            "ingest": {"retries": 0},
            "runner": {"chunk_size": 1},
            "validation": {"min_rows": 1},
            "paths": {"data_dir": tmp_path / "data"},
        },
    )
    report = ingest_flow(settings)
    rows = {r["ticker"]: r for r in report.summary.iter_rows(named=True)}
    assert set(rows) == {"AAPL", "MSFT", "NOPE"}
    assert rows["AAPL"]["rows_added"] == rows["MSFT"]["rows_added"] == 61  # NYSE sessions 2 Jan .. 28 Mar 2024
    # yfinance words an unknown symbol as Yahoo's 404 or as "possibly delisted; no timezone found", depending on
    # its process-wide caches (what earlier tests in the same xdist worker left there): both say "unknown symbol"
    assert rows["NOPE"]["status"] == "failed" and re.search("404|possibly delisted", rows["NOPE"]["reason"])
    assert sorted(lake.read_manifest(settings.paths.lake)) == ["AAPL", "MSFT"]  # written once, after the chunks
    assert len(fake.history_requests("AAPL")) == len(fake.history_requests("MSFT")) == 1  # one download each

    # a chunked ingest killed before the manifest: the next one rebuilds the entry and says so (a review found
    # the warning only on the single-ingest path); the ticker it writes again is no repair
    import json
    import logging

    manifest = settings.paths.lake / lake.MANIFEST
    entries = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({"AAPL": entries["AAPL"] | {"rows": 3}}))
    (settings.paths.lake / "prices" / "MSFT.parquet").unlink()  # MSFT is written again: not a repair
    caplog = []
    handler = logging.Handler()
    handler.emit = lambda record: caplog.append(record.getMessage())
    logging.getLogger("nightcast.features.prices.lake").addHandler(handler)
    try:
        ingest_flow(settings)
    finally:
        logging.getLogger("nightcast.features.prices.lake").removeHandler(handler)
    repairs = [m for m in caplog if m.startswith("lake manifest:")]
    assert len(repairs) == 1 and "the entries of 1 ticker did not match" in repairs[0] and "(AAPL)" in repairs[0]
    assert json.loads(manifest.read_text())["AAPL"]["rows"] == 61


def test_offline_yfinance_is_said_and_nothing_stale_is_published(prefect_harness, tmp_path, monkeypatch, sample):
    """Issue 12, rows 3 and 10: the lake holds NVDA and ORCL to 2014; Yahoo cannot be reached today."""
    from rich.console import Console

    import flows.cli
    from flows.nightly import nightly
    from nightcast.errors import InsufficientDataError
    from tests.fake_yahoo import FakeYahoo

    recorder, errors = Console(record=True, width=200), Console(record=True, width=200)
    monkeypatch.setattr(flows.cli, "console", recorder)
    monkeypatch.setattr(flows.cli, "err_console", errors)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "old.parquet"
    sample.filter(pl.col("ticker").is_in(["NVDA", "ORCL"])).group_by("ticker").tail(320).write_parquet(path)
    assert main(["ingest", "--path", str(path)]) == 0
    fake = FakeYahoo({}).install(monkeypatch, tmp_path / "yf-cache")
    fake.offline = True
    monkeypatch.setenv("NIGHTCAST_INGEST__RETRIES", "0")

    assert main(["ingest", "--source", "yfinance", "--tickers", "NVDA", "ORCL"]) == 1  # nothing updated
    said = errors.export_text()
    assert "no ticker could be updated" in said and "Could not resolve host" in said
    assert "stale" in recorder.export_text()

    settings = load_settings(None, overrides={"source": {"kind": "yfinance", "tickers": ["NVDA", "ORCL"]}})
    with pytest.raises(InsufficientDataError, match="nothing current to forecast: every ticker is stale"):
        nightly(settings, run_date=date(2026, 11, 25))
    assert not (tmp_path / "outputs").exists()  # no forecast, no ledger row, latest.json never moved
    monkeypatch.setenv("NIGHTCAST_SCHEDULE__SKIP_CLOSED_DAYS", "false")  # whatever day the test runs on
    assert main(["run", "--source", "yfinance", "--tickers", "NVDA", "ORCL"]) == 2
    assert "every ticker is stale (NVDA" in errors.export_text() and not (tmp_path / "outputs").exists()


def test_a_subflow_called_without_a_heartbeat_of_its_own_leaves_its_parents(prefect_harness):
    """The ingest subflow runs without a heartbeat thread (Prefect's sleeps a second at a time and every flow
    run's exit waits for it); the parent flow keeps its own, and the setting is back after the call."""
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    from flows.prefect_env import no_heartbeat_of_its_own

    seen = {}

    @flow
    def child():
        seen["child"] = get_current_settings().flows.heartbeat_frequency

    @flow
    def parent():
        seen["parent"] = get_current_settings().flows.heartbeat_frequency
        with no_heartbeat_of_its_own():
            child()
        seen["after"] = get_current_settings().flows.heartbeat_frequency

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}):  # (the test harness has none)
        parent()
    assert seen == {"parent": 60, "child": None, "after": 60}
