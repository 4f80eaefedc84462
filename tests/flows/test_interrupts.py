"""Ctrl-C on a real `nightcast run` (a subprocess with its own Prefect home): a clean stop in seconds with one
line, and no run left "Running".

Under xdist the run talks to the test session's shared Prefect server (`PREFECT_API_URL`, as a user with
`make ui` running has it) and its flow runs are read back from that server's API; in one process it starts
Prefect's temporary server, as a first-time user's run does, and they are read from its database. Starting
that server was a third of the test's 15 s. What kill -9 leaves behind and how the next run mends it (and that
a temporary server dies with its parent) is tested piece by piece in test_lock.py."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import SERVER_ENV, seed_prefect_db

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[source]
kind = "file"
path = "slice.parquet"
[windows]
lookback = 20
test_days = 20
val_days = 20
[model]
hidden_size = 4
attention_size = 4
[train]
epochs = 500
patience = 500
batch_size = 16
progress = false
"""


@pytest.fixture
def workdir(tmp_path, sample, prefect_db_template):
    # one ticker, just past validation.min_rows (300): the run reaches training in a few seconds
    sample.filter(pl.col("ticker") == "NVDA").tail(310).write_parquet(tmp_path / "slice.parquet")
    (tmp_path / "nightcast.toml").write_text(CONFIG)
    seed_prefect_db(prefect_db_template, tmp_path / "prefect")
    return tmp_path


def start(workdir: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NIGHTCAST_"))}
    env |= {"PREFECT_HOME": str(workdir / "prefect"), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # its telemetry write races the first flow run for sqlite
    if SERVER_ENV in os.environ:  # the session's shared server: no temporary one to start
        env["PREFECT_API_URL"] = os.environ[SERVER_ENV]
    env |= {k: v for k, v in os.environ.items() if k.startswith("PREFECT_SERVER_SERVICES_")}  # conftest's idle ones
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives a command
    )


def wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never appeared:\n" + "".join(seen[-30:]))


def run_states(workdir: Path, flow_runs: list[str]) -> list[str]:
    """The state of the run's flow runs: from the shared server's API (`flow_runs`, the ids the run recorded
    in its lock), or from its temporary server's database."""
    if SERVER_ENV not in os.environ:
        with sqlite3.connect(workdir / "prefect" / "prefect.db") as db:
            return [state for (state,) in db.execute("select state_type from flow_run").fetchall()]
    states = []
    for run_id in flow_runs:
        with urllib.request.urlopen(f"{os.environ[SERVER_ENV]}/flow_runs/{run_id}", timeout=10) as response:
            states.append(json.loads(response.read())["state_type"])
    return states


def test_ctrl_c_stops_a_run_in_seconds_with_one_line(workdir):
    proc = start(workdir, "run")
    wait_for(proc, "training LSTM")
    flow_runs = json.loads((workdir / "data" / "nightcast.lock").read_text())["flow_runs"]  # the lock's record
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    interrupted = time.monotonic()
    rest, _ = proc.communicate(timeout=60)
    # about 3 s idle; a loaded CI is slower. The run's last lines say where a rare exit by the signal itself (-2,
    # seen twice in full parallel suites, never alone) came from
    assert proc.returncode == 130 and time.monotonic() - interrupted < 30, (proc.returncode, rest[-3000:])
    assert rest.count("interrupted: stopped") == 1 and "Traceback" not in rest
    assert "Crash detected" not in rest, rest[-3000:]  # Prefect's four or five copies are the UI's, not the console's
    assert (workdir / "data" / "nightcast.lock").read_text() == ""  # released normally
    states = run_states(workdir, flow_runs)
    assert states and "RUNNING" not in states, states
    assert not (workdir / "outputs" / "latest.json").exists()
