"""Thread policy benchmark: nightcast's default (`train.threads = 0`: the cores other processes leave free)
against every fixed thread count, on an idle machine and with another process keeping one core busy.

Each measurement runs in a fresh process (OpenMP settles its threads once per process): two epochs of the
default model on 4,096 samples of the bundled sample, the second epoch timed, then a prediction over the
1,250 test samples; the best of `--repeat` tries. The load is a pure-Python busy loop, one core's worth.

    .venv/bin/python benchmarks/threads.py [--repeat 2]

Target (issue 12): the default within 10% of the best fixed setting when idle, and never more than 1.5x
slower than it under load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(threads: int) -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from benchmarks.train import sample_panel
    from features.windows import Splits
    from forecasting.settings import ModelSettings, TrainSettings
    from forecasting.train import fit, predict

    panel, splits = sample_panel()
    rng = np.random.default_rng(0)
    small = Splits(
        np.sort(rng.choice(splits.train, 4096, replace=False)),
        splits.val[:512],
        splits.test,
        splits.val_start,
        splits.test_start,
        splits.test_end,
    )
    settings = TrainSettings(epochs=2, patience=5, threads=threads, progress=False)
    trained = fit(panel, small, ModelSettings(), settings, 40)
    started = time.perf_counter()
    predict(trained, panel, splits.test)
    import torch

    print(
        json.dumps(
            {
                "samples_per_s": len(small.train) / trained.history[1]["train_seconds"],
                "predict_s": time.perf_counter() - started,
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


def measure(threads: int, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(threads)], capture_output=True, text=True, check=True
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        if best is None or got["samples_per_s"] > best["samples_per_s"]:
            best = got
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker)
    sys.path.insert(0, str(ROOT))
    from forecasting.threads import usable_cores

    cores = usable_cores()
    settings = {"default (auto)": 0} | {f"{n} thread{'s' * (n > 1)}": n for n in range(1, cores + 1)}
    rows, ratios = [], {}
    for condition in ("idle", "one core busy"):
        load = None
        if condition != "idle":
            load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            results = {name: measure(n, args.repeat) for name, n in settings.items()}
        finally:
            if load is not None:
                load.kill()
                load.wait()
        fixed_best = max(r["samples_per_s"] for name, r in results.items() if name != "default (auto)")
        for name, r in results.items():
            slower = fixed_best / r["samples_per_s"]
            rows.append((condition, name, r["torch_threads"], r["samples_per_s"], slower, r["predict_s"]))
        ratios[condition] = fixed_best / results["default (auto)"]["samples_per_s"]
    print(f"\nThread policy on this machine ({cores} usable cores), training samples/s (best of {args.repeat})\n")
    header = ("condition", "setting", "threads", "samples/s", "x slower than best", "predict s")
    print("{:<15} {:<16} {:>7} {:>10} {:>19} {:>10}".format(*header))
    for condition, name, used, speed, slower, pred in rows:
        print(f"{condition:<15} {name:<16} {used:>7} {speed:>10.0f} {slower:>19.2f} {pred:>10.2f}")
    idle, loaded = ratios["idle"], ratios["one core busy"]
    print(
        f"\ndefault vs best fixed setting: idle {idle:.2f}x (target <= 1.10), one core busy {loaded:.2f}x "
        "(target <= 1.50)"
    )
    print(f"RESULT threads cores={cores} idle_ratio={idle:.3f} loaded_ratio={loaded:.3f}")


if __name__ == "__main__":
    main()
