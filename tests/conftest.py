"""Shared fixtures. Prefect gets nightcast's environment and a throw-away home before anything imports it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from subprocess import DEVNULL

from flows import prefect_env

os.environ.pop("PREFECT_HOME", None)  # a developer's own Prefect home must not receive the tests' runs
prefect_env.configure(Path(tempfile.mkdtemp(prefix="nightcast-test-")))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from features.prices.schema import conform  # noqa: E402
from features.prices.sources import load_sample  # noqa: E402

# One torch thread per test process. On two shared cores, a process's two spinning OpenMP threads stall whenever
# another process is busy (a 0.7 s model test took 240 s beside another test run); fits choose their own count
# through train.threads (the flow tests pin 1, since runs are compared bit for bit).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sample() -> pl.DataFrame:
    return load_sample()


TEMPLATE_ENV = "TESTS_PREFECT_DB_TEMPLATE"  # not NIGHTCAST_*: the settings loader reads those
_template_build: subprocess.Popen | None = None


def _start_template_build(directory: Path) -> subprocess.Popen:
    """Migrate an empty Prefect database in the background; `prefect.db` appears when done, `failed` if not."""
    building = directory / "building.db"
    env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{building}"}
    upgrade = f"{shlex.quote(sys.executable)} -m prefect server database upgrade -y"
    script = f"{upgrade} && mv building.db prefect.db || touch failed"
    return subprocess.Popen(["sh", "-c", script], cwd=directory, env=env, stdout=DEVNULL, stderr=DEVNULL)


def pytest_configure(config):
    """Under xdist the controller starts migrating Prefect's database before the workers start: they import,
    collect and run the tests that need no server meanwhile, and every Prefect server of the run starts from a
    copy (`prefect_db_template`)."""
    global _template_build
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    directory = Path(tempfile.mkdtemp(prefix="nightcast-prefect-template-"))
    os.environ[TEMPLATE_ENV] = str(directory)  # the workers inherit it
    _template_build = _start_template_build(directory)


def pytest_unconfigure(config):
    if _template_build is not None:
        _template_build.kill()
        _template_build.wait()
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


@pytest.fixture(scope="session")
def prefect_harness(prefect_db_template):
    from prefect.testing import utilities

    def seeded(*args, **kwargs) -> str:
        directory = tempfile.mkdtemp(*args, **kwargs)
        if prefect_db_template is not None:
            shutil.copyfile(prefect_db_template, Path(directory) / "prefect-test.db")
        return directory

    # Prefect 3.8's harness puts its database, prefect-test.db, in a directory from mkdtemp(); should that
    # change, the copy goes unused and the harness migrates as before.
    original, utilities.mkdtemp = utilities.mkdtemp, seeded
    try:
        with utilities.prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        utilities.mkdtemp = original


def business_days(start: date, n: int) -> list[date]:
    days, d = [], start
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def synthetic_prices(tickers: list[str], n_days: int, seed: int = 0, start: date = date(2010, 1, 4)) -> pl.DataFrame:
    """Geometric random walks with consistent OHLCV, in the lake schema."""
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
