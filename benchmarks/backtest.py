"""Walk-forward backtests, timed side by side in one run (issue 15).

  refits    a walk-forward with `--refits` refits (default 12) of both neural models (attention_lstm and its
            plain-LSTM ablation) on a synthetic universe (default 500 tickers x 25 years), four ways (`--ways`,
            the first the baseline of the ratios):
              sequential warm   one fit after another, each fold warm-started from the last (today's default
                                 on a CPU)
              together warm     a fold's two models trained at once (`forecasting/together.py`)
              sequential cold   one fit after another, every fold from scratch
              together cold     every fold's fits trained at once (up to 32), before the first fold is scored
            On a CPU the "together" runs take the same path as the sequential ones (a CPU trains one fit at a
            time): the ratio then says the new path costs nothing.
  ensemble  the fit-once walk-forward of attention_lstm, lstm and the ensemble's `--seeds` seeds on the
            development universe: a small universe, where one fit leaves a GPU waiting on launches; one fit
            after another against all at once.
  fit-once  the walk-forward of issue 15's first table: the development universe to 2016 (19 large caps and
            SPY), one fit at the test start, the default models (h=1..5), on the GPU against the same
            machine's CPU cores (`--cpu-threads`).

    python benchmarks/backtest.py refits [--tickers 500 --years 25] [--epochs 2] [--device auto]
    python benchmarks/backtest.py fit-once [--dev-csv PATH] [--cpu-threads 16]
    python benchmarks/backtest.py ensemble [--dev-csv PATH] [--seeds 5]

Epochs are capped (`--epochs`, patience 5 as the default): the walk-forward's cost is fits x epochs, and the
ratios between the ways are what is measured. Every section prints a table and ends with one `RESULT` line.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import DEV_CSV, dev_universe, panel_of, synthetic  # noqa: E402
from features.settings import WindowSettings  # noqa: E402
from forecasting.backtest import Intervals, Schedule, make_forecasters, walk_forward  # noqa: E402
from forecasting.settings import (  # noqa: E402
    BacktestSettings,
    ModelSettings,
    PublishSettings,
    TrainSettings,
    held_share,
)
from forecasting.train import resolve_device  # noqa: E402

WINDOWS = WindowSettings()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _train(device: str, threads: int, epochs: int | None, **update) -> TrainSettings:
    base = {"device": device, "progress": False, "threads": threads}
    if epochs is not None:
        base["epochs"] = epochs
    return TrainSettings(**base).model_copy(update=update)


def _walk(panel, bt: BacktestSettings, train: TrainSettings, test_days: int):
    held = held_share(bt.models, PublishSettings())  # as the nightly's evaluation and backtests
    schedule = Schedule.from_settings(panel, bt, WINDOWS.lookback, WINDOWS.val_days, test_days, held_share=held)
    forecasters = make_forecasters(bt, ModelSettings(), train, WINDOWS.lookback)
    _sync()
    started = time.perf_counter()
    result = walk_forward(panel, forecasters, schedule, Intervals.from_settings(bt), progress=False)
    _sync()
    return result, time.perf_counter() - started


def _forecasts(result, model: str) -> np.ndarray:
    p = result.predictions.filter(result.predictions["model"] == model).sort("ticker", "asof_date", "horizon")
    return p["y_pred"].to_numpy()


WAYS = {  # name: (warm start, fits at once)
    "sequential warm": (True, 1),
    "together warm": (True, 8),
    "sequential cold": (False, 1),
    "together cold": (False, 32),
}


def _warm_up(device: str, threads: int) -> float:
    """A tiny walk-forward before any timing: a process's first fit on a GPU pays ~7 s of one-time set-up (the
    CUDA context, torch's lazy imports on the first graph capture; H200, 2026-11-27), which would otherwise
    fall on the first way timed, the baseline of the ratios."""
    panel, _ = panel_of(synthetic(6, 3, faults=False))
    dates = np.unique(panel.dates)
    bt = BacktestSettings(
        test_start=dates[-30].astype(object),
        test_end=dates[-10].astype(object),
        refit_every=21,
        warm_start=False,
        models=["attention_lstm", "lstm"],
    )
    return _walk(panel, bt, _train(device, threads, 1, concurrent_fits=2), 0)[1]


def refits(tickers: int, years: int, n_refits: int, epochs: int, device: str, threads: int, ways: list[str]) -> None:
    _warm_up(device, threads)
    started = time.perf_counter()
    panel, _ = panel_of(synthetic(tickers, years, faults=False))
    every = 21
    dates = np.unique(panel.dates)
    # the last n_refits x 21 origins with known targets (a 5-day purge at the end): exactly n_refits folds
    end = dates[-1 - max(WindowSettings().lookback, 5)]
    start = dates[np.searchsorted(dates, end) - n_refits * every + 1]
    print(
        f"{tickers} x {years} synthetic: {len(panel.dates):,} rows (features {time.perf_counter() - started:.1f} s); "
        f"origins {start} .. {end}, a refit every {every}: {n_refits} refits of attention_lstm and lstm, "
        f"at most {epochs} epochs each, on {resolve_device(device)}"
    )
    print(f"\n{'way':<20}{'refits':>7}{'fits':>6}{'epochs':>8}{'fit s':>9}{'wall s':>9}{'vs sequential warm':>21}")
    seconds, results = {}, {}
    for name in ways:
        warm, at_once = WAYS[name]
        bt = BacktestSettings(
            test_start=start.astype(object),
            test_end=end.astype(object),
            refit_every=every,
            warm_start=warm,
            models=["attention_lstm", "lstm"],
        )
        result, wall = _walk(panel, bt, _train(device, threads, epochs, concurrent_fits=at_once), 0)
        folds = result.folds
        epochs_run = int(folds["attention_lstm_epochs"].sum() + folds["lstm_epochs"].sum())
        seconds[name], results[name] = wall, result
        ratio = seconds[ways[0]] / wall
        # an older nightcast (a before/after run) times each model's fit instead
        fit_s = float(
            folds["neural_fit_s"].sum()
            if "neural_fit_s" in folds.columns
            else folds["attention_lstm_s"].sum() + folds["lstm_s"].sum()
        )
        print(
            f"{name:<20}{folds.height:>7}{2 * folds.height:>6}{epochs_run:>8}{fit_s:>9.1f}{wall:>9.1f}{ratio:>20.2f}x"
        )
        sys.stdout.flush()
    pairs = [(f"sequential {w}", f"together {w}") for w in ("warm", "cold")]
    pairs = [(a, b) for a, b in pairs if a in results and b in results]
    gaps = [
        float(np.max(np.abs(_forecasts(results[a], m) - _forecasts(results[b], m))))
        for a, b in pairs
        for m in ("attention_lstm", "lstm")
    ]
    if gaps:
        print(f"largest forecast gap, together vs sequential of the same start: {max(gaps):.3g}")
    timings = " ".join(f"{name.replace(' ', '_')}_s={s:.1f}" for name, s in seconds.items())
    print(
        f"RESULT backtest_refits device={resolve_device(device).type} tickers={tickers} years={years} "
        f"refits={n_refits} epochs={epochs} {timings} "
        + " ".join(f"{n.replace(' ', '_')}_speedup={seconds[ways[0]] / s:.2f}" for n, s in seconds.items())
        + (f" max_gap={max(gaps):.3g}" if gaps else "")
    )


def fit_once(dev_csv: Path, cpu_threads: int, epochs: int | None) -> None:
    panel, _ = panel_of(dev_universe(dev_csv))
    bt = BacktestSettings(refit_every=0)
    test_days = WINDOWS.test_days
    print(
        f"development universe to 2016: {len(panel.tickers)} tickers, {len(panel.dates):,} rows; one fit, "
        f"models {', '.join(bt.models)}; the last {test_days} dates scored"
    )
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    # one-time set-up (imports, the CUDA context) paid by neither timed run: the first would pay it, the second not
    warm = {device: _warm_up(device, cpu_threads if device == "cpu" else 0) for device in devices}
    print(
        "warm-up walk-forward (6 tickers x 3 years, not timed below): "
        + ", ".join(f"{d} {s:.1f} s" for d, s in warm.items())
    )
    rows = {}
    for device in devices:
        result, wall = _walk(panel, bt, _train(device, cpu_threads if device == "cpu" else 0, epochs), test_days)
        folds = result.folds
        rows[device] = (wall, int(folds["attention_lstm_epochs"][0]), int(folds["lstm_epochs"][0]))
    print(f"\n{'device':<8}{'wall s':>9}{'attention epochs':>18}{'lstm epochs':>13}")
    for device, (wall, a, b) in rows.items():
        print(f"{device:<8}{wall:>9.1f}{a:>18}{b:>13}")
    speedup = rows["cpu"][0] / rows["cuda"][0] if "cuda" in rows else float("nan")
    print(f"the GPU is {speedup:.2f}x the {cpu_threads} CPU threads" if "cuda" in rows else "no GPU here")
    print(
        f"RESULT backtest_fit_once cpu_threads={cpu_threads} cpu_s={rows['cpu'][0]:.1f} "
        f"gpu_s={rows['cuda'][0] if 'cuda' in rows else float('nan'):.1f} speedup={speedup:.2f}"
    )


def ensemble(dev_csv: Path, seeds: int, epochs: int | None) -> None:
    """The fit-once walk-forward of attention_lstm, lstm and a `seeds`-seed ensemble on the development universe
    (2 + seeds fits of a small universe: a launch-bound GPU), one fit after another against all at once."""
    panel, _ = panel_of(dev_universe(dev_csv))
    bt = BacktestSettings(refit_every=0, models=["attention_lstm", "lstm", "ensemble"], ensemble_seeds=seeds)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"development universe to 2016: {len(panel.tickers)} tickers; one fit each of attention_lstm, lstm and "
        f"{seeds} ensemble seeds ({2 + seeds} fits) on {device}; the last {WINDOWS.test_days} dates scored"
    )
    _warm_up(device, 0)  # else the first way timed, the baseline, pays the process's one-time set-up
    print(f"\n{'way':<14}{'wall s':>9}{'fit s':>9}{'epochs (attention, lstm)':>26}")
    walls, results = {}, {}
    for name, at_once in (("sequential", 1), ("together", 32)):
        result, wall = _walk(panel, bt, _train(device, 0, epochs, concurrent_fits=at_once), WINDOWS.test_days)
        folds = result.folds
        walls[name], results[name] = wall, result
        epochs_run = f"{int(folds['attention_lstm_epochs'][0])}, {int(folds['lstm_epochs'][0])}"
        print(f"{name:<14}{wall:>9.1f}{float(folds['neural_fit_s'][0]):>9.1f}{epochs_run:>26}")
    same = all(
        np.array_equal(_forecasts(results["sequential"], m), _forecasts(results["together"], m))
        for m in ("attention_lstm", "lstm", "ensemble")
    )
    speedup = walls["sequential"] / walls["together"]
    print(f"together is {speedup:.2f}x; forecasts identical: {same}")
    print(
        f"RESULT backtest_ensemble device={device} fits={2 + seeds} sequential_s={walls['sequential']:.1f} "
        f"together_s={walls['together']:.1f} speedup={speedup:.2f} identical={same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=["refits", "fit-once", "ensemble"], nargs="?", default="refits")
    parser.add_argument("--seeds", type=int, default=5, help="ensemble: its seeds")
    parser.add_argument("--tickers", type=int, default=None, help="refits: universe size (default 500; 10 on a CPU)")
    parser.add_argument("--years", type=int, default=None, help="refits: years of history (default 25; 6 on a CPU)")
    parser.add_argument("--refits", type=int, default=12, help="refits: folds of the walk-forward")
    parser.add_argument("--epochs", type=int, default=2, help="most epochs of each fit (fit-once: 0 = the default)")
    parser.add_argument("--device", default="auto", help="refits: auto, cpu or cuda")
    parser.add_argument(
        "--ways",
        default=None,
        help=f"refits: which of {', '.join(WAYS)} (default: all on a GPU, the first and last on a CPU); the first "
        "is the baseline",
    )
    parser.add_argument("--threads", type=int, default=0, help="refits: CPU threads (0 = auto)")
    parser.add_argument("--cpu-threads", type=int, default=16, help="fit-once: the CPU run's threads")
    parser.add_argument("--dev-csv", type=Path, default=DEV_CSV)
    args = parser.parse_args()
    wall = time.perf_counter()
    if args.section == "refits":
        gpu = resolve_device(args.device).type == "cuda"
        tickers = args.tickers or (500 if gpu else 10)
        years = args.years or (25 if gpu else 6)
        # a CPU trains one fit at a time either way: two ways show the new path costs nothing (~3 min)
        ways = args.ways or (",".join(WAYS) if gpu else "sequential warm,together cold")
        refits(tickers, years, args.refits, args.epochs, args.device, args.threads, ways.split(","))
    elif args.section == "fit-once":
        fit_once(args.dev_csv, args.cpu_threads, args.epochs or None)
    else:
        ensemble(args.dev_csv, args.seeds, args.epochs or None)
    print(f"(whole run {timedelta(seconds=round(time.perf_counter() - wall))})", file=sys.stderr)


if __name__ == "__main__":
    main()
