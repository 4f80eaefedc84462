"""Whether a night has history enough for a model, from its prices alone: the check a replayed or backdated
night (`--asof`) gets before any work, both before Prefect starts (on the source's prices) and in the flow (on
the validated prices)."""

from __future__ import annotations

from datetime import date

import polars as pl

from features.build import warmup
from features.prices.validate import first_night_with_history
from features.settings import FeatureSettings, WindowSettings
from features.windows import dates_needed


def too_little_history(
    asof: date,
    cut: pl.DataFrame,
    prices: pl.DataFrame,
    windows: WindowSettings,
    features: FeatureSettings,
    min_rows: int,
) -> str | None:
    """Why `cut` (the prices up to `asof`) is too little for a model, naming the first night of `prices` that
    could have enough; None when it may be enough. Without it, a run failed in the model's split with "only 0
    dates with realised targets before <a day a year before --asof>", or listed every ticker too short without
    saying when to replay. A lower bound: the flow checks the exact need once the features (and their warm-up)
    are built."""
    dates = dates_needed(windows, max(features.horizons), warmup(features))
    rows, have = cut.group_by("ticker").len()["len"].max() or 0, cut["date"].n_unique()
    if rows >= min_rows and have >= dates:
        return None
    first = first_night_with_history(prices, min_rows, dates)
    short = (
        f"no ticker has validation.min_rows={min_rows} rows by then (the most: {rows})"
        if rows < min_rows
        else f"the data holds {have} dates by then, and a model needs at least {dates} (windows.test_days + "
        "windows.val_days + windows.lookback + 3 x the longest horizon + the features' warm-up)"
    )
    later = f"the first night that could have enough is {first} or later" if first else "no stored night has enough"
    return f"--asof {asof}: too little history: {short}; {later}"
