"""The ablation of issue 14 on the development universe's validation span: every variant of the network on
identical origins, with and without the market family, beside the baselines.

Protocol (fixed before looking): prices up to 2016-12-31 only; one fit whose training labels end before
2015 (the last `windows.val_days` dates before it early-stop); forecast origins 2015-01-02 .. 2016-12-22
(the validation span); the 2017-2019 test span is never read here. Settings are chosen on this table; the
test span is reported once, later, for the settings chosen.

    python benchmarks/ablation.py [--dev-csv PATH] [--device cuda] [--refit-every 0]

Prints the ablation table (MSE ratio to the random walk and Diebold-Mariano p per horizon) and ends with
one `RESULT ablation ...` line.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import dev_universe, panel_of  # noqa: E402
from features.settings import DEFAULT_FAMILIES, FeatureSettings, WindowSettings  # noqa: E402
from forecasting.backtest import Intervals, Schedule, make_forecasters, walk_forward  # noqa: E402
from forecasting.names import ABLATION, BASELINES, Model  # noqa: E402
from forecasting.results import Column, ablation_table, markdown_table  # noqa: E402
from forecasting.settings import BacktestSettings, ModelSettings, TrainSettings  # noqa: E402

START, END = date(2015, 1, 2), date(2016, 12, 22)


def run(panel, models, train: TrainSettings, refit_every: int):
    windows = WindowSettings()
    bt = BacktestSettings(test_start=START, test_end=END, refit_every=refit_every, models=models)
    schedule = Schedule.from_settings(panel, bt, windows.lookback, windows.val_days, windows.test_days)
    forecasters = make_forecasters(bt, ModelSettings(), train, windows.lookback)
    return walk_forward(panel, forecasters, schedule, Intervals.from_settings(bt), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev-csv", type=Path, default=Path("../shared/data/dev_universe/us_large_caps_1990_2019.csv"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--refit-every", type=int, default=0, help="0: one fit before the span (default)")
    parser.add_argument("--epochs", type=int, default=TrainSettings().epochs, help="fewer: a quick check of the script")
    args = parser.parse_args()
    train = TrainSettings(device=args.device, threads=args.threads, progress=False, epochs=args.epochs)
    prices = dev_universe(args.dev_csv)  # up to 2016-12-31: the test span is not read
    started = time.perf_counter()
    panel, _ = panel_of(prices)
    base = run(panel, [*ABLATION, *BASELINES], train, args.refit_every)
    market_features = FeatureSettings(families=[*DEFAULT_FAMILIES, "market"])
    market_panel, _ = panel_of(prices, features=market_features)
    market = run(market_panel, [Model.ATTENTION_LSTM, Model.COMBINED, Model.RANDOM_WALK], train, args.refit_every)
    table = ablation_table(base.metrics)
    with_market = ablation_table(market.metrics)
    both = table.vstack(with_market.with_columns(("with market family: " + with_market["model"]).alias("model")))
    print(
        f"development universe, origins {START} .. {END} (validation span), {len(panel.tickers)} tickers, "
        f"refit every {args.refit_every or 'never (one fit)'}, device {args.device}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    specs = [Column(c, c, "{:.4f}" if c.endswith("ratio") else "{:.3f}") for c in both.columns if c != "model"]
    print(markdown_table(both, specs))
    h5 = {row["model"]: row for row in both.iter_rows(named=True)}
    keys = " ".join(f"{m.replace('with market family: ', 'mkt_')}_h5={h5[m]['h5 ratio']:.4f}" for m in h5)
    print(f"RESULT ablation {keys}")


if __name__ == "__main__":
    main()
