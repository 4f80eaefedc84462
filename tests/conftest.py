"""Shared fixtures. Prefect gets nightcast's environment and a throw-away home before anything imports it."""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from subprocess import DEVNULL
from typing import TYPE_CHECKING

from flows import prefect_env

os.environ.pop("PREFECT_HOME", None)  # a developer's own Prefect home must not receive the tests' runs
# The test servers' background services that no test relies on (schedules, late and paused runs, automations,
# cleanups) woke every few seconds: ~3.7% of a core per idle server, with up to four servers alive at once.
# Servers the tests start inherit this; the run and task recorders and the event persister stay on.
for _service in (
    "SCHEDULER",
    "LATE_RUNS",
    "FOREMAN",
    "PAUSE_EXPIRATIONS",
    "CANCELLATION_CLEANUP",
    "REPOSSESSOR",
    "CLEANUP_RECONCILER",
    "TRIGGERS",
    "EVENT_LOGGER",
    "DB_VACUUM",
):
    os.environ.setdefault(f"PREFECT_SERVER_SERVICES_{_service}_ENABLED", "false")
_HOME = Path(tempfile.mkdtemp(prefix="nightcast-test-"))
prefect_env.configure(_HOME)
# each test process (xdist worker or not) removes its own Prefect home on exit: runs left ~0.5 MB each in /tmp
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

import pytest  # noqa: E402

if TYPE_CHECKING:
    import polars as pl

import torch  # noqa: E402

# One torch thread per test process. On two shared cores, a process's two spinning OpenMP threads stall whenever
# another process is busy (a 0.7 s model test took 240 s beside another test run); fits choose their own count
# through train.threads (the flow tests pin 1, since runs are compared bit for bit).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sample() -> pl.DataFrame:
    from features.prices.sources import load_sample

    return load_sample()


TEMPLATE_ENV = "TESTS_PREFECT_DB_TEMPLATE"  # not NIGHTCAST_*: the settings loader reads those
SERVER_ENV = "TESTS_PREFECT_API_URL"
_background: subprocess.Popen | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_template_build(directory: Path, serve_on: int | None = None) -> subprocess.Popen:
    """Migrate an empty Prefect database in the background; `prefect.db` appears when done, `failed` if not.

    With `serve_on`, a Prefect server then starts on that loopback port with a copy of it: the one server the
    xdist workers share."""
    building = directory / "building.db"
    env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{building}"}
    prefect = f"{shlex.quote(sys.executable)} -m prefect"
    serve = "true"
    if serve_on is not None:
        served = directory / "served.db"
        serve = (
            f"cp prefect.db {served} && PREFECT_HOME={directory / 'home'} "
            f"PREFECT_SERVER_DATABASE_CONNECTION_URL=sqlite+aiosqlite:///{served} "
            f"exec {prefect} server start --host 127.0.0.1 --port {serve_on}"
        )
    script = (
        f"if {prefect} server database upgrade -y && mv building.db prefect.db; then {serve}; else touch failed; fi"
    )
    return subprocess.Popen(
        ["sh", "-c", script], cwd=directory, env=env, stdout=DEVNULL, stderr=DEVNULL, start_new_session=True
    )


def pytest_configure(config):
    """Under xdist the controller starts migrating Prefect's database before the workers start, then one Prefect
    server on a copy: the workers import, collect and run the tests that need no server meanwhile, every flow test
    of both workers talks to that one server (`prefect_harness`; starting a server costs ~7 s of a core on this
    machine), and every other server of the run starts from a copy of the database (`prefect_db_template`)."""
    global _background
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    directory = Path(tempfile.mkdtemp(prefix="nightcast-prefect-template-"))
    port = _free_port()
    os.environ[TEMPLATE_ENV] = str(directory)  # the workers inherit both
    os.environ[SERVER_ENV] = f"http://127.0.0.1:{port}/api"
    _background = _start_template_build(directory, serve_on=port)


def pytest_unconfigure(config):
    if _background is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_background.pid, signal.SIGTERM)
        try:
            _background.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(_background.pid, signal.SIGKILL)
            _background.wait()
        os.environ.pop(SERVER_ENV, None)
        shutil.rmtree(os.environ.pop(TEMPLATE_ENV), ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_db_template(tmp_path_factory) -> Path | None:
    """Prefect's database, migrated once per test run, copied wherever a test starts a Prefect server (None:
    the migration failed, and each server migrates its own as it would anyway).

    Migrating an empty database is ~6 of the ~10 s a Prefect server takes to start on 2 cores, and the harness
    of each xdist worker and the tests that start a real CLI or UI server would each pay it. The copy is the
    database a fresh server would create (same Prefect, same migrations), so what the tests exercise is unchanged.
    """
    if TEMPLATE_ENV in os.environ:
        directory = Path(os.environ[TEMPLATE_ENV])
    else:  # one process: migrate now
        directory = tmp_path_factory.mktemp("prefect-template")
        _start_template_build(directory).wait()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (directory / "prefect.db").exists():
            return directory / "prefect.db"
        if (directory / "failed").exists():
            return None
        time.sleep(0.1)
    return None


def seed_prefect_db(template: Path | None, home: Path) -> None:
    """A Prefect home whose database is already migrated (`prefect.db` is where Prefect keeps it)."""
    home.mkdir(parents=True, exist_ok=True)
    if template is not None:
        shutil.copyfile(template, home / "prefect.db")


# A flow run's heartbeat thread (every 180 s by default: crash detection for long runs) sleeps in 1 s steps, and
# the end of every flow run waits for it to wake: ~0.5 s a flow run, ~10 s of a suite that runs ~150 of them. No
# test run lasts long enough to beat; the CLI subprocess tests keep them (an environment variable cannot unset it).
NO_HEARTBEATS = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": None}


@pytest.fixture(scope="session")
def prefect_harness(prefect_db_template):
    """A Prefect API for the flow tests: the run's shared server under xdist, else Prefect's own test harness."""
    if SERVER_ENV in os.environ and prefect_db_template is not None:  # (no template: the server never started)
        yield from _shared_server(os.environ[SERVER_ENV])
        return
    from prefect.testing import utilities

    def seeded(*args, **kwargs) -> str:
        directory = tempfile.mkdtemp(*args, **kwargs)
        if prefect_db_template is not None:
            shutil.copyfile(prefect_db_template, Path(directory) / "prefect-test.db")
        return directory

    # Prefect 3.8's harness puts its database, prefect-test.db, in a directory from mkdtemp(); should that
    # change, the copy goes unused and the harness migrates as before.
    original, utilities.mkdtemp = utilities.mkdtemp, seeded
    from prefect.settings import temporary_settings

    try:
        with utilities.prefect_test_harness(server_startup_timeout=120), temporary_settings(updates=NO_HEARTBEATS):
            yield
    finally:
        utilities.mkdtemp = original


def _shared_server(url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with temporary_settings(updates={PREFECT_API_URL: url, **NO_HEARTBEATS}):
        yield


def business_days(start: date, n: int) -> list[date]:
    days, d = [], start
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def synthetic_prices(tickers: list[str], n_days: int, seed: int = 0, start: date = date(2010, 1, 4)) -> pl.DataFrame:
    """Geometric random walks with consistent OHLCV, in the lake schema."""
    import numpy as np
    import polars as pl

    from features.prices.schema import conform

    rng = np.random.default_rng(seed)
    days = business_days(start, n_days)
    frames = []
    for ticker in tickers:
        close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n_days)))
        open_ = close * np.exp(rng.normal(0, 0.005, n_days))
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, n_days)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, n_days)))
        frames.append(
            pl.DataFrame(
                {
                    "ticker": ticker,
                    "date": days,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "adj_close": close,
                    "volume": rng.integers(1_000, 100_000, n_days).astype(float),
                    "source": "synthetic",
                    "ingested_at": datetime(2020, 1, 1, tzinfo=UTC),
                }
            )
        )
    return conform(pl.concat(frames))


# The order tests are handed to xdist's workers: the feature tests first (no Prefect server needed while the
# shared one starts), then the longest flow tests (each 4-15 s on 2 cores), then the many short ones, which
# fill the gaps so that both workers finish together (in file order the longest came last: one worker ran them
# while the other had nothing left, ~15 s of a 75 s run).
LONGEST = (
    "test_interrupts.py",
    "test_replay.py",
    "test_market_context.py",
    "test_ingest_flow.py",
    "test_nightly.py",
    "test_lock.py",
    "test_deploy.py",
    "test_backtest_flow.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        if item.path.parent.name == "features":
            return 0
        return 1 if item.path.name in LONGEST else 2

    items.sort(key=rank)  # stable: file order within each group
