"""GPU training at scale (issue 15), three measurements, each in one run beside its baseline:

  universe   one epoch of a synthetic 500-ticker x 25-year universe through nightcast's real `fit`: the CUDA
             graph at the batch the device rule picks, the graph at the base batch, and kernel-by-kernel steps
             at the picked batch; then `predict` twice (the second call finds the panel on the device).
  batch      the batch rule's validation loss against the base batch (several seeds), on the development
             universe cut at 2016-12-31: fit to 2014, validation 2015-2016 (its 2017-2019 test span unused).

Many fits at once (issue 15, point 3) are timed by `benchmarks/backtest.py` (`ensemble`, `refits`) through the
product's own path, `forecasting/together.py`.

    python benchmarks/gpu_scale.py universe|batch [--dev-csv PATH]

Every section prints a table and ends with one `RESULT` line. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import dev_universe, panel_of, synthetic  # noqa: E402
from features.settings import WindowSettings  # noqa: E402
from forecasting.settings import ModelSettings, TrainSettings  # noqa: E402
from forecasting.train import fit, predict  # noqa: E402

MODEL = ModelSettings()
DEVICE = torch.device("cuda")  # --device cpu: a quick check of this script's code on a machine without a GPU
EPOCHS = 30


def _settings(**update) -> TrainSettings:
    return TrainSettings(device=DEVICE.type, progress=False, threads=16, epochs=EPOCHS).model_copy(update=update)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def universe() -> None:
    started = time.perf_counter()
    panel, splits = panel_of(synthetic(500, 25, faults=False))
    print(
        f"500 x 25 synthetic: {len(panel.dates):,} rows, {len(splits.train):,} training windows "
        f"(features built in {time.perf_counter() - started:.1f} s)"
    )
    rows = []
    for name, update in (
        ("graph, device batch", {}),
        ("graph, batch 256", {"max_batch_size": 256}),
        ("eager, device batch", {"cuda_graph": False}),
    ):
        ts = _settings(epochs=1, **update)
        _sync()
        t0 = time.perf_counter()
        trained = fit(panel, splits, ModelSettings(), ts, WindowSettings().lookback)
        _sync()
        wall = time.perf_counter() - t0
        h = trained.history[0]
        rows.append((name, h["train_seconds"], len(splits.train) / h["train_seconds"], wall, h["val_loss"]))
    print(f"{'one epoch':<22}{'train s':>9}{'samples/s':>12}{'fit wall s':>11}{'val loss':>10}")
    for name, sec, sps, wall, val in rows:
        print(f"{name:<22}{sec:>9.2f}{sps:>12,.0f}{wall:>11.2f}{val:>10.4f}")
    ends = np.concatenate([splits.val, splits.test])
    timings = []
    for _ in range(2):
        _sync()
        t0 = time.perf_counter()
        predict(trained, panel, ends)
        timings.append(time.perf_counter() - t0)
    print(
        f"predict {len(ends):,} windows: first call {len(ends) / timings[0]:,.0f}/s, "
        f"second (panel already on the device) {len(ends) / timings[1]:,.0f}/s"
    )
    print(
        f"RESULT gpu_universe epoch_s={rows[0][1]:.2f} samples_per_s={rows[0][2]:.0f} "
        f"graph256_samples_per_s={rows[1][2]:.0f} eager_samples_per_s={rows[2][2]:.0f} "
        f"predict_per_s={len(ends) / timings[1]:.0f}"
    )


def batch(dev_csv: Path, seeds: int = 3) -> None:
    windows = WindowSettings(test_days=21, val_days=483)
    panel, splits = panel_of(dev_universe(dev_csv), windows)
    print(f"development universe to 2016: {len(splits.train):,} training / {len(splits.val):,} validation windows")
    out = {}
    for name, update in (("base batch 256", {"max_batch_size": 256}), ("device rule", {})):
        losses, walls, epochs = [], [], []
        for seed in range(1, seeds + 1):
            t0 = time.perf_counter()
            trained = fit(panel, splits, ModelSettings(), _settings(seed=seed, **update), windows.lookback)
            walls.append(time.perf_counter() - t0)
            losses.append(trained.best_val_loss)
            epochs.append(trained.best_epoch)
        out[name] = losses
        print(
            f"{name:<16} val loss {statistics.mean(losses):.5f} +- {statistics.stdev(losses):.5f} "
            f"(seeds {', '.join(f'{v:.5f}' for v in losses)}), best epochs {epochs}, fit {statistics.mean(walls):.1f} s"
        )
    base, rule = out["base batch 256"], out["device rule"]
    diff = statistics.mean(rule) - statistics.mean(base)
    noise = statistics.stdev(base)
    print(f"RESULT gpu_batch_rule val_diff={diff:.5f} seed_sd={noise:.5f} within_noise={abs(diff) <= 2 * noise}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=["universe", "batch"], nargs="?", default="universe")
    parser.add_argument("--dev-csv", type=Path, default=Path("../shared/data/dev_universe/us_large_caps_1990_2019.csv"))
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to check this script quickly")
    parser.add_argument("--epochs", type=int, default=30, help="maximum epochs of each fit")
    args = parser.parse_args()
    global DEVICE, EPOCHS
    DEVICE, EPOCHS = torch.device(args.device), args.epochs
    if DEVICE.type == "cuda" and not torch.cuda.is_available():  # `make bench` on a CPU machine: nothing to measure
        print("gpu_scale.py measures CUDA training: this machine has no CUDA GPU, nothing was measured")
        print("RESULT gpu_scale skipped=no_cuda_gpu")
        return
    if args.section == "universe":
        universe()
    else:
        batch(args.dev_csv)


if __name__ == "__main__":
    main()
