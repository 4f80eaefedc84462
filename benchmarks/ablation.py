"""The ablation of issue 14 on the development universe: every variant of the network on identical origins,
with and without the market family, beside the baselines; then, for the model the nightly publishes, its 90%
intervals per volatility decile, its quantiles against the baseline band and its scores across tickers.

Protocol (fixed before looking): one fit per model whose training labels end before the span (the last
`windows.val_days` dates before it early-stop, and fit the combination's weights), then every origin of
the span scored out of sample.
- `--span validation` (default): prices up to 2016-12-31 only, origins 2015-01-02 .. 2016-12-22. Settings
  are chosen on this span.
- `--span test`: prices up to 2019-12-31, origins 2017-01-03 .. 2019-12-20. Reported once, for the settings
  chosen on validation; never tuned on.

    python benchmarks/ablation.py [--span validation|test] [--dev-csv PATH] [--device cuda] [--models a,b]

Prints the ablation table (MSE ratio to the random walk and Diebold-Mariano p per horizon), the interval,
quantile and cross-section tables, and ends with one `RESULT ablation ...` line.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import DEV_CSV, dev_universe, panel_of  # noqa: E402
from features.settings import DEFAULT_FAMILIES, FeatureSettings, WindowSettings  # noqa: E402
from forecasting.backtest import (  # noqa: E402
    QUANTILE_LEVELS,
    Intervals,
    Schedule,
    long_predictions,
    make_forecasters,
    walk_forward,
)
from forecasting.cross_section import cross_section_table  # noqa: E402
from forecasting.intervals import band_by_volatility, conditional_coverage_summary, quantile_scores  # noqa: E402
from forecasting.names import ABLATION, BASELINES, Model  # noqa: E402
from forecasting.results import Column, ablation_table, cross_section_view, markdown_table  # noqa: E402
from forecasting.settings import (  # noqa: E402
    BacktestSettings,
    ModelSettings,
    PublishSettings,
    TrainSettings,
    held_share,
)
from forecasting.volatility import panel_sigma  # noqa: E402

SPANS = {
    "validation": (date(2015, 1, 2), date(2016, 12, 22), "2016-12-31"),
    "test": (date(2017, 1, 3), date(2019, 12, 20), "2019-12-31"),
}
COVERAGE = 0.9  # the acceptance's interval: realised coverage 0.85-0.95 in every volatility decile
FEATURED = (Model.COMBINED, Model.ATTENTION_LSTM)  # what the nightly publishes by default, and its inner model


def run(panel, models, train: TrainSettings, span: tuple[date, date], refit_every: int, held: float | None = None):
    """`models` walked forward over `span`; `held`: the share of each fit's validation span held out of early
    stopping (default: as the nightly's evaluation and backtests hold it out)."""
    windows = WindowSettings()
    bt = BacktestSettings(
        test_start=span[0], test_end=span[1], refit_every=refit_every, models=models, coverage=COVERAGE
    )
    held = held_share(models, PublishSettings()) if held is None else held
    schedule = Schedule.from_settings(panel, bt, windows.lookback, windows.val_days, windows.test_days, held_share=held)
    forecasters = make_forecasters(bt, ModelSettings(), train, windows.lookback)
    return walk_forward(panel, forecasters, schedule, Intervals.from_settings(bt), progress=False)


def with_ewma_band_sigma(panel, predictions: pl.DataFrame) -> pl.DataFrame:
    """The predictions with the issue's baseline band's volatility beside them: a plain EWMA (lambda 0.94,
    RiskMetrics) of past squared returns, as column `sigma` instead of the published blend (`sigma_blend`)."""
    ends = np.arange(len(panel.dates))
    ewma = long_predictions(panel, ends, np.zeros((len(ends), len(panel.horizons))), "ewma", panel_sigma(panel, 1.0))
    keys = ["ticker", "asof_date", "horizon"]
    return predictions.rename({"sigma": "sigma_blend"}).join(ewma.select(*keys, "sigma"), on=keys, how="left")


def interval_tables(panel, predictions: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The featured models' 90% band per volatility decile, and their conformal quantiles' pinball loss and
    CRPS against a zero forecast with normal quantiles of the same volatility ("normal band") and of the
    plain EWMA 0.94 (the issue's baseline band)."""
    rows = predictions.filter(pl.col("model").is_in(list(FEATURED)))
    if rows.is_empty():  # (--models without them)
        return {}
    deciles = conditional_coverage_summary(band_by_volatility(rows, COVERAGE))
    same_sigma = quantile_scores(rows, QUANTILE_LEVELS)
    # the EWMA-0.94 band on the same rows: scores recomputed with its sigma, the model rows' quantiles unchanged
    ewma_band = quantile_scores(with_ewma_band_sigma(panel, rows), QUANTILE_LEVELS)
    return {
        "90% band within volatility deciles": deciles,
        "quantiles vs the normal band of the same volatility": same_sigma,
        "quantiles vs the band of EWMA 0.94 (the issue's baseline)": ewma_band,
    }


def print_tables(title: str, tables: dict[str, pl.DataFrame]) -> None:
    for name, table in tables.items():
        rounded = table.with_columns(pl.col(pl.Float64).round(4))
        print(f"\n{title}: {name}\n{markdown_table(rounded)}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--span", choices=sorted(SPANS), default="validation")
    parser.add_argument("--dev-csv", type=Path, default=DEV_CSV)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--refit-every", type=int, default=0, help="0: one fit before the span (default)")
    parser.add_argument("--epochs", type=int, default=TrainSettings().epochs, help="fewer: a quick check of the script")
    parser.add_argument(
        "--models", default=",".join([*ABLATION, *BASELINES]), help="comma-separated (default: the whole ablation)"
    )
    parser.add_argument("--no-market", action="store_true", help="skip the run with the market family")
    return parser.parse_args()


def main() -> None:
    args = parse()
    start, end, until = SPANS[args.span]
    train = TrainSettings(device=args.device, threads=args.threads, progress=False, epochs=args.epochs)
    prices = dev_universe(args.dev_csv, until)  # the validation span never reads the test span's prices
    started = time.perf_counter()
    panel, _ = panel_of(prices)
    models = [Model(m) for m in args.models.split(",")]
    base = run(panel, models, train, (start, end), args.refit_every)
    results = [("", panel, base)]
    if not args.no_market:
        market_features = FeatureSettings(families=[*DEFAULT_FAMILIES, "market"])
        market_panel, _ = panel_of(prices, features=market_features)
        featured = [Model.ATTENTION_LSTM, Model.COMBINED, Model.RANDOM_WALK]
        results.append(("with market family: ", market_panel, run(market_panel, featured, train, (start, end), 0)))
    tables = [
        ablation_table(r.metrics).with_columns((prefix + pl.col("model")).alias("model")) for prefix, _, r in results
    ]
    both = pl.concat(tables)
    print(
        f"development universe, origins {start} .. {end} ({args.span} span), {len(panel.tickers)} tickers, "
        f"refit every {args.refit_every or 'never (one fit)'}, device {args.device}; "
        f"{time.perf_counter() - started:.0f} s"
    )
    specs = [Column(c, c, "{:.4f}" if c.endswith("ratio") else "{:.3f}") for c in both.columns if c != "model"]
    print(markdown_table(both, specs))
    for prefix, p, result in results:
        print_tables(f"{prefix or 'default features'}", interval_tables(p, result.predictions))
        across = cross_section_table(result.predictions, k=5, cost_bps=5.0)
        print(f"\n{prefix or 'default features'}: across tickers (5 long / 5 short, 5 bp per unit of turnover)")
        print(markdown_table(cross_section_view(across).with_columns(pl.col(pl.Float64).round(4))))
    h5 = {row["model"]: row for row in both.iter_rows(named=True)}
    keys = " ".join(f"{m.replace('with market family: ', 'mkt_')}_h5={h5[m]['h5 ratio']:.4f}" for m in h5)
    print(f"RESULT ablation span={args.span} {keys}")


if __name__ == "__main__":
    main()
