"""Deployments with their schedules, the market-closed path, the latest pointer, and `nightcast ui`'s server."""

import json
import socket
from datetime import date

import pytest

from flows.deploy import deployments, start_server, stop_server, wait_healthy
from flows.settings import load_settings
from forecasting.publish import update_latest
from tests.conftest import seed_prefect_db

pytestmark = pytest.mark.slow


def test_deployments_register_with_their_cron_and_timezone(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from prefect.client.orchestration import get_client

    environ = {"NIGHTCAST_SCHEDULE__NIGHTLY_CRON": '"15 19 * * 1-5"', "NIGHTCAST_RUNNER__KIND": "dask"}
    settings = load_settings(None, environ=environ)
    ids = [d.apply() for d in deployments(settings)]
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment(ids[0])
        weekly = client.read_deployment(ids[1])
    assert nightly.name == "nightly" and weekly.name == "weekly-backtest"
    (n,), (w,) = nightly.schedules, weekly.schedules
    assert (n.schedule.cron, n.schedule.timezone) == ("15 19 * * 1-5", "America/New_York")
    assert (w.schedule.cron, w.schedule.timezone) == ("0 7 * * 6", "America/New_York")
    assert nightly.parameters["settings"]["schedule"]["nightly_cron"] == "15 19 * * 1-5"
    # importable from any directory (a work pool's worker runs flows in a temporary one)
    assert (nightly.entrypoint, weekly.entrypoint) == ("flows.nightly.nightly", "flows.backtest.backtest_flow")
    # where it stores and publishes, wherever it runs: a worker ran a relative `data` in its temporary folder, then
    # deleted everything, its run Completed
    paths = nightly.parameters["settings"]["paths"]
    assert (paths["data_dir"], paths["out_dir"]) == (
        str(tmp_path.resolve() / "data"),
        str(tmp_path.resolve() / "outputs"),
    )
    # one at a time: a run started while another holds the data waits its turn instead of failing on the lock
    for d in (nightly, weekly):
        assert (d.global_concurrency_limit.limit, d.concurrency_options.collision_strategy) == (1, "ENQUEUE")
    # a deployment runs the flow on threads: a kept runner.kind = "dask" sized its feature chunks for a cluster
    assert nightly.parameters["settings"]["runner"]["kind"] == "threads"

    # on a work pool (in this test: two tests registering nightly/nightly at once could read each other's): an
    # operator's finding, a worker's runs sent none of nightcast's log lines to the UI and kept Prefect's home
    # elsewhere
    from flows.deploy import register_on_pool

    assert register_on_pool(settings, "nightcast-test") == ["nightly/nightly", "backtest/weekly-backtest"]
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("nightcast-test").type == "process"
        pooled = client.read_deployment(ids[0])  # applied again: the same deployment, now on the pool
    env = pooled.job_variables["env"]
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "nightcast"
    assert env["PREFECT_HOME"] == str(tmp_path.resolve() / "data" / "prefect")
    assert pooled.work_pool_name == "nightcast-test"


def test_a_holiday_run_stops_early_with_market_closed(prefect_harness, tmp_path):
    from flows.nightly import MarketClosed, nightly

    settings = load_settings(
        None,
        environ={},
        overrides={
            "source": {"kind": "yfinance", "tickers": ["AAPL"]},
            "paths": {"data_dir": tmp_path / "data", "out_dir": tmp_path / "out"},
        },
    )
    result = nightly(settings, run_date=date(2024, 7, 4))  # Independence Day: no network is touched
    assert isinstance(result, MarketClosed) and "market closed on 2024-07-04" in result.message
    # early: nothing fetched, stored or published (a bound on its time failed when the machine was busy)
    assert not (tmp_path / "out").exists() and not (tmp_path / "data" / "lake").exists()


def test_latest_pointer_moves_forward_only(tmp_path):
    a = tmp_path / "forecasts" / "asof=2014-12-31" / "forecasts.parquet"
    b = tmp_path / "forecasts" / "asof=2014-12-30" / "forecasts.parquet"
    for p in (a, b):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
    update_latest(tmp_path, date(2014, 12, 31), [a])
    assert update_latest(tmp_path, date(2014, 12, 30), [b]) is None  # an older rerun leaves it alone
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest == {"asof_date": "2014-12-31", "files": ["forecasts/asof=2014-12-31/forecasts.parquet"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_server_answers_on_loopback_and_stops_cleanly(tmp_path, prefect_db_template):
    port = free_port()
    settings = load_settings(
        None, environ={}, overrides={"schedule": {"ui_port": port}, "paths": {"data_dir": tmp_path / "data"}}
    )
    database = tmp_path / "data" / "prefect" / "prefect.db"
    seed_prefect_db(prefect_db_template, database.parent)
    process = start_server(settings, tmp_path / "server.log")
    try:
        url = wait_healthy(settings, process, timeout=120)
        assert url == f"http://127.0.0.1:{port}/api"
        _assert_no_page_can_drive_it(url, f"http://127.0.0.1:{port}")
        # its database is the one in the project's data dir: SQLite's write-ahead log sits beside the file it opened
        assert sorted(p.name for p in database.parent.glob("prefect.db*")) == [
            "prefect.db",
            "prefect.db-shm",
            "prefect.db-wal",
        ]
    finally:
        code = stop_server(process)
    assert code is not None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def _assert_no_page_can_drive_it(api: str, own_origin: str) -> None:
    """A security review: Prefect answered every origin's cross-origin requests (CORS "*") and took writes without
    a CSRF token, so any web page open while the UI ran could read the runs' logs and start the nightly."""
    import urllib.error
    import urllib.request

    def preflight(origin: str) -> dict:
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        request = urllib.request.Request(f"{api}/flow_runs/filter", method="OPTIONS", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return dict(answer.headers)
        except urllib.error.HTTPError as refused:
            return dict(refused.headers)

    assert "access-control-allow-origin" not in {k.lower() for k in preflight("https://evil.example")}
    assert preflight(own_origin).get("access-control-allow-origin") == own_origin  # the UI's own pages
    at_localhost = own_origin.replace("127.0.0.1", "localhost")  # the same pages by the other loopback name
    assert preflight(at_localhost).get("access-control-allow-origin") == at_localhost
    write = urllib.request.Request(
        f"{api}/flow_runs/filter", data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(write, timeout=10)
    assert refused.value.code == 403 and b"CSRF" in refused.value.read()
