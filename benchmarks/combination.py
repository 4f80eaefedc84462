"""Which labels should fit the forecast combination's weights? The span the network early-stopped on (nightcast
before 2026-11-28: `publish.combination_holdout = 0`) against the validation span's latest half, held out of
early stopping (the default since: 0.5), on the development universe's validation span only.

Protocol (fixed before looking, as `ablation.py`'s): prices up to 2016-12-31, one fit on labels realised before
2015-01-02, every origin 2015-01-02 .. 2016-12-22 scored out of sample. For each feature set and seed, the
attention network is fit once per way (with a held share it early-stops on the earlier part of the validation
span only) and combined with the historical mean by `forecasting.combine.Combination`, as the nightly does,
through `ablation.run` (the walk-forward) and scored by the backtest's own tables (`ablation_table`,
`cross_section_table`). The test span (2017-2019) is never read.

    python benchmarks/combination.py [--seeds 0,1,2,7] [--families default,market] [--holdout 0.5] [--threads 2]

About 2-3 minutes a fit on this 2-core CPU (16 fits by default). Prints the MSE ratio to the random walk per
horizon and the mean daily rank IC at h=1 of every fit and their means, and ends with one
`RESULT combination ...` line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import DEV_CSV, dev_universe, panel_of  # noqa: E402
from benchmarks.ablation import SPANS, run  # noqa: E402
from features.settings import DEFAULT_FAMILIES, FeatureSettings  # noqa: E402
from forecasting.cross_section import cross_section_table  # noqa: E402
from forecasting.names import Model  # noqa: E402
from forecasting.results import ablation_table  # noqa: E402
from forecasting.settings import TrainSettings  # noqa: E402

MODELS = [Model.ATTENTION_LSTM, Model.COMBINED, Model.RANDOM_WALK]


def one_way(panel, holdout: float, seed: int, threads: int) -> tuple[np.ndarray, float]:
    """(MSE ratios of `combined` to the random walk per horizon, its mean daily rank IC at h=1) for one fit on
    the validation span, scored by the same tables the backtest report uses."""
    train = TrainSettings(threads=threads, progress=False, seed=seed)
    start, end, _ = SPANS["validation"]
    result = run(panel, MODELS, train, (start, end), 0, held=holdout)
    row = ablation_table(result.metrics).filter(pl.col("model") == Model.COMBINED)
    ratios = np.array([row[c].item() for c in row.columns if c.endswith("ratio")])
    across = cross_section_table(result.predictions, k=5, cost_bps=5.0)
    ic = across.filter((pl.col("model") == Model.COMBINED) & (pl.col("horizon") == 1))["rank_ic_mean"].item()
    return ratios, ic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,7", help="training seeds (7: the nightly's)")
    parser.add_argument("--families", default="default,market", help="default, market (the market family added)")
    parser.add_argument("--holdout", type=float, default=0.5, help="the held share compared with 0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dev-csv", type=Path, default=DEV_CSV)
    args = parser.parse_args()
    prices = dev_universe(args.dev_csv, SPANS["validation"][2])
    ways = {"early-stopping span": 0.0, f"held {args.holdout:g}": args.holdout}
    results: dict[str, list[np.ndarray]] = {w: [] for w in ways}
    ics: dict[str, list[float]] = {w: [] for w in ways}
    print("| features | seed | weights fit on | ratio to the random walk, h1 .. h5 | rank IC h1 | s |")
    print("|---|---:|---|---|---:|---:|")
    for family in args.families.split(","):
        extra = ["market"] if family == "market" else []
        panel, _ = panel_of(prices, features=FeatureSettings(families=[*DEFAULT_FAMILIES, *extra]))
        for seed in (int(s) for s in args.seeds.split(",")):
            for way, holdout in ways.items():
                started = time.perf_counter()
                ratios, ic = one_way(panel, holdout, seed, args.threads)
                results[way].append(ratios)
                ics[way].append(ic)
                cells = " ".join(f"{r:.4f}" for r in ratios)
                print(f"| {family} | {seed} | {way} | {cells} | {ic:+.4f} | {time.perf_counter() - started:.0f} |")
    horizons = len(next(iter(results.values()))[0])
    print("\n| weights fit on | " + " | ".join(f"mean h{k + 1}" for k in range(horizons)) + " | worst | fits above 1 |")
    print("|---|" + "---:|" * (horizons + 2))
    keys = []
    for way, rows in results.items():
        table = np.array(rows)
        above = int((table > 1).any(axis=1).sum())
        cells = " | ".join(f"{m:.4f}" for m in table.mean(axis=0))
        print(f"| {way} | {cells} | {table.max():.4f} | {above} of {len(table)} |")
        tag = "es" if ways[way] == 0 else "held"
        keys.append(f"{tag}_h5={table.mean(axis=0)[-1]:.4f} {tag}_above1={above} {tag}_rank_ic={np.mean(ics[way]):.4f}")
    print(f"RESULT combination fits={len(results[next(iter(ways))])} " + " ".join(keys))


if __name__ == "__main__":
    main()
