"""Runs that cannot work fail in a second, with one line and exit 2, before Prefect starts."""

import contextlib
import http.server
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flows.preflight import preflight
from flows.settings import load_settings
from nightcast.errors import ConfigError


def test_sources_outputs_and_horizons_that_cannot_work(tmp_path):
    def settings(**sections):
        return load_settings(None, environ={}, overrides={"paths": {"data_dir": tmp_path / "data"}} | sections)

    with pytest.raises(ConfigError, match="price file not found: .*missing.csv"):
        preflight(settings(source={"kind": "file", "path": tmp_path / "missing.csv"}), "run")
    (tmp_path / "prices.xlsx").write_text("x")
    with pytest.raises(ConfigError, match="unsupported file type '.xlsx'"):
        preflight(settings(source={"kind": "file", "path": tmp_path / "prices.xlsx"}), "ingest")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="output directory .*a-file/out: .*a-file is a file, not a directory"):
        preflight(settings(paths={"data_dir": tmp_path / "data", "out_dir": tmp_path / "a-file" / "out"}), "run")
    with pytest.raises(
        ConfigError, match=r"longest horizon \(300 sessions\) must be shorter than .*windows.test_days \(250\)"
    ):
        preflight(settings(features={"horizons": [1, 300]}), "run")
    # the combination's held dates and a purge of the longest horizon leave early stopping nothing: every fit
    # failed after the ingest and the features
    short = {"val_days": 10}
    with pytest.raises(ConfigError, match=r"windows.val_days 10: with 5 dates held .* the 5 left to early-stop on"):
        preflight(settings(windows=short), "run")
    with pytest.raises(ConfigError, match=r"combination_holdout 0.05 of windows.val_days 10 holds no date"):
        preflight(settings(windows=short, publish={"combination_holdout": 0.05}), "backtest")
    preflight(settings(windows=short, publish={"forecast": "model"}), "run")  # a plain model holds nothing back
    preflight(settings(windows=short, backtest={"models": ["attention_lstm", "random_walk"]}), "backtest")
    with pytest.raises(ConfigError, match=r"unknown exchange calendar 'XLONX'"):  # it failed after the features
        preflight(settings(publish={"calendar": "XLONX"}), "run")
    preflight(settings(paths={"data_dir": tmp_path / "d", "out_dir": tmp_path / "new" / "out"}), "run")
    assert not (tmp_path / "new").exists() and not (tmp_path / "d").exists()  # checking leaves nothing
    if sys.platform.startswith("linux"):  # a place even root cannot write
        with pytest.raises(ConfigError, match="output directory .*/proc/nightcast-out is not writable"):
            preflight(settings(paths={"data_dir": tmp_path / "d", "out_dir": "/proc/nightcast-out"}), "run")


def test_the_cli_fails_fast_and_literally(tmp_path):
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--path", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2 and time.perf_counter() - started < 20  # ~0.3 s: no Prefect server started
    assert proc.stderr.strip() == f"error: price file not found: {tmp_path / 'missing.csv'}"
    assert proc.stdout == ""  # no settings dump unless --verbose


def test_messages_are_printed_literally_not_as_markup(capsys):
    from flows.cli import main

    assert main(["record", "--asof", "[too_short]"]) == 2
    assert "got '[too_short]'" in capsys.readouterr().err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_a_prefect_server_that_does_not_answer_is_one_line_naming_it(tmp_path, monkeypatch):
    import flows.preflight as pf

    settings = load_settings(None, environ={}, overrides={"paths": {"data_dir": tmp_path / "data"}})
    stale = f"http://127.0.0.1:{_closed_port()}/api"
    monkeypatch.setattr(pf, "configured_api_url", lambda: stale)
    for command in ("run", "replay", "train", "backtest", "ingest"):
        with pytest.raises(ConfigError) as info:
            preflight(settings, command)
        assert str(info.value) == (
            f"no Prefect server answers at PREFECT_API_URL={stale} (connection refused): start one with "
            "`nightcast ui` (or `make ui`, which serves http://127.0.0.1:4200/api), or unset PREFECT_API_URL"
        )
    with pytest.raises(ConfigError, match=r"PREFECT_API_URL=.*start one with `nightcast ui`.* for nightcast serve$"):
        preflight(settings, "serve")  # serve cannot do without a server: no advice to unset it
    preflight(settings, "record")  # reads files only
    preflight(settings, "ui")  # starts the server

    with _answering(lambda request: 200 if request.path == "/api/health" else 404) as live:
        monkeypatch.setattr(pf, "configured_api_url", lambda: f"{live}/api")
        preflight(settings, "run")
        preflight(settings, "serve")
        monkeypatch.setattr(pf, "configured_api_url", lambda: live)  # the UI's address, not the API's
        with pytest.raises(ConfigError, match=r"\(HTTP 404 on /health: is it the API's URL, ending in /api\?\)"):
            preflight(settings, "run")
    monkeypatch.setattr(pf, "configured_api_url", lambda: None)  # Prefect's temporary server
    preflight(settings, "run")
    with pytest.raises(ConfigError, match="nightcast serve needs a running Prefect server"):
        preflight(settings, "serve")


@pytest.mark.parametrize("command", ["run", "serve"])
def test_the_cli_stops_at_a_stale_prefect_api_url_in_a_second(tmp_path, command):
    import os

    url = f"http://127.0.0.1:{_closed_port()}/api"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PREFECT_API_URL": url},
        timeout=120,
    )
    # before: exit 1 after ~10 s and 113 lines, three chained tracebacks ending "Failed to reach API"
    assert proc.returncode == 2 and time.perf_counter() - started < 20, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and proc.stdout == ""  # one line, however long
    assert line.startswith(f"error: no Prefect server answers at PREFECT_API_URL={url} (connection refused)")
    assert "nightcast ui" in line and len(line) > 140  # longer than the console's width when piped: not broken
    assert not (tmp_path / "data" / "lake").exists()  # nothing ingested


def test_record_of_replays_before_any_replay_says_so(tmp_path, capsys, monkeypatch):
    from flows.cli import main

    monkeypatch.setenv("NIGHTCAST_PATHS__OUT_DIR", str(tmp_path / "outputs"))
    (tmp_path / "outputs").mkdir()
    assert main(["record", "--replay"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no replay has been run yet") and "`nightcast replay` makes one" in err


def test_a_dask_scheduler_that_does_not_answer_is_one_line_before_prefect_starts(tmp_path):
    """Before: after the ingest, 30 s in, three tracebacks from distributed and tornado; with one feature chunk
    (nothing sent to the cluster) the wrong address was not noticed at all."""
    started = time.perf_counter()
    address = f"tcp://127.0.0.1:{_closed_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--dask-address", address],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and time.perf_counter() - started < 20, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: the Dask scheduler at '{address}' (--dask-address, runner.dask_address) does not")
    assert "refused" in line.lower() and not (tmp_path / "data" / "lake").exists()  # nothing ingested


def test_a_dask_address_is_checked_for_its_form_and_for_a_scheduler_answering(tmp_path):
    import os
    import socket

    from flows.preflight import dask_scheduler

    for bad in ("tcp://:8786", "tcp://127.0.0.1:port", "tcp://127.0.0.1", "127.0.0.1"):
        with pytest.raises(ConfigError, match=r"expected tcp://HOST:PORT"):
            dask_scheduler(bad)
    dask_scheduler("ucx://10.0.0.5:13337")  # not over TCP: left to Dask
    # something else listening there (a web server, the dashboard's port): the run hung for good once a chunk went
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ConfigError, match=r"accepts connections but does not answer as a Dask scheduler"):
            dask_scheduler(f"tcp://127.0.0.1:{port}")
    # a real scheduler answers; the scheme is optional, as for Dask's own Client
    port = _closed_port()
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)]
        + ["--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DASK_DISTRIBUTED__DIAGNOSTICS__NVML": "False"},
    )
    try:
        for _ in range(100):  # it listens within a few seconds
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        dask_scheduler(f"tcp://127.0.0.1:{port}")
        dask_scheduler(f"127.0.0.1:{port}")
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


def test_a_price_file_that_cannot_be_read_fails_before_anything_starts(tmp_path):
    """A new-user test: an empty file, a corrupt Parquet file, a missing column failed only after Prefect's server
    had started (10-17 s in); only a missing file failed at once."""

    def run_on(name: str, body: bytes | str) -> None:
        path = tmp_path / name
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
        overrides = {"paths": {"data_dir": tmp_path / "data"}, "source": {"kind": "file", "path": path}}
        preflight(load_settings(None, environ={}, overrides=overrides), "run")

    with pytest.raises(ConfigError, match=r"empty.csv: cannot read: the file is empty"):
        run_on("empty.csv", b"")
    with pytest.raises(ConfigError, match=r"junk.parquet: cannot read"):
        run_on("junk.parquet", b"this is not parquet at all")
    with pytest.raises(ConfigError, match=r"header.csv: no price rows below the header \['date', 'ticker', 'close'\]"):
        run_on("header.csv", "date,ticker,close\n")
    with pytest.raises(ConfigError, match=r"no_close.csv: missing required columns \['close'\]"):
        run_on("no_close.csv", "date,ticker,open\n2024-01-02,AAA,1\n")
    with pytest.raises(ConfigError, match=r"us.csv: 3 of 3 rows have a date that could not be parsed .*day/month"):
        run_on("us.csv", "date,ticker,close\n01/02/2024,AAA,1\n01/03/2024,AAA,1\n01/02/2024,BBB,1\n")
    run_on("good.csv", "date,ticker,close\n2024-01-02,AAA,1\n2024-01-03,AAA,n/a\n")  # a bad cell is the ingest's
    assert not (tmp_path / "data" / "lake").exists()


def test_a_password_in_the_prefect_api_url_is_never_printed_and_is_sent_as_basic_auth():
    """A security review: a `user:password@` URL was echoed whole in the error and could never be reached."""
    import base64

    from flows.preflight import _unreachable, shown_url

    seen = []
    with _answering(lambda request: seen.append((request.path, request.headers.get("Authorization"))) or 200) as live:
        url = live.replace("http://", "http://alice:S3cret@") + "/api"
        assert _unreachable(url, 5) is None
    port = live.rsplit(":", 1)[1]
    assert seen == [("/api/health", "Basic " + base64.b64encode(b"alice:S3cret").decode())]
    assert shown_url(url) == f"http://alice:***@127.0.0.1:{port}/api"
    assert shown_url("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200/api"
    # Prefect's client sends a URL's password over HTTP but not over its events websocket (a verifier's run lost its
    # task runs, the password printed in the warning), and made its "View at" links from it: it goes to Prefect's
    # own setting for a server's password instead
    from flows import prefect_env

    environ = {"PREFECT_API_URL": url.replace("S3cret", "S3c%40ret")}
    prefect_env.configure(Path(tempfile.mkdtemp()), environ)
    assert environ["PREFECT_API_URL"] == f"http://127.0.0.1:{port}/api"
    assert environ["PREFECT_API_AUTH_STRING"] == "alice:S3c@ret"
    environ = {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    prefect_env.configure(Path(tempfile.mkdtemp()), environ)
    assert environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api" and "PREFECT_API_AUTH_STRING" not in environ


def test_a_prefect_server_that_wants_a_password_is_one_line(tmp_path, monkeypatch):
    """A server with PREFECT_SERVER_API_AUTH_STRING answers /health to anyone and the client's first real call with
    401, which Prefect raised as a traceback."""
    import base64

    import flows.preflight as pf

    wanted = "Basic " + base64.b64encode(b"u:pw").decode()
    settings = load_settings(None, environ={}, overrides={"paths": {"data_dir": tmp_path / "data"}})
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    with _answering(
        lambda r: 200 if r.path.endswith("/health") or r.headers.get("Authorization") == wanted else 401
    ) as live:
        monkeypatch.setattr(pf, "configured_api_url", lambda: f"{live}/api")
        with pytest.raises(ConfigError, match="wants a password: set PREFECT_API_AUTH_STRING=user:password$"):
            preflight(settings, "run")
        monkeypatch.setenv("PREFECT_API_AUTH_STRING", "u:wrong")
        with pytest.raises(ConfigError, match="the one in PREFECT_API_AUTH_STRING is refused$"):
            preflight(settings, "run")
        monkeypatch.setenv("PREFECT_API_AUTH_STRING", "u:pw")
        preflight(settings, "run")


@contextlib.contextmanager
def _answering(status: Callable[[http.server.BaseHTTPRequestHandler], int]) -> Iterator[str]:
    """A local HTTP server answering each GET with `status(request)` (and a body "true"); yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(status(self))
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_serve_checks_the_settings_it_stores_in_its_deployments(tmp_path):
    """A review: `serve --path typo.csv` was stored in both deployments, and every scheduled run failed hours later."""
    overrides = {"source": {"kind": "file", "path": tmp_path / "typo.csv"}, "paths": {"data_dir": tmp_path / "d"}}
    with pytest.raises(ConfigError, match="price file not found: .*typo.csv"):
        preflight(load_settings(None, environ={}, overrides=overrides), "serve")
