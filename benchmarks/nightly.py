"""The whole nightly at scale (issue 15, point 7): the real nightly run stage by stage, beside each stage's own
benchmark in the same run.

The synthetic universe (`benchmarks._data.synthetic`, 500 tickers x 25 years = 3.15M rows by default, with its
sprinkle of repairable faults) is written as one long Parquet file. A child process runs the nightly flow on it
(`source.kind = "file"`, `train.epochs = 1`, progress bars off) in a fresh temporary directory, with Prefect's
temporary server, exactly as `nightcast run --source file --path FILE` would; it reports the flow's own
per-stage timings (`NightlyResult.timings`), its peak resident memory (`ru_maxrss`; Prefect's server is a
process of its own and not counted) and, from a 20 ms sampler, the peak while each stage ran. The data, cache,
models and output directories are weighed on disk after the run.

Then, in this process, each non-training stage's own benchmark on the same file:
- ingest: read the file, validate, upsert the lake (what `benchmarks/ingest.py` times, plus the read);
- features: the default denoiser, the feature build (`benchmarks/features.py`) and the panel;
- forecast+publish: the stage's own work again, in the nightly's process right after the flow (its peak memory
  taken before), on the very inputs the flow gave the stage: each task as the plain function it wraps, no UI
  artifact (the forecasts with the baselines' refits, volatility and bands; the files; the ledger; the live
  record and its plot; the attention report and its plot; the cross-section table, QLIKE and run metadata).
Goals: each non-training stage within 2x of its benchmark, the default denoiser no slower than the feature
build, peak memory under 2 GB at the default size.

    .venv/bin/python benchmarks/nightly.py [--tickers 500] [--years 25] [--epochs 1] [--threads 0] [--keep]

Polars uses its default pool (all cores); `--threads` pins the training's torch threads (0: nightcast's
default policy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import flows  # noqa: E402, F401  as `nightcast` starts: its allocator settings before polars loads

# isort: split
import polars as pl  # noqa: E402
import psutil  # noqa: E402

from benchmarks._data import synthetic  # noqa: E402
from nightcast.memory import ALLOCATOR  # noqa: E402

STAGES = ("ingest", "features", "train+evaluate", "forecast+publish")
BENCHED = ("ingest", "features", "forecast+publish")  # the stages with a benchmark of their own
GOAL_RATIO, GOAL_PEAK = 2.0, 2 * 10**9


class RssTimeline:
    """Samples this process's resident memory every `every` seconds, as (time, bytes) pairs."""

    def __init__(self, every: float = 0.02) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), proc.memory_info().rss))
            time.sleep(self.every)

    def __enter__(self) -> RssTimeline:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def stage_peaks(samples: list[tuple[float, int]], timings: dict[str, float], end: float) -> dict[str, int]:
    """Peak resident bytes while each stage ran. Stages are laid back to back ending at `end` (when the flow
    returned): the flow's laps start a little after the call, so counting back from its end places them."""
    peaks, stop = {}, end
    for stage in reversed(list(timings)):
        start = stop - timings[stage]
        inside = [rss for t, rss in samples if start <= t <= stop]
        peaks[stage] = max(inside, default=0)
        stop = start
    return peaks


def _child_settings(path: Path, work: Path, epochs: int, threads: int):
    from flows.settings import load_settings

    return load_settings(
        environ={},
        overrides={
            "source": {"kind": "file", "path": str(path)},
            "train": {"epochs": epochs, "threads": threads, "progress": False},
            "paths": {"data_dir": str(work / "data"), "out_dir": str(work / "outputs")},
        },
    )


def run_nightly(path: Path, work: Path, epochs: int, threads: int) -> dict:
    """In the child: the nightly flow on `path` in `work`, as the CLI runs it; what it took."""
    import resource

    from flows import prefect_env

    settings = _child_settings(path, work, epochs, threads)
    prefect_env.configure(settings.paths.data_dir)
    from flows.deploy import start_ephemeral_server
    from flows.nightly import nightly
    from flows.tasks import task_runner

    start_ephemeral_server()
    inputs = capture_forecast_and_publish()
    with RssTimeline() as timeline:
        started = time.perf_counter()
        result = nightly.with_options(task_runner=task_runner(settings))(settings)
        ended = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux; before the stage's rerun
    return {
        "total": ended - started,
        "timings": result.timings,
        "stage_peaks": stage_peaks(timeline.samples, result.timings, ended),
        "peak_rss": peak,
        "forecasts": result.forecasts.height,
        "checkpoint": str(result.checkpoint),
        "forecast_steps": forecast_and_publish_again(inputs),
    }


PUBLISH_TASKS = ("publish_outputs", "record_in_ledger", "live_record", "inspect_attention", "finish_publishing")


def capture_forecast_and_publish() -> dict:
    """What the flow hands the forecast+publish stage (the forecast task's and `_publish`'s arguments), recorded
    as it runs, for `forecast_and_publish_again`."""
    from flows import nightly as module
    from flows import nightly_tasks

    seen, forecast, publish = {}, nightly_tasks.forecast.fn, module._publish

    def recording_forecast(*args):
        seen["forecast"] = args
        return forecast(*args)

    def recording_publish(*args):
        seen["publish"] = args
        return publish(*args)

    nightly_tasks.forecast.fn, module._publish = recording_forecast, recording_publish  # Prefect calls `.fn`
    seen["restore"] = lambda: (setattr(nightly_tasks.forecast, "fn", forecast), setattr(module, "_publish", publish))
    return seen


def forecast_and_publish_again(seen: dict) -> dict[str, float]:
    """The forecast+publish stage's benchmark: its own work again on the inputs the flow gave it, each task as the
    plain function it wraps (no task run, no UI artifact): the forecasts (the published model's, the baselines
    refit on every realised label, the volatility, the bands), the files, the ledger, the live record (scored
    against the lake, its plot), the attention report (its plot), the run metadata. Times per step."""
    from flows import nightly as module
    from flows import nightly_tasks, run_summary
    from forecasting import publish

    seen.pop("restore")()
    steps, tasks = {}, {name: getattr(nightly_tasks, name) for name in PUBLISH_TASKS}
    # the night kept only some columns of the evaluation's predictions in memory (`publish.set_aside`, `_publish`)
    # and published them whole: the stage's rerun reads them back whole from that file, before anything is timed,
    # and writes them from memory (the night copied its set-aside file into place: about as long)
    choice, asof, settings = (seen["publish"][i] for i in (2, 6, 7))
    written = publish.partition_dir(settings.paths.out_dir, "metrics", asof) / "predictions.parquet"
    choice.evaluation.predictions, choice.evaluation.predictions_file = pl.read_parquet(written), None

    def plain(name):
        def run(*args):
            out, steps[name.replace("_", " ")] = timed(lambda: tasks[name].fn(*args))
            return out

        return run

    forecasts, steps["forecast"] = timed(lambda: nightly_tasks.forecast.fn(*seen["forecast"]))
    args = list(seen["publish"])
    args[1] = forecasts
    quiet = {"create_markdown_artifact": lambda **kwargs: None}
    saved = {name: getattr(module, name) for name in quiet} | {"leave_artifacts": run_summary.leave_artifacts}
    try:
        for name in PUBLISH_TASKS:
            setattr(nightly_tasks, name, plain(name))
        module.create_markdown_artifact = quiet["create_markdown_artifact"]
        run_summary.leave_artifacts = lambda *args, **kwargs: None
        _, total = timed(lambda: module._publish(*args))
    finally:
        for name, task in tasks.items():
            setattr(nightly_tasks, name, task)
        module.create_markdown_artifact = saved["create_markdown_artifact"]
        run_summary.leave_artifacts = saved["leave_artifacts"]
    steps["cross-section, qlike, metadata"] = total - sum(steps[n.replace("_", " ")] for n in PUBLISH_TASKS)
    return steps


def disk_usage(folder: Path) -> dict[str, int]:
    """Bytes under each top-level entry of `folder` (and of its `data`)."""
    sizes = {}
    for top in sorted(folder.iterdir()):
        for entry in sorted(top.iterdir()) if top.name == "data" else [top]:
            files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
            sizes[str(entry.relative_to(folder))] = sum(p.stat().st_size for p in files)
    return sizes


def nightly_in_child(path: Path, work: Path, args: argparse.Namespace) -> dict:
    """The nightly in a fresh process (its memory is its own), in its own working directory."""
    work.mkdir()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--work", str(work)]
        + ["--epochs", str(args.epochs), "--threads", str(args.threads)],
        cwd=work,
        # the allocator setting `nightcast` starts with (flows/__init__.py), whatever this process's environment
        env={**os.environ, "PYTHONPATH": str(ROOT), **ALLOCATOR},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"the nightly failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_ingest(path: Path, lake_dir: Path) -> tuple[dict[str, float], pl.DataFrame]:
    """Read, validate and upsert as the ingest stage does, one step at a time; the validated frame."""
    from features.prices import lake
    from features.prices.sources import read_file
    from features.prices.validate import validate_prices
    from features.settings import ValidationSettings

    (frame, _), t_read = timed(lambda: read_file(path))
    report, t_validate = timed(lambda: validate_prices(frame, ValidationSettings(min_rows=1)))
    _, t_upsert = timed(lambda: lake.upsert(lake_dir, report.frame))
    return {"read file": t_read, "validate": t_validate, "upsert (write lake)": t_upsert}, report.frame


def bench_features(frame: pl.DataFrame):
    """The default denoiser, the feature build and the panel, as the feature stage runs them; the panel."""
    from features.build import build_features
    from features.denoise import denoise
    from features.settings import DenoiseSettings, FeatureSettings
    from features.windows import make_panel

    settings = FeatureSettings()
    sorted_frame = frame.sort("ticker", "date")
    build_features(denoise(sorted_frame.head(5000), DenoiseSettings()), settings)  # loads the compiled kernels
    prices, t_denoise = timed(lambda: denoise(sorted_frame, DenoiseSettings()))
    ff, t_build = timed(lambda: build_features(prices, settings))
    panel, t_panel = timed(lambda: make_panel(ff, settings.max_horizon))
    steps = {f"denoise ({DenoiseSettings().method})": t_denoise, "feature build": t_build, "panel": t_panel}
    return steps, panel


def stage_benchmarks(path: Path, work: Path, run: dict) -> dict[str, dict[str, float]]:
    steps = {}
    steps["ingest"], frame = bench_ingest(path, work / "lake")
    steps["features"], _ = bench_features(frame)
    steps["forecast+publish"] = run["forecast_steps"]  # measured in the nightly's process, after the flow
    return steps


def report(args, rows: int, run: dict, steps: dict, disk: dict[str, int]) -> None:
    gib = 2**30
    print(
        f"nightly on {args.tickers} tickers x {args.years} years = {rows:,} rows, train.epochs={args.epochs}, "
        f"polars threads {pl.thread_pool_size()}, {run['forecasts']:,} forecasts, total {run['total']:.1f} s"
    )
    print(f"{'stage':<34}{'nightly s':>10}{'bench s':>10}{'ratio':>8}{'peak GiB':>10}")
    ratios = {}
    for stage in STAGES:
        own = sum(steps[stage].values()) if stage in steps else None
        t = run["timings"].get(stage, float("nan"))
        peak = run["stage_peaks"].get(stage, 0) / gib
        if own is None:
            print(f"{stage:<34}{t:>10.2f}{'':>10}{'':>8}{peak:>10.2f}")
            continue
        ratios[stage] = t / own
        print(f"{stage:<34}{t:>10.2f}{own:>10.2f}{t / own:>8.2f}{peak:>10.2f}")
        for step, seconds in steps[stage].items():
            print(f"{'  ' + step:<34}{'':>10}{seconds:>10.2f}")
    denoise_s, build_s = list(steps["features"].values())[:2]
    print(f"peak resident memory of the nightly: {run['peak_rss'] / gib:.2f} GiB (goal < {GOAL_PEAK / gib:.2f})")
    print("on disk after the run: " + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in disk.items()))
    met = all(r <= GOAL_RATIO for r in ratios.values()) and denoise_s <= build_s and run["peak_rss"] < GOAL_PEAK
    print(
        "RESULT nightly "
        + " ".join(f"{s.replace('+', '_')}_ratio={r:.2f}" for s, r in ratios.items())
        + f" total_s={run['total']:.1f} "
        + " ".join(f"{s.replace('+', '_')}_s={run['timings'].get(s, float('nan')):.2f}" for s in STAGES)
        + f" denoise_s={denoise_s:.2f} build_s={build_s:.2f} peak_gb={run['peak_rss'] / 1e9:.2f} "
        f"disk_mb={sum(disk.values()) / 1e6:.0f} goals_met={met}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=25)
    parser.add_argument("--epochs", type=int, default=1, help="train.epochs of the nightly (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="train.threads (default 0: nightcast's policy)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and say where it is")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # the nightly's own process: the price file
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(run_nightly(args.child, args.work, args.epochs, args.threads)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="nightcast-bench-nightly-"))
    try:
        path = tmp / "prices.parquet"
        prices = synthetic(args.tickers, args.years)
        rows = prices.height
        prices.write_parquet(path)
        del prices
        run = nightly_in_child(path, tmp / "run", args)
        disk = disk_usage(tmp / "run")
        steps = stage_benchmarks(path, tmp / "bench", run)
        report(args, rows, run, steps, disk)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
