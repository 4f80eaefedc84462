"""The feature catalogue: which features exist, their names, and each one's value as a polars expression.

One small definition per feature, per ticker. Every feature at date t is
computed from rows <= t of the same ticker (the denoised log price
`log_price_dn`, raw OHLC of day t, volume); the market family alone also
reads other tickers' and context series' rows <= t (`features.market`).
The only negative shift in the project is in `targets`:
y_h{h} = log(adj_close[t+h] / adj_close[t]).

A feature's value reads the columns the engine (`features.build`) prepares:
`_i` (the row's index within its ticker), `_r` (daily log return), `_lv`
(log volume), `_month`, `_la` (log adj_close), and the per-ticker window
columns it declares in `Feature.windows` (rolling moments and EWMs from
`features.kernels`). Which features flows and the model see, and in which
order, is decided here (`feature_names`); no other package spells a name.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from features import kernels
from features.market import MARKET_FEATURES
from features.settings import FeatureSettings

log = logging.getLogger("nightcast.features.catalogue")

LP = pl.col("log_price_dn")
IDX = pl.col("_i")  # row index within the ticker (0 = first row)
RET = pl.col("_r")  # daily log return of the denoised price, NaN on each ticker's first row
LOG_VOLUME = pl.col("_lv")  # log(1 + volume), computed once
MONTH = pl.col("_month")  # calendar month 1-12, computed once (date -> month costs more than the features using it)
MOMENTS = pl.Struct({"mean": pl.Float64, "std": pl.Float64})


@dataclass(frozen=True)
class Feature:
    """A feature: per-ticker window columns it needs (stage by stage), then its value from them."""

    name: str
    value: pl.Expr
    windows: list[dict[str, pl.Expr]] = field(default_factory=list)  # stage k may read stages < k
    warmup: int = 0  # rows of its own ticker the value needs before it is defined


def _values(series: pl.Series) -> np.ndarray:
    return series.cast(pl.Float64).to_numpy()  # nulls become NaN, which the kernels treat as missing


def rolling_moments(expr: pl.Expr, window: int) -> pl.Expr:
    """Per-ticker rolling mean and sample std (ddof=1) of `expr` over `window` rows, as struct fields mean/std.

    The values of `expr.rolling_mean(window).over("ticker")` and `rolling_std`,
    with NaN (not null) where the window is not full yet or holds a missing
    value: features built on it are NaN there, and such rows are dropped.
    """

    def run(columns: list[pl.Series]) -> pl.Series:
        mean, std = kernels.rolling_moments(_values(columns[0]), columns[1].to_numpy(), window)
        return pl.DataFrame({"mean": mean, "std": std}).to_struct()

    return pl.map_batches([expr, IDX], run, return_dtype=MOMENTS)


def ewm_mean(expr: pl.Expr, alpha: float) -> pl.Expr:
    """Per-ticker EWM of `expr` (adjust=False), started at each ticker's first value: `ewm_mean(...).over("ticker")`
    (NaN where that is null)."""

    def run(columns: list[pl.Series]) -> pl.Series:
        return pl.Series(kernels.ewm_mean(_values(columns[0]), columns[1].to_numpy(), alpha))

    return pl.map_batches([expr, IDX], run, return_dtype=pl.Float64)


def span_alpha(span: int) -> float:
    return 2.0 / (span + 1.0)


def past_return(window: int) -> Feature:
    return Feature(f"ret_{window}", LP - LP.shift(window), warmup=window)


def lagged_return(lag: int) -> Feature:
    return Feature(f"ret_1_lag{lag}", RET.shift(lag), warmup=lag + 1)


def volatility(window: int) -> Feature:
    col = f"_mom_r_{window}"
    std = pl.col(col).struct.field("std")
    return Feature(f"vol_{window}", std, [{col: rolling_moments(RET, window)}], warmup=window)


def rsi(window: int) -> Feature:
    """Wilder's RSI on log changes, centred to [-0.5, 0.5]: gain / (gain + loss) = ewm(up) / ewm(|change|)."""
    a = 1 / window
    up, moves = f"_ewm_up_{window}", f"_ewm_abs_{window}"
    windows = {up: ewm_mean(RET.clip(lower_bound=0), a), moves: ewm_mean(RET.abs(), a)}
    return Feature(f"rsi_{window}", pl.col(up) / pl.col(moves) - 0.5, [windows])


def macd(fast: int, slow: int, signal: int) -> list[Feature]:
    """MACD line and histogram on log prices (scale-free across tickers)."""
    f, s, sig = f"_ema_{fast}", f"_ema_{slow}", f"_macd_signal_{signal}"
    emas = {f: ewm_mean(LP, span_alpha(fast)), s: ewm_mean(LP, span_alpha(slow))}
    line = pl.col(f) - pl.col(s)
    signal_stage = {sig: ewm_mean(line, span_alpha(signal))}
    return [Feature("macd", line, [emas]), Feature("macd_hist", line - pl.col(sig), [emas, signal_stage])]


def bollinger_pctb(window: int) -> Feature:
    col = f"_mom_lp_{window}"
    mean, std = pl.col(col).struct.field("mean"), pl.col(col).struct.field("std")
    value = ((LP - (mean - 2 * std)) / (4 * std)).clip(-1.0, 2.0)
    return Feature(f"bb_pctb_{window}", value, [{col: rolling_moments(LP, window)}], warmup=window - 1)


def denoise_gap() -> Feature:
    return Feature("denoise_gap", LP - pl.col("_la"))


def high_low_range() -> Feature:
    return Feature("hl_range", (pl.col("high") / pl.col("low")).log())


def close_open_return() -> Feature:
    return Feature("co_return", (pl.col("close") / pl.col("open")).log())


def volume_z(window: int) -> Feature:
    col = f"_mom_lv_{window}"
    mean, std = pl.col(col).struct.field("mean"), pl.col(col).struct.field("std")
    value = ((LOG_VOLUME - mean) / std).clip(-5.0, 5.0)
    return Feature(f"volume_z_{window}", value, [{col: rolling_moments(LOG_VOLUME, window)}], warmup=window - 1)


def calendar() -> list[Feature]:
    """Day of week in [-1, 1] (Mon..Fri) and the month on the unit circle (a lookup by month number)."""
    sin = pl.Series([0.0] + [math.sin(2 * math.pi * m / 12) for m in range(1, 13)])  # index 0 unused
    cos = pl.Series([0.0] + [math.cos(2 * math.pi * m / 12) for m in range(1, 13)])
    return [
        Feature("dow", (pl.col("date").dt.weekday().cast(pl.Float64) - 3.0) / 2.0),
        Feature("month_sin", pl.lit(sin).gather(MONTH)),
        Feature("month_cos", pl.lit(cos).gather(MONTH)),
    ]


def core_features(settings: FeatureSettings) -> list[Feature]:
    """Features every ticker has (they need only the adjusted close and the date)."""
    s, fam = settings, set(settings.families)
    out: list[Feature] = []
    if "returns" in fam:
        out += [past_return(w) for w in s.return_windows]
    if "lags" in fam:
        out += [lagged_return(k) for k in s.return_lags]
    if "volatility" in fam:
        out += [volatility(w) for w in s.vol_windows]
    if "rsi" in fam:
        out.append(rsi(s.rsi_window))
    if "macd" in fam:
        out += macd(*s.macd)
    if "bollinger" in fam:
        out.append(bollinger_pctb(s.bollinger_window))
    if "denoise_gap" in fam:
        out.append(denoise_gap())
    if "calendar" in fam:
        out += calendar()
    return out


def bar_coverage(frame: pl.DataFrame, tickers: list[str]) -> tuple[list[str], list[str]]:
    """Tickers that have full open/high/low bars, and tickers that have volume (`tickers`: all of them, sorted)."""
    bars = ("open", "high", "low")
    if all(frame[c].null_count() == 0 for c in (*bars, "volume")):  # the usual case, read off the column headers
        return tickers, tickers
    per = frame.group_by("ticker").agg(
        pl.all_horizontal(pl.col(c).is_not_null().all() for c in bars).alias("ohlc"),
        pl.col("volume").is_not_null().any().alias("volume"),
    )
    return sorted(per.filter("ohlc")["ticker"].to_list()), sorted(per.filter("volume")["ticker"].to_list())


def bar_features(frame: pl.DataFrame, settings: FeatureSettings, tickers: list[str] | None = None) -> list[Feature]:
    """Features needing open/high/low or volume: null (neutral 0 once scaled) for close-only tickers.

    `tickers`: every ticker of `frame`, when the caller knows them already.
    """
    fam = set(settings.families)
    every = sorted(frame["ticker"].unique().to_list() if tickers is None else tickers)
    with_ohlc, with_volume = bar_coverage(frame, every)
    tickers = set(every)

    def only_for(having: list[str], feature: Feature) -> Feature:
        if len(having) == len(tickers):
            return feature  # every ticker has it: no mask to pay for
        masked = pl.when(pl.col("ticker").is_in(having)).then(feature.value)
        return Feature(feature.name, masked, feature.windows)

    out: list[Feature] = []
    if "range" in fam and with_ohlc:
        out += [only_for(with_ohlc, f) for f in (high_low_range(), close_open_return())]
    if "volume" in fam and with_volume:
        out.append(only_for(with_volume, volume_z(settings.volume_window)))
    lacking = set()
    if "range" in fam:
        lacking |= tickers - set(with_ohlc)
    if "volume" in fam:
        lacking |= tickers - set(with_volume)
    if lacking:
        names = sorted(lacking)
        log.warning(
            "close-only data for %s: open/high/low/volume features are %s",
            ", ".join(names[:20]) + ("..." if len(names) > 20 else ""),
            "neutral (0) for these tickers" if out else "left out",
        )
    return out


def market_context(settings: FeatureSettings) -> list[Feature]:
    """The 'market' family: columns `features.build` joins from `features.market.market_features` (computed
    over every ticker of a date, before tickers are chunked). Null where a context series or the cross-section
    has no value: neutral (0) once scaled, and never a reason to drop a row."""
    if "market" not in settings.families:
        return []
    return [Feature(name, pl.col(name)) for name in MARKET_FEATURES]


def target_name(horizon: int) -> str:
    """The column of the forward log return over `horizon` trading days: the one place it is spelled."""
    return f"y_h{horizon}"


def targets(horizons: list[int]) -> list[pl.Expr]:
    """Forward log returns of raw adj_close: the only look-ahead, and it is the label."""
    la = pl.col("_la")  # log adj_close, computed once
    return [pl.when(pl.col("_left") >= h).then(la.shift(-h) - la).alias(target_name(h)) for h in horizons]


def feature_names(settings: FeatureSettings) -> list[str]:
    """Every feature `settings` can build, in the order a build lists them: core, bar, then market features.

    A build leaves out bar features no ticker has data for, so builds of disjoint tickers combine into the
    order of one build of them all by keeping this order (`features.build.combine`).
    """
    optional = []
    if "range" in settings.families:
        optional += [high_low_range(), close_open_return()]
    if "volume" in settings.families:
        optional.append(volume_z(settings.volume_window))
    return [f.name for f in core_features(settings) + optional + market_context(settings)]
