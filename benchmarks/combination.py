"""Which labels should fit the forecast combination's weights? The span the network early-stopped on (nightcast
before 2026-11-28: `publish.combination_holdout = 0`) against the validation span's latest half, held out of
early stopping (the default since: 0.5), on the development universe's validation span only.

Protocol (fixed before looking, as `ablation.py`'s): prices up to 2016-12-31, one fit on labels realised before
2015-01-02, every origin 2015-01-02 .. 2016-12-22 scored out of sample. For each feature set and seed, the
attention network is fit once per way (with a held share it early-stops on the earlier part of the validation
span only) and combined with the historical mean by `forecasting.combine.Combination`, as the nightly does.
The test span (2017-2019) is never read.

    python benchmarks/combination.py [--seeds 0,1,2,7] [--families default,market] [--holdout 0.5] [--threads 2]

About 2-3 minutes a fit on this 2-core CPU (16 fits by default). Prints the MSE ratio to the random walk per
horizon and the mean daily rank IC at h=1 of every fit and their means, and ends with one
`RESULT combination ...` line.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import DEV_CSV, dev_universe, panel_of  # noqa: E402
from features.settings import DEFAULT_FAMILIES, FeatureSettings, WindowSettings  # noqa: E402
from features.windows import Panel  # noqa: E402
from forecasting.backtest import NeuralForecaster, Schedule  # noqa: E402
from forecasting.combine import Combination  # noqa: E402
from forecasting.names import Model  # noqa: E402
from forecasting.settings import BacktestSettings, ModelSettings, TrainSettings  # noqa: E402

SPAN = (date(2015, 1, 2), date(2016, 12, 22))


def mse_ratios(panel: Panel, ends: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Per horizon, the forecast's squared error over the random walk's (a zero forecast), known labels only."""
    y = panel.Y[ends].astype(np.float64)
    known = np.isfinite(y)
    errors, outcomes = np.where(known, y - forecast, 0.0), np.where(known, y, 0.0)
    return (errors**2).sum(axis=0) / (outcomes**2).sum(axis=0)


def mean_rank_ic(panel: Panel, ends: np.ndarray, forecast: np.ndarray, k: int = 0) -> float:
    """The mean over dates of the Spearman correlation between forecasts and outcomes across tickers."""
    dates, y, out = panel.dates[ends], panel.Y[ends, k], []
    for day in np.unique(dates):
        on = (dates == day) & np.isfinite(y)
        if on.sum() < 3:
            continue
        a, b = np.argsort(np.argsort(forecast[on, k])), np.argsort(np.argsort(y[on]))
        if a.std() > 0:
            out.append(np.corrcoef(a, b)[0, 1])
    return float(np.mean(out)) if out else float("nan")


def one_way(panel: Panel, holdout: float, seed: int, threads: int) -> tuple[np.ndarray, float, np.ndarray]:
    """(MSE ratios of `combined` per horizon, its rank IC at h=1, its weights) for one fit."""
    windows = WindowSettings()
    bt = BacktestSettings(test_start=SPAN[0], test_end=SPAN[1], refit_every=0)
    schedule = Schedule.from_settings(
        panel, bt, windows.lookback, windows.val_days, windows.test_days, held_share=holdout
    )
    (fold,) = list(schedule.folds(panel))
    train = TrainSettings(threads=threads, progress=False, seed=seed)
    network = NeuralForecaster(
        Model.ATTENTION_LSTM, ModelSettings().model_copy(update={"attention": True}), train, windows.lookback, False
    )
    network.fit(panel, fold.split)
    combined = Combination(Model.COMBINED, network)
    combined.fit(panel, fold.split)
    forecast = combined.predict(panel, fold.block).astype(np.float64)
    return mse_ratios(panel, fold.block, forecast), mean_rank_ic(panel, fold.block, forecast), combined.weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,7", help="training seeds (7: the nightly's)")
    parser.add_argument("--families", default="default,market", help="default, market (the market family added)")
    parser.add_argument("--holdout", type=float, default=0.5, help="the held share compared with 0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dev-csv", type=Path, default=DEV_CSV)
    args = parser.parse_args()
    prices = dev_universe(args.dev_csv, "2016-12-31")
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
                ratios, ic, _ = one_way(panel, holdout, seed, args.threads)
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
