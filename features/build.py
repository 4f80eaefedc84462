"""Features and targets in lazy polars, per ticker with `.over("ticker")`.

Every feature at date t is computed from rows <= t of the same ticker (the
denoised log price `log_price_dn`, raw OHLC of day t, volume). The only
negative shift in the project is in `targets`: y_h{h} = log(adj_close[t+h] / adj_close[t]).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import polars as pl

from features.settings import FeatureSettings

log = logging.getLogger("nightcast.features.build")

LP = pl.col("log_price_dn")
RET = LP.diff()  # daily log return of the denoised price


def past_return(window: int) -> pl.Expr:
    return (LP - LP.shift(window)).alias(f"ret_{window}")


def volatility(window: int) -> pl.Expr:
    return RET.rolling_std(window).alias(f"vol_{window}")


def rsi(window: int) -> pl.Expr:
    """Wilder's RSI on log changes, centred to [-0.5, 0.5]."""
    gain = RET.clip(lower_bound=0).ewm_mean(alpha=1 / window, adjust=False)
    loss = (-RET).clip(lower_bound=0).ewm_mean(alpha=1 / window, adjust=False)
    return (gain / (gain + loss) - 0.5).alias(f"rsi_{window}")


def macd(fast: int, slow: int, signal: int) -> list[pl.Expr]:
    """MACD line and histogram on log prices (scale-free across tickers)."""
    line = LP.ewm_mean(span=fast, adjust=False) - LP.ewm_mean(span=slow, adjust=False)
    hist = line - line.ewm_mean(span=signal, adjust=False)
    return [line.alias("macd"), hist.alias("macd_hist")]


def bollinger_pctb(window: int) -> pl.Expr:
    mean, std = LP.rolling_mean(window), LP.rolling_std(window)
    return ((LP - (mean - 2 * std)) / (4 * std)).clip(-1.0, 2.0).alias(f"bb_pctb_{window}")


def high_low_range() -> pl.Expr:
    return (pl.col("high") / pl.col("low")).log().alias("hl_range")


def close_open_return() -> pl.Expr:
    return (pl.col("close") / pl.col("open")).log().alias("co_return")


def volume_z(window: int) -> pl.Expr:
    lv = pl.col("volume").log1p()
    return ((lv - lv.rolling_mean(window)) / lv.rolling_std(window)).clip(-5.0, 5.0).alias(f"volume_z_{window}")


def calendar() -> list[pl.Expr]:
    month = pl.col("date").dt.month().cast(pl.Float64)
    return [
        ((pl.col("date").dt.weekday().cast(pl.Float64) - 3.0) / 2.0).alias("dow"),
        (2 * math.pi * month / 12).sin().alias("month_sin"),
        (2 * math.pi * month / 12).cos().alias("month_cos"),
    ]


def targets(horizons: list[int]) -> list[pl.Expr]:
    """Forward log returns of raw adj_close: the only look-ahead, and it is the label."""
    la = pl.col("adj_close").log()
    return [(la.shift(-h) - la).over("ticker").alias(f"y_h{h}") for h in horizons]


@dataclass(frozen=True)
class FeatureFrame:
    frame: pl.DataFrame  # ticker, date, adj_close, close, features..., targets...
    features: list[str]
    targets: list[str]


def bar_coverage(frame: pl.DataFrame) -> tuple[list[str], list[str]]:
    """Tickers that have full open/high/low bars, and tickers that have volume."""
    per_ticker = frame.group_by("ticker").agg(
        pl.all_horizontal(pl.col(c).is_not_null().all() for c in ("open", "high", "low")).alias("ohlc"),
        pl.col("volume").is_not_null().any().alias("volume"),
    )
    return (
        sorted(per_ticker.filter("ohlc")["ticker"].to_list()),
        sorted(per_ticker.filter("volume")["ticker"].to_list()),
    )


def build_features(frame: pl.DataFrame, settings: FeatureSettings) -> FeatureFrame:
    """Features (from `log_price_dn` and raw OHLCV) and targets for every row.

    `frame` holds validated prices plus `log_price_dn` (see `features.denoise`).
    Warm-up rows without a full feature vector are dropped; rows at the end keep
    null targets (they are what the model forecasts from).
    """
    exprs: list[pl.Expr] = [RET.alias("ret_1")]
    exprs += [past_return(w) for w in settings.return_windows if w > 1]
    exprs += [volatility(w) for w in settings.vol_windows]
    exprs.append(rsi(settings.rsi_window))
    exprs += macd(*settings.macd)
    exprs.append(bollinger_pctb(settings.bollinger_window))
    exprs.append((pl.col("log_price_dn") - pl.col("adj_close").log()).alias("denoise_gap"))
    # Bar features for the tickers that have bars; null (-> neutral 0 once scaled) for close-only ones.
    with_ohlc, with_volume = bar_coverage(frame)
    optional: list[pl.Expr] = []
    if with_ohlc:
        has = pl.col("ticker").is_in(with_ohlc)
        optional += [pl.when(has).then(e).alias(e.meta.output_name()) for e in (high_low_range(), close_open_return())]
    if with_volume:
        vz = volume_z(settings.volume_window)
        optional.append(pl.when(pl.col("ticker").is_in(with_volume)).then(vz).alias(vz.meta.output_name()))
    tickers = frame["ticker"].unique().to_list()
    close_only = sorted(set(tickers) - set(with_ohlc) | set(tickers) - set(with_volume))
    if close_only:
        log.warning(
            "close-only data for %s: open/high/low/volume features are %s",
            ", ".join(close_only[:20]) + ("..." if len(close_only) > 20 else ""),
            "left out" if not optional else "neutral (0) for these tickers",
        )
    per_ticker = [e.over("ticker") for e in exprs]
    if settings.calendar:
        per_ticker += calendar()
    names = [e.meta.output_name() for e in per_ticker]
    optional_names = [e.meta.output_name() for e in optional]
    per_ticker += [e.over("ticker") for e in optional]
    target_names = [f"y_h{h}" for h in settings.horizons]
    out = (
        frame.lazy()
        .sort("ticker", "date")
        .with_columns(per_ticker)
        .with_columns(targets(settings.horizons))
        .with_columns(pl.col(n).fill_nan(None) for n in names + optional_names)
        .drop_nulls(subset=names)  # warm-up rows; optional bar features may stay null
        .select("ticker", "date", "close", "adj_close", *names, *optional_names, *target_names)
        .collect()
    )
    return FeatureFrame(out, names + optional_names, target_names)
