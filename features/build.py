"""Features and targets as polars expressions, one small definition per feature, per ticker.

Every feature at date t is computed from rows <= t of the same ticker (the
denoised log price `log_price_dn`, raw OHLC of day t, volume). The only
negative shift in the project is in `targets`: y_h{h} = log(adj_close[t+h] / adj_close[t]).
Features are stored as Float32 (what the model reads), targets as Float64.

How it runs fast and safely:
- tickers are built in chunks of about `CHUNK_ROWS` rows (whole tickers,
  side by side in threads); no value depends on the chunking (tested);
- rows are sorted by (ticker, date); plain shifts run once over whole
  columns, and every row closer to its ticker's start than the longest
  warm-up (`Feature.warmup`, counted with `_i`, the row's index within its
  ticker) is dropped, so no shifted value from the previous ticker survives;
- rolling statistics and EWMs are per-ticker window columns computed in an
  early stage (`Feature.windows`), and the features are plain arithmetic on
  those columns. The window columns come from `features.kernels`, which walk
  the whole sorted column once and restart at every ticker's first row: the
  same values as `expr.rolling_std(w).over("ticker")` (tested), 2-5x faster
  than polars' `.over` (numbers in `features.kernels`). They are never run as plain
  global polars rolling windows: those carry floating-point state along the
  column, so one ticker's later rows would perturb the next ticker's earlier
  values in the last bits (the leak test caught exactly that).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from features import kernels
from features.settings import FeatureSettings

log = logging.getLogger("nightcast.features.build")

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


def ticker_starts(tickers: pl.Series) -> np.ndarray:
    """Row where each run of one ticker begins (each ticker's first row, once rows are sorted by ticker)."""
    lengths = tickers.rle().struct.field("len").to_numpy()
    return (np.cumsum(lengths) - lengths).astype(np.int64)


def is_sorted(frame: pl.DataFrame, starts: np.ndarray | None = None) -> bool:
    """True when rows are sorted by (ticker, date) with no duplicate day (`starts`: its `ticker_starts`)."""
    if frame.height < 2:
        return True
    if frame["ticker"].null_count() or frame["date"].null_count():
        return False
    starts = ticker_starts(frame["ticker"]) if starts is None else starts
    names = frame["ticker"].gather(starts).to_list()
    if any(a >= b for a, b in zip(names, names[1:], strict=False)):  # a ticker out of order or in two runs
        return False
    later = np.diff(frame["date"].cast(pl.Int32).to_numpy()) > 0
    later[starts[1:] - 1] = True  # a new ticker may start at any date
    return bool(later.all())


def sorted_by_ticker(frame: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """`frame` sorted by (ticker, date), and each ticker's first row; sorts (a copy of every column) only if needed."""
    starts = ticker_starts(frame["ticker"])
    if is_sorted(frame, starts):
        return frame, starts
    frame = frame.sort("ticker", "date")
    return frame, ticker_starts(frame["ticker"])


def targets(horizons: list[int]) -> list[pl.Expr]:
    """Forward log returns of raw adj_close: the only look-ahead, and it is the label."""
    la = pl.col("_la")  # log adj_close, computed once
    return [pl.when(pl.col("_left") >= h).then(la.shift(-h) - la).alias(f"y_h{h}") for h in horizons]


def ticker_positions(starts: np.ndarray, rows: int) -> list[pl.Series]:
    """`_i`, each row's index within its ticker, and `_left`, the rows after it, from the tickers' first rows."""
    lengths = np.diff(np.append(starts, rows))
    row = np.arange(rows, dtype=np.int64)
    first = np.repeat(starts, lengths)
    return [pl.Series("_i", row - first), pl.Series("_left", first + np.repeat(lengths, lengths) - 1 - row)]


def month_of(dates: pl.Series) -> pl.Series:
    """Calendar month of each date, looked up by day number: polars' `dt.month()` cost more than the
    features using it (a date range is short, the rows are many)."""
    days = dates.cast(pl.Int32)
    lo, hi = days.min(), days.max()
    if lo is None:
        return pl.Series("_month", [], dtype=pl.Int8)
    table = pl.int_range(lo, hi + 1, eager=True).cast(pl.Date).dt.month()
    return table.gather(days - lo).alias("_month")


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


@dataclass(frozen=True)
class FeatureFrame:
    frame: pl.DataFrame  # ticker, date, close, adj_close, features..., targets...
    features: list[str]
    targets: list[str]


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


def row_chunks(starts: np.ndarray, rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """(offset, length) row slices of `rows` sorted rows, each holding whole tickers (first rows `starts`).

    A ticker joins the chunk its first row falls in (first row // chunk_rows),
    so a chunk has about `chunk_rows` rows, more only by its last ticker.
    """
    if rows == 0:
        return [(0, 0)]
    cuts = starts[np.concatenate(([True], np.diff(starts // chunk_rows) > 0))]
    ends = np.append(cuts[1:], rows)
    return [(int(a), int(b - a)) for a, b in zip(cuts, ends, strict=True)]


@dataclass(frozen=True)
class _Plan:
    """What to compute for every chunk: window stages, feature values, targets and the rows to keep."""

    stages: list[dict[str, pl.Expr]]  # window columns, stage k may read stages < k
    values: list[pl.Expr]  # every feature, as Float32 (the model reads float32; half the memory)
    targets: list[pl.Expr]
    keep: pl.Expr  # rows past every warm-up with every core feature defined
    output: list[pl.Expr]


def _plan(core: list[Feature], optional: list[Feature], horizons: list[int]) -> _Plan:
    stages: list[dict[str, pl.Expr]] = []
    for feature in core + optional:
        for k, stage in enumerate(feature.windows):
            if len(stages) <= k:
                stages.append({})
            stages[k].update(stage)
    warmup = max((f.warmup for f in core + optional), default=0)
    names = [f.name for f in core]
    # Rows kept: past every warm-up (so no shift reaches the previous ticker) and with every core feature
    # defined, not null or NaN (e.g. no move at all in an RSI window); bar features may stay null.
    defined = pl.all_horizontal(pl.col(n).is_not_nan() for n in names)  # null where a feature is null
    return _Plan(
        stages=stages,
        values=[f.value.cast(pl.Float32).alias(f.name) for f in core + optional],
        targets=targets(horizons),
        keep=(IDX >= warmup) & defined,
        output=[
            *map(pl.col, ("ticker", "date", "close", "adj_close", *names)),
            *(pl.col(f.name).fill_nan(None) for f in optional),
            *(pl.col(f"y_h{h}") for h in horizons),
        ],
    )


def _build_chunk(df: pl.DataFrame, starts: np.ndarray, plan: _Plan) -> pl.DataFrame:
    """Features and targets of whole tickers (first rows `starts`, relative to the chunk). Each stage runs
    eagerly: `with_columns` runs a stage's kernels side by side (they release the GIL) where the lazy
    engine ran them one after another."""
    df = df.with_columns(
        *ticker_positions(starts, df.height),
        month_of(df["date"]),
        pl.col("adj_close").log().alias("_la"),
        pl.col("volume").log1p().alias("_lv"),
    )
    df = df.with_columns(pl.when(IDX >= 1).then(LP.diff()).otherwise(float("nan")).alias("_r"))
    for stage in plan.stages:
        df = df.with_columns(expr.alias(name) for name, expr in stage.items())
    return (
        df.lazy()
        .select("ticker", "date", "close", "adj_close", *plan.values, *plan.targets, IDX)
        .filter(plan.keep)
        .select(plan.output)
        .collect(engine="in-memory")
    )


# Rows built at a time. Columns of a chunk stay well under jemalloc's 8 MiB `oversize_threshold`
# (250k float64 = 2 MB), so polars reuses freed memory instead of mapping fresh pages for every
# column: on 3.1M rows, one chunk took 150k-300k page faults per build and ran 2-3x slower.
CHUNK_ROWS = 250_000


def build_features(frame: pl.DataFrame, settings: FeatureSettings, chunk_rows: int = CHUNK_ROWS) -> FeatureFrame:
    """Features (from `log_price_dn` and raw OHLCV) and targets for every row.

    `frame` holds validated prices plus `log_price_dn` (see `features.denoise`).
    Warm-up rows without a full set of core features are dropped; rows at the
    end keep null targets (they are what the model forecasts from). Tickers
    are built `chunk_rows` rows at a time (whole tickers): every value depends
    on its own ticker only, so the result is the same for any chunk size.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    needed = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume", "log_price_dn"]
    df, starts = sorted_by_ticker(frame.select(needed))
    core = core_features(settings)
    optional = bar_features(df, settings, df["ticker"].gather(starts).to_list())
    plan = _plan(core, optional, settings.horizons)

    def build(chunk: tuple[int, int]) -> pl.DataFrame:
        offset, length = chunk
        inside = starts[(starts >= offset) & (starts < offset + length)] - offset
        return _build_chunk(df.slice(offset, length), inside, plan)

    chunks = row_chunks(starts, df.height, chunk_rows)
    # Chunks are built side by side: polars and the kernels release the GIL. One thread more than polars'
    # pool (POLARS_MAX_THREADS) keeps the cores busy while another thread holds the GIL: on 2 cores,
    # 1/2/3/4 workers took 0.62/0.53/0.42/0.46 s (3.1M rows, median of 8).
    with ThreadPoolExecutor(max_workers=min(len(chunks), pl.thread_pool_size() + 1)) as pool:
        out = pl.concat(list(pool.map(build, chunks)), rechunk=False)
    return FeatureFrame(out, [f.name for f in core + optional], [f"y_h{h}" for h in settings.horizons])
