"""Synthetic daily bars shared by the benchmarks (files starting with '_' are not benchmarks)."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from features.prices.calendar import next_sessions
from features.prices.schema import conform


def synthetic(n_tickers: int, years: int, seed: int = 0, faults: bool = True) -> pl.DataFrame:
    """Random-walk OHLCV bars, optionally with a sprinkle of repairable faults (NaN closes, swapped high/low,
    negative volume)."""
    rng = np.random.default_rng(seed)
    # NYSE sessions, as a real universe has them: weekdays alone put a bar on every holiday, which the model now
    # leaves out (`features.prices.calendar.on_sessions`), a copy of the whole panel at 500 tickers x 25 years
    days = next_sessions(date(1999, 12, 31), 252 * years, "XNYS")  # from 3 January 2000
    n = len(days)
    total = n * n_tickers
    close = 50 * np.exp(np.cumsum(rng.normal(0.0002, 0.02, (n_tickers, n)), axis=1)).ravel()
    open_ = close * np.exp(rng.normal(0, 0.005, total))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, total)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, total)))
    volume = rng.integers(1_000, 1_000_000, total).astype(float)
    if faults:
        bad = rng.choice(total, size=total // 2000, replace=False)
        close[bad[0::3]] = np.nan
        high[bad[1::3]], low[bad[1::3]] = low[bad[1::3]], high[bad[1::3]]
        volume[bad[2::3]] = -1.0
    tickers = np.repeat([f"T{i:04d}" for i in range(n_tickers)], n)
    return conform(
        pl.DataFrame(
            {
                "ticker": tickers,
                "date": np.tile(np.asarray(days, dtype="datetime64[D]"), n_tickers),
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "adj_close": close,
                "volume": volume,
                "source": "synthetic",
                "ingested_at": datetime(2026, 1, 1, tzinfo=UTC),
            }
        )
    )


def panel_of(prices: pl.DataFrame, windows=None, features=None):
    """The feature pipeline on `prices` (default settings unless `features`): (panel, date splits). Imported
    late: `synthetic` alone is light."""
    from features.build import build_features
    from features.denoise import denoise
    from features.prices.validate import validate_prices
    from features.settings import DenoiseSettings, FeatureSettings, ValidationSettings, WindowSettings
    from features.windows import date_splits, make_panel

    frame = validate_prices(prices, ValidationSettings()).frame
    features = features or FeatureSettings()
    ff = build_features(denoise(frame, DenoiseSettings()), features)
    panel = make_panel(ff, features.max_horizon)
    return panel, date_splits(panel, windows or WindowSettings())


# where the development universe lives beside a checkout (../shared/data/README.md), run from the repository root
DEV_CSV = Path("../shared/data/dev_universe/us_large_caps_1990_2019.csv")


def dev_universe(path, until: str = "2016-12-31") -> pl.DataFrame:
    """The development universe's close-only prices up to `until` (default: the end of its validation span,
    2015-2016; its test span 2017-2019 is reported once and never tuned on)."""
    from features.prices.sources import read_file

    if not Path(path).is_file():  # `make bench` on a clone without ../shared: say so and let the next one run
        name = Path(sys.argv[0]).stem
        print(f"{name}: the development universe is not at {path} (../shared/data/README.md; --dev-csv PATH)")
        print(f"RESULT {name} skipped=no_dev_universe")
        raise SystemExit(0)
    frame, _ = read_file(path)  # a wide file holds adjusted closes only: they stand for the close, as ingest does
    return frame.filter(pl.col("date") <= date.fromisoformat(until)).with_columns(close=pl.col("adj_close"))
