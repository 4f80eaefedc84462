"""Scale-out on real engines, tried on one machine (issue 15, point 6).

Sets up, in a temporary directory, everything a small cluster needs, all bound to 127.0.0.1, and runs the
nightly job three ways on the bundled sample (offline), each in its own data and output directory:

1. `nightcast run` with the threads runner (the baseline);
2. `nightcast run --dask-address tcp://127.0.0.1:PORT` against a real `dask scheduler` and two
   `dask worker` processes (one thread each): the per-chunk feature builds run in the worker processes;
3. the `nightly` deployment of `flows.deploy.deployments()` on a Prefect *process* work pool, picked up by a
   `prefect worker` that runs it as a flow-run subprocess.

All three talk to one local `prefect server` (as a cluster's machines would), and every process is stopped at
the end, on error and on Ctrl-C too. The published forecasts of runs 2 and 3 are compared with run 1's, every
column but `run_id`, exactly.

    .venv/bin/python benchmarks/scaleout.py [--epochs 2] [--threads 1] [--chunk-size 2] [--keep]

Settings shared by the three runs: `train.epochs` (default 2 here: the engines are on trial, not the model),
`train.threads` pinned (a CPU fit is reproducible at a fixed thread count; the default policy re-measures free
cores and could pick differently in each run), `runner.chunk_size` 2 (the sample's 5 tickers in 3 feature
tasks: with the default 50 there would be one chunk, built in the flow's own process, and the Dask workers
would get nothing to do), `runner.cache_features` off (see below), progress bars off. Only the runner differs
between runs 1 and 2. The deployment is applied without its cron (one run, on demand) and with a module
entrypoint (`flows.nightly.nightly`): the default one is a file path relative to the directory `deployments()`
was called from, which a process worker's flow run (in a fresh temporary directory) cannot resolve.

Why the feature cache is off: with it on (the default) and two feature chunks in threads side by side, a run
here deadlocked once in four (the threads runner, inside the deployment's flow run): Prefect persisting one
chunk's cached result pickles a polars DataFrame (`DataFrame.serialize`, which holds the GIL and waits on polars'
thread pool) while the other chunk's build runs a Python `map_batches` function (features/catalogue.py) on a
polars pool thread that waits for the GIL. A fresh data directory only ever misses the cache anyway.

What runs where today: only the feature build is fanned out (per chunk of `runner.chunk_size` tickers;
features never mix tickers). Training, the walk-forward evaluation, forecasting and publishing run in the
flow's own process (one Prefect task each), so on the sample the Dask run costs more than it saves; a work
pool spreads whole flow runs, not the work inside one.

How walk-forward folds would be distributed when one GPU is not enough (not implemented). `walk_forward`
(forecasting/backtest.py) loops over `Schedule.folds`: fold k refits every forecaster on the labels realised
before its refit date and forecasts its block of origins up to the next refit. The unit of work is one
(fold, model[, seed]) fit + predict; the panel is shared and read-only, so it is sent to each worker once
(scattered, or read from the feature cache on shared storage), and a task carries only the fold's split
(index arrays) and the settings. The default `backtest.warm_start = true` starts fold k from fold k-1's
weights, which chains each neural model's folds: fold k cannot start before fold k-1 ends. With warm start
the parallelism is therefore models x seeds (the attention model and its ablation, times K seeds), each chain
of F folds on one GPU (or, per issue 15 point 3, many chains stacked on one GPU), and a cluster buys at most
that factor; the wall time is never below one chain's F sequential fits. Cold start (`--cold-start`,
`backtest.warm_start = false`) makes all F x models x seeds fits independent: they fan out to as many GPUs as
there are fits (one Dask worker per GPU, tasks asking for `resources={"GPU": 1}`), and the wall time falls to
about the longest single fit plus the panel's transfer, at the price of more epochs per fit (348 s against
289 s sequentially on the sample) and a different recipe: a cold-started fold's model is not the one a
warm-started chain reaches, so a cluster backtest must say which it ran and the published recipe must be
evaluated the same way. A middle way restarts the chain every few folds (independent segments, warm within
each). The baselines are cheap and go anywhere. The reduce step stays on the client: predictions gathered in
fold order, then the conformal intervals (they use residuals across earlier folds) and the metrics. With every
fit seeded as today and a pinned thread count, the result equals a sequential run of the same settings (as
runs 1-3 here equal each other).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
POOL = "nightcast-scaleout"
# `--host` binds a scheduler's or worker's TCP port only, and `--no-dashboard` drops the bokeh pages only: their
# HTTP server (health, metrics) still listens on every interface (the scheduler on :8787) unless told otherwise
LOOPBACK_HTTP = ("--dashboard-address", f"{LOOPBACK}:0")


def _die_with_parent() -> None:
    """In a child, before it starts: on Linux, get SIGTERM when this script dies, even by kill -9."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Fleet:
    """Every process this script starts, each in its own session, stopped together (newest first)."""

    logs: Path
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name.replace(' ', '_')}.log", "ab")  # noqa: SIM115 (the child holds it)
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        return self.adopt(name, process)

    def adopt(self, name: str, process: subprocess.Popen) -> subprocess.Popen:
        self.processes.append((name, process))
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name.replace(' ', '_')}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tree(self) -> list:
        import psutil

        found = []
        for _, process in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(process.pid)
                found += [parent, *parent.children(recursive=True)]
        return found

    def listening(self) -> dict[str, str]:
        """Every address a live process of the fleet listens on (ip:port), and the process's name."""
        import psutil

        out = {}
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                for c in p.net_connections("inet"):
                    if c.status == "LISTEN":
                        out[f"{c.laddr.ip}:{c.laddr.port}"] = f"{p.name()} {p.pid}"
        return dict(sorted(out.items()))

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM each process group (newest first), SIGKILL what lingers; return how many processes survive."""
        import psutil

        everyone = self.tree()  # descendants that left the group (a flow-run subprocess) are stopped too
        for _, process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        _, alive = psutil.wait_procs(everyone, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        _, alive = psutil.wait_procs(alive, timeout=5)
        return len(alive)


@dataclass
class Row:
    what: str
    seconds: float
    note: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This process's environment without any Prefect, Dask or nightcast setting a caller may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NIGHTCAST_", "DASK_"))}


def nightcast_settings(args: argparse.Namespace) -> dict[str, str]:
    return {
        "NIGHTCAST_TRAIN__EPOCHS": str(args.epochs),
        "NIGHTCAST_TRAIN__THREADS": str(args.threads),
        "NIGHTCAST_TRAIN__PROGRESS": "false",
        "NIGHTCAST_RUNNER__CHUNK_SIZE": str(args.chunk_size),
        # no feature cache: each run starts empty, so it could only miss, and persisting a chunk's result while
        # another chunk builds in a thread beside it can deadlock the threads runner (see the docstring)
        "NIGHTCAST_RUNNER__CACHE_FEATURES": "false",
    }


def prefect_client_env(base: dict[str, str], data_dir: Path, api: str) -> dict[str, str]:
    """What a process that runs flows or tasks needs: nightcast's Prefect defaults for `data_dir`, the server."""
    from flows import prefect_env

    return base | prefect_env.variables(data_dir) | {"PREFECT_API_URL": api}


def start_prefect_server(fleet: Fleet, tmp: Path) -> tuple[str, float]:
    """`nightcast ui`'s server (flows.deploy.start_server) on a free loopback port, its database under tmp."""
    from flows.deploy import start_server, wait_healthy
    from flows.settings import load_settings

    settings = load_settings(
        None, environ={}, overrides={"schedule": {"ui_port": free_port()}, "paths": {"data_dir": tmp / "server"}}
    )
    started = time.perf_counter()
    process = fleet.adopt("prefect server", start_server(settings, fleet.logs / "prefect_server.log"))
    return wait_healthy(settings, process, timeout=180), time.perf_counter() - started


def run_nightly(fleet: Fleet, name: str, flags: list[str], env: dict, cwd: Path, timeout: float) -> Row:
    """`nightcast run FLAGS` in its own directory; its wall time and its own stage times."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = [str(BIN / "nightcast"), "run", "--source", "sample", "--out", str(cwd / "outputs"), *flags]
    started = time.perf_counter()
    process = fleet.start(name, command, env | {"NIGHTCAST_DATA_DIR": str(cwd / "data")}, cwd)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{name} ran past {timeout:.0f} s") from None
    seconds = time.perf_counter() - started
    text = fleet.log(name)
    if code != 0:
        raise RuntimeError(f"{name} exited with status {code}:\n" + "\n".join(text.splitlines()[-30:]))
    stages = re.search(r"done in [\d.]+s \((.*)\)", text)
    return Row(name, seconds, stages.group(1) if stages else "")


def dask_command(role: str) -> list[str]:
    """`dask scheduler` / `dask worker`, or the module behind each where the `dask` command is missing."""
    cli = BIN / "dask"
    return [str(cli), role] if cli.exists() else [sys.executable, "-m", f"distributed.cli.dask_{role}"]


def read_address(scheduler_file: Path, fleet: Fleet, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):  # not written yet, or not whole yet
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.2)
    raise RuntimeError(f"the Dask scheduler wrote no address in {timeout:.0f} s:\n" + fleet.log("dask scheduler"))


def start_dask(fleet: Fleet, tmp: Path, env: dict[str, str], workers: int) -> tuple[str, float]:
    """A scheduler and `workers` single-thread worker processes, all on loopback, no dashboards."""
    home = tmp / "dask"
    home.mkdir()
    started = time.perf_counter()
    scheduler_file = home / "scheduler.json"
    fleet.start(
        "dask scheduler",
        [*dask_command("scheduler"), "--host", LOOPBACK, "--port", "0", "--no-dashboard", *LOOPBACK_HTTP]
        + ["--scheduler-file", str(scheduler_file), "--idle-timeout", "3600"],  # a leaked one still ends
        env,
        home,
    )
    address = read_address(scheduler_file, fleet)
    for i in range(1, workers + 1):
        fleet.start(
            f"dask worker {i}",
            [*dask_command("worker"), address, "--host", LOOPBACK, "--nthreads", "1", "--no-dashboard", *LOOPBACK_HTTP]
            + ["--name", f"worker-{i}", "--local-directory", str(home / f"w{i}"), "--death-timeout", "60"],
            env,
            home,
        )
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
    return address, time.perf_counter() - started


def _import_tasks() -> None:
    importlib.import_module("flows.tasks")  # returns nothing: a module sent back would import it here too


def warm_workers(address: str) -> float:
    """Import the feature tasks' module (polars, Prefect, torch through `forecasting`) in every worker: the cost a
    fresh worker pays once, apart from the run."""
    from distributed import Client

    started = time.perf_counter()
    with Client(address, timeout=60) as client:
        client.run(_import_tasks)
    return time.perf_counter() - started


def dask_nightly(fleet: Fleet, address: str, env: dict, cwd: Path, timeout: float) -> tuple[Row, dict[str, int]]:
    """The nightly with --dask-address; which worker ran each feature task and for how long, from the
    scheduler's task stream."""
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.get_task_stream()  # registers the scheduler's task-stream plugin: it records from now on
        row = run_nightly(fleet, "nightly, --dask-address", ["--dask-address", address], env, cwd, timeout)
        names = client.run_on_scheduler(lambda dask_scheduler: {a: w.name for a, w in dask_scheduler.workers.items()})
        stream = [r for r in client.get_task_stream() if "make_chunk_features" in str(r["key"])]
    per_worker: dict[str, int] = {}
    for record in stream:
        worker = str(names.get(record["worker"], record["worker"]))
        per_worker[worker] = per_worker.get(worker, 0) + 1
    spans = [(s["start"], s["stop"]) for r in stream for s in r["startstops"] if s["action"] == "compute"]
    tasks = ", ".join(f"{w} {n}" for w, n in sorted(per_worker.items())) or "none"
    row.note += f"; feature tasks per worker: {tasks}"
    if spans:
        row.note += (
            f"; on the workers {sum(b - a for a, b in spans):.1f}s in all "
            f"({max(b for _, b in spans) - min(a for a, _ in spans):.1f}s first start to last end)"
        )
    return row, per_worker


def apply_nightly_deployment(settings) -> object:
    """The `nightly` deployment of `deployments()`, on the work pool, runnable from any directory, no cron."""
    from flows.deploy import deployments

    (deployment,) = [d for d in deployments(settings) if d.name == "nightly"]
    deployment.entrypoint = "flows.nightly.nightly"  # a module path: the installed package, from any directory
    deployment.schedules = []  # one run, on demand: no scheduled runs in this temporary server
    return deployment.apply(work_pool_name=POOL)


def wait_flow_run(flow_run_id, timeout: float):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise RuntimeError(f"the deployment's flow run was still {run.state_name} after {timeout:.0f} s")
            time.sleep(1.0)


def pool_nightly(fleet: Fleet, tmp: Path, base: dict, api: str, args: argparse.Namespace) -> list[Row]:
    """A process work pool, the nightly deployment applied to it, a `prefect worker` that runs one flow run."""
    from flows.settings import load_settings

    cwd = tmp / "pool"
    cwd.mkdir()
    env = prefect_client_env(base, cwd / "data", api) | {"PREFECT_WORKER_QUERY_SECONDS": "2"}
    Path(env["PREFECT_HOME"]).mkdir(parents=True)  # Prefect makes its home without parents
    started = time.perf_counter()
    prefect = str(BIN / "prefect")
    subprocess.run(
        [prefect, "work-pool", "create", POOL, "--type", "process"], env=env, cwd=cwd, check=True, capture_output=True
    )
    settings = load_settings(
        None,
        environ=nightcast_settings(args),
        overrides={"paths": {"data_dir": cwd / "data", "out_dir": cwd / "outputs"}},
    )
    deployment_id = apply_nightly_deployment(settings)
    fleet.start(
        "prefect worker",
        [prefect, "worker", "start", "--pool", POOL, "--type", "process", "--limit", "1"]
        + ["--name", "scaleout-worker"],
        env,
        cwd,
    )
    setup = time.perf_counter() - started
    from prefect.deployments import run_deployment

    started = time.perf_counter()
    created = run_deployment(deployment_id, timeout=0)
    run = wait_flow_run(created.id, args.timeout)
    seconds = time.perf_counter() - started
    if run.state_name != "Completed":
        raise RuntimeError(f"the deployment's flow run ended {run.state_name}:\n" + fleet.log("prefect worker")[-4000:])
    pickup = (run.start_time - run.created).total_seconds() if run.start_time and run.created else float("nan")
    return [
        Row("work pool + deployment + prefect worker", setup, f"pool '{POOL}' (process), deployment nightly/nightly"),
        Row(
            "nightly, deployment run by the worker",
            seconds,
            f"flow run {run.total_run_time.total_seconds():.1f}s; created->running {pickup:.1f}s",
        ),
    ]


def published(run_dir: Path):
    import polars as pl

    (path,) = sorted((run_dir / "outputs" / "forecasts").glob("asof=*/forecasts.parquet"))
    frame = pl.read_parquet(path)
    keep = [c for c in frame.columns if "run_id" not in c]
    return frame.select(keep).sort("ticker", "horizon"), path


def compare(baseline: Path, other: Path) -> tuple[bool, str]:
    """Every column but the run ids, exactly; where they differ, by how much."""
    (a, pa), (b, pb) = published(baseline), published(other)
    if pa.parent.name != pb.parent.name or a.columns != b.columns or a.height != b.height:
        return False, f"{pa.parent.name} {a.shape} {a.columns} vs {pb.parent.name} {b.shape} {b.columns}"
    if a.equals(b):
        return True, f"{a.height} forecasts, {len(a.columns)} columns equal"
    differ = []
    for c in a.columns:
        if not a[c].equals(b[c]):
            numeric = a[c].dtype.is_numeric() and b[c].dtype.is_numeric()
            differ.append(f"{c} (max |difference| {(a[c] - b[c]).abs().max():.3g})" if numeric else c)
    return False, "differ in " + ", ".join(differ)


def source_state() -> str:
    """A hash of the code every run imports: a working tree edited during the trial voids its comparisons."""
    digest = hashlib.sha256()
    for package in ("nightcast", "features", "forecasting", "flows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def trial(fleet: Fleet, tmp: Path, args: argparse.Namespace) -> tuple[list[Row], dict]:
    """Server, threads baseline, Dask cluster and its run, work pool and its run; the comparisons."""
    rows, facts = [], {}
    code = source_state()
    api, seconds = start_prefect_server(fleet, tmp)
    rows.append(Row("prefect server start", seconds, api))
    # this process's own Prefect client (deployment, flow run): Prefect reads its settings on first import
    assert "prefect" not in sys.modules, "Prefect was imported before its environment was set"
    os.environ.update(prefect_client_env({}, tmp / "script", api))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True)
    base = clean_environment() | nightcast_settings(args)
    threads = run_nightly(
        fleet,
        "nightly, threads runner",
        [],
        prefect_client_env(base, tmp / "threads" / "data", api),
        tmp / "threads",
        args.timeout,
    )
    rows.append(threads)
    address, seconds = start_dask(fleet, tmp, prefect_client_env(base, tmp / "dask" / "data", api), args.workers)
    rows.append(Row(f"dask scheduler + {args.workers} workers start", seconds, address))
    rows.append(Row("dask workers import flows.tasks", warm_workers(address), "once per fresh worker"))
    row, per_worker = dask_nightly(
        fleet, address, prefect_client_env(base, tmp / "dask" / "data", api), tmp / "dask", args.timeout
    )
    rows.append(row)
    rows += pool_nightly(fleet, tmp, base, api, args)
    facts["listening"] = fleet.listening()
    facts["source_changed"] = source_state() != code
    facts["dask_identical"], facts["dask_detail"] = compare(tmp / "threads", tmp / "dask")
    facts["pool_identical"], facts["pool_detail"] = compare(tmp / "threads", tmp / "pool")
    facts["dask_tasks"], facts["dask_workers_used"] = sum(per_worker.values()), len(per_worker)
    facts["threads_s"], facts["dask_s"], facts["pool_s"] = threads.seconds, row.seconds, rows[-1].seconds
    return rows, facts


def report(rows: list[Row], facts: dict, left: int, args: argparse.Namespace) -> None:
    print(
        f"\nScale-out trial on the bundled sample (train.epochs={args.epochs}, train.threads={args.threads}, "
        f"runner.chunk_size={args.chunk_size}, {args.workers} Dask workers x 1 thread; all on {LOOPBACK})\n"
    )
    print(f"{'what':<42} {'wall s':>7}  note")
    for r in rows:
        print(f"{r.what:<42} {r.seconds:>7.1f}  {r.note}")
    outside = {a: who for a, who in facts["listening"].items() if not a.startswith((f"{LOOPBACK}:", "::1:"))}
    loopback = not outside
    print(f"\nlistening while up: {', '.join(facts['listening'])}")
    print(f"loopback only: {loopback}" + "".join(f"; {a} by {who}" for a, who in outside.items()))
    print(f"forecasts, --dask-address vs threads: identical={facts['dask_identical']} ({facts['dask_detail']})")
    print(f"forecasts, work pool vs threads:      identical={facts['pool_identical']} ({facts['pool_detail']})")
    print(f"processes left running after the stop: {left}")
    if facts["source_changed"]:
        print("the code (nightcast, features, forecasting, flows) changed during the trial: the comparisons are void")
    t = facts["threads_s"]
    print(
        f"RESULT scaleout threads_s={t:.1f} dask_s={facts['dask_s']:.1f} pool_s={facts['pool_s']:.1f} "
        f"dask_ratio={facts['dask_s'] / t:.2f} pool_ratio={facts['pool_s'] / t:.2f} "
        f"dask_identical={str(facts['dask_identical']).lower()} pool_identical={str(facts['pool_identical']).lower()} "
        f"dask_feature_tasks={facts['dask_tasks']} dask_workers_used={facts['dask_workers_used']} "
        f"loopback_only={str(loopback).lower()} left_running={left} epochs={args.epochs} "
        f"source_changed={str(facts['source_changed']).lower()}"
    )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="train.epochs of every run (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="train.threads of every run, pinned (default 1)")
    parser.add_argument("--chunk-size", type=int, default=2, help="runner.chunk_size: tickers per feature task")
    parser.add_argument("--workers", type=int, default=2, help="dask worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each nightly run may take")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, outputs)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for sig in (signal.SIGTERM, signal.SIGHUP):  # stop as Ctrl-C does; a signal the caller ignores (nohup) stays so
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="nightcast-scaleout-"))
    (tmp / "logs").mkdir()
    fleet, failed = Fleet(tmp / "logs"), True
    try:
        rows, facts = trial(fleet, tmp, args)
        failed = False
    except KeyboardInterrupt:
        print("interrupted: stopping every process this script started", file=sys.stderr)
        return 130
    finally:
        left = fleet.stop()
        if failed or args.keep:
            print(f"logs and outputs kept in {tmp} ({left} processes left running)", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(rows, facts, left, args)
    return 0 if facts["dask_identical"] and facts["pool_identical"] and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
