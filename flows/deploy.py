"""Deployments and the local Prefect server: `nightcast serve` and `nightcast ui`.

Schedules live here, apart from the flows: a `nightly` deployment on a cron in
the exchange's time zone and a weekly `backtest` deployment. `nightcast ui`
starts a real Prefect server bound to loopback with its database in the
project's data directory.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path

from flows import prefect_env
from flows.settings import Settings
from nightcast.errors import NightcastError

log = logging.getLogger("nightcast.flows.deploy")


def deployments(settings: Settings) -> list:
    """The nightly and weekly-backtest deployments, parameterised with the resolved settings (paths absolute).

    Each runs one at a time: a run started while another holds the data would fail on the data lock, so the
    second waits its turn in Prefect (`AwaitingConcurrencySlot`) instead."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.backtest import backtest_flow
    from flows.nightly import nightly

    settings = settings.absolute()
    if settings.runner.kind == "dask":
        # a deployment runs the flow as it is declared (threads): the CLI alone applies the Dask runner, and a
        # deployment that kept runner.kind = "dask" would size its feature chunks for a cluster it does not have
        log.warning("deployment runs use the threads runner: runner.kind = 'dask' applies to CLI runs only")
        threads = settings.runner.model_copy(update={"kind": "threads", "dask_address": None})
        settings = settings.model_copy(update={"runner": threads})
    s = settings.schedule
    params = {"settings": settings.model_dump(mode="json")}
    # a module path (flows.nightly.nightly), importable wherever nightcast is installed: a work pool's worker
    # runs each flow in a temporary directory, where the default file path (relative to here) does not resolve
    module = EntrypointType.MODULE_PATH
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    common = {"entrypoint_type": module, "parameters": params, "tags": ["nightcast"]}
    return [
        nightly.to_deployment(
            name="nightly",
            schedules=[Cron(s.nightly_cron, timezone=s.timezone)],
            description=f"ingest, evaluate against the baselines, forecast and publish, after the close: "
            f"cron '{s.nightly_cron}' in {s.timezone}",
            concurrency_limit=one_at_a_time,
            **common,
        ),
        backtest_flow.to_deployment(
            name="weekly-backtest",
            schedules=[Cron(s.backtest_cron, timezone=s.timezone)],
            description=f"walk-forward backtest of the model, its ablation and the baselines: "
            f"cron '{s.backtest_cron}' in {s.timezone}",
            concurrency_limit=one_at_a_time,
            **common,
        ),
    ]


def serve(settings: Settings) -> None:
    """Register both deployments and run their scheduled runs until interrupted (Ctrl-C)."""
    from prefect import serve as prefect_serve

    from flows.preflight import prefect_api

    prefect_api(settings, "serve")  # a server, as Prefect resolves its URL, that answers: else one line
    prefect_serve(*deployments(settings))


def register_on_pool(settings: Settings, pool: str) -> list[str]:
    """Register both deployments on the Prefect work pool `pool` (a process pool, made when missing) for the
    `prefect worker`s started on it to run; returns the deployments' names. Nothing is served here."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:  # the server was checked by the CLI's preflight
        try:
            kind = client.read_work_pool(pool).type
        except ObjectNotFound:
            kind = client.create_work_pool(WorkPoolCreate(name=pool, type="process")).type
    if kind != "process":
        raise NightcastError(f"work pool {pool!r} is of type {kind!r}: nightcast's deployments need a process pool")
    # a worker's flow-run process gets nightcast's Prefect environment as the CLI's has it (its own loggers sent to
    # the UI, Prefect's home in the data directory); `serve` runs flows in its own process, which has it already
    # (and Prefect refuses job variables there)
    environment = {"env": prefect_env.variables(settings.absolute().paths.data_dir)}
    names = []
    for deployment in deployments(settings):
        deployment.job_variables = environment
        deployment.apply(work_pool_name=pool)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names


def server_environment(settings: Settings) -> dict[str, str]:
    home = (settings.paths.data_dir / "prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    origin = f"http://{settings.schedule.ui_host}:{settings.schedule.ui_port}"
    if env.get(prefect_env.CORS_ORIGINS) == prefect_env.NO_ORIGIN:  # the temporary server's default, not a choice
        del env[prefect_env.CORS_ORIGINS]
    # the UI's pages by either loopback name (its API URL below names the host; a page at localhost calls it)
    same = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(settings.schedule.ui_host)
    origins = origin + (f",http://{same}:{settings.schedule.ui_port}" if same else "")
    return (
        prefect_env.browser_safe(origins)  # a deliberate setting in the environment wins
        | env
        | {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_API_URL": f"{origin}/api",
        }
    )


def start_server(settings: Settings, log_file: Path | None = None) -> subprocess.Popen:
    """`prefect server start` bound to `schedule.ui_host:ui_port` (loopback by default), in its own process group."""
    s = settings.schedule
    prefect = Path(sys.executable).with_name("prefect")
    command = [
        str(prefect) if prefect.exists() else "prefect",
        "server",
        "start",
        "--host",
        s.ui_host,
        "--port",
        str(s.ui_port),
    ]
    out = _append_only(log_file) if log_file else subprocess.DEVNULL
    return subprocess.Popen(
        command, env=server_environment(settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _append_only(path: Path):
    """`path` opened to append, never through a symbolic link (a link planted there would have the server's log
    appended to whatever file it points to); closed with the process."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644), "ab")


def wait_healthy(settings: Settings, process: subprocess.Popen, timeout: float = 90.0) -> str:
    """Poll /api/health until the server answers; return the API URL."""
    url = f"http://{settings.schedule.ui_host}:{settings.schedule.ui_port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NightcastError(
                f"the Prefect server exited with status {process.returncode} (port {settings.schedule.ui_port} in use?)"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return url
        except OSError:
            time.sleep(0.5)
    raise NightcastError(f"the Prefect server did not answer {url}/health within {timeout:.0f}s")


def stop_server(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM the server's process group, then SIGKILL if it lingers; return its exit status."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def start_ephemeral_server() -> None:
    """Start Prefect's temporary API server (when no server is configured) in a session of its own.

    A terminal's Ctrl-C signals the whole foreground process group: a temporary server in that group stops at
    once, and the run can no longer record that it was interrupted (minutes of retries, then a run shown
    "Running" forever). In its own session only nightcast gets the signal, records the crash, and stops the
    server on its way out. The command and environment are Prefect's own; only the session differs.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():  # a real server lives apart already
        return
    _OwnSessionServer().start()


def _die_with_parent() -> None:
    """In the server's process, before it starts: on Linux, be sent SIGTERM when nightcast dies, however it
    dies (kill -9 included), so no temporary server is ever left running."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@cache
def _own_session_server_class():
    import prefect.server.api.server as module

    class OwnSessionServer(module.SubprocessASGIServer):
        def _run_uvicorn_command(self):
            class Spawner:  # the module's `subprocess`, whose Popen starts a new session
                def __getattr__(self, name):
                    return getattr(subprocess, name)

                @staticmethod
                def Popen(*args, **kwargs):  # noqa: N802 (subprocess' name)
                    return subprocess.Popen(*args, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)

            # swapped for the instant of the spawn, at start-up (before any task thread exists)
            original, module.subprocess = module.subprocess, Spawner()
            try:
                return super()._run_uvicorn_command()
            finally:
                module.subprocess = original

    return OwnSessionServer


def _OwnSessionServer():  # noqa: N802 (a class, built on first use so that Prefect is imported only then)
    return _own_session_server_class()()
