"""The feature engine: builds the catalogue's features (`features.catalogue`) and targets, chunked and threaded.

Features are stored as Float32 (what the model reads), targets as Float64.

How it runs fast and safely:
- tickers are built in chunks of about `CHUNK_ROWS` rows (whole tickers,
  side by side in threads); no value depends on the chunking (tested). The
  market family reads every ticker of a date: it is joined before chunking;
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

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from features import catalogue
from features.catalogue import IDX, LP, Feature
from features.market import MARKET_FEATURES, market_inputs
from features.settings import FeatureSettings


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


def ticker_slices(frame: pl.DataFrame, chunks: list[list[str]]) -> list[pl.DataFrame]:
    """The rows of each chunk's tickers in `frame`: slices, no copy, when its rows are sorted by (ticker, date) (the
    ingest's are) and the chunks are its tickers in that order; otherwise filtered copies. The nightly's copies
    were a second copy of its prices through the whole feature build (~0.2 GB at 500 tickers x 25 years)."""
    starts = ticker_starts(frame["ticker"])
    names = frame["ticker"].gather(starts).to_list()
    runs = [name for chunk in chunks for name in chunk]
    if names != runs or not is_sorted(frame, starts):
        return [frame.filter(pl.col("ticker").is_in(chunk)) for chunk in chunks]
    bounds = np.append(starts, frame.height)
    first = np.cumsum([0, *(len(chunk) for chunk in chunks)])
    return [frame.slice(int(bounds[a]), int(bounds[b] - bounds[a])) for a, b in zip(first[:-1], first[1:], strict=True)]


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


@dataclass(frozen=True)
class FeatureFrame:
    frame: pl.DataFrame  # ticker, date, close, adj_close, features..., targets...
    features: list[str]
    horizons: list[int]  # forecast horizons in trading days; their targets are columns `target_name(h)`

    @property
    def targets(self) -> list[str]:
        return [catalogue.target_name(h) for h in self.horizons]


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
        targets=catalogue.targets(horizons),
        keep=(IDX >= warmup) & defined,
        output=[
            *map(pl.col, ("ticker", "date", "close", "adj_close", *names)),
            *(pl.col(f.name).fill_nan(None) for f in optional),
            *(pl.col(catalogue.target_name(h)) for h in horizons),
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


def _with_market(df: pl.DataFrame, settings: FeatureSettings, market: pl.DataFrame | None) -> pl.DataFrame:
    """`df` (sorted) with the market family's columns joined by (ticker, date): exact days only, so a day
    without a value stays null and nothing is carried from a later (or earlier) row."""
    if "market" not in settings.families:
        return df
    if market is None:
        market = market_inputs(df, None, settings.market)
    return df.join(
        market.select("ticker", "date", *MARKET_FEATURES), on=["ticker", "date"], how="left", maintain_order="left"
    )


def warmup(settings: FeatureSettings) -> int:
    """Rows of its own a ticker needs before its first feature row, as far as the settings say: the core and
    market features' longest warm-up (a bar feature, present or not by the data, may add to it)."""
    features = catalogue.core_features(settings) + catalogue.market_context(settings)
    return max((f.warmup for f in features), default=0)


def build_features(
    frame: pl.DataFrame, settings: FeatureSettings, chunk_rows: int = CHUNK_ROWS, market: pl.DataFrame | None = None
) -> FeatureFrame:
    """Features (from `log_price_dn` and raw OHLCV) and targets for every row.

    `frame` holds validated prices plus `log_price_dn` (see `features.denoise`).
    Warm-up rows without a full set of core features are dropped; rows at the
    end keep null targets (they are what the model forecasts from). Tickers
    are built `chunk_rows` rows at a time (whole tickers): every value depends
    on its own ticker only, so the result is the same for any chunk size.
    The market family is the exception, and is computed before the chunks:
    `market` (from `features.market.market_inputs` over the whole universe,
    when `frame` is only part of it), else `market_inputs` of `frame` itself.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    needed = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume", "log_price_dn"]
    df, starts = sorted_by_ticker(frame.select(needed))
    df = _with_market(df, settings, market)
    core = catalogue.core_features(settings)
    optional = catalogue.bar_features(df, settings, df["ticker"].gather(starts).to_list())
    optional += catalogue.market_context(settings)
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
    return FeatureFrame(out, [f.name for f in core + optional], list(settings.horizons))


def concat_features(parts: list[FeatureFrame], settings: FeatureSettings) -> FeatureFrame:
    """One feature frame from `build_features` runs on disjoint tickers, features in the catalogue's order.

    Features never mix tickers (the market family's are given to every part from one `market_inputs` of
    them all), so the rows are those of one build of them all. A bar feature a part lacks
    entirely (only close-only tickers) is null there, exactly as for its close-only tickers in a single build.
    """
    present = {name for part in parts for name in part.features}
    ordered = [name for name in catalogue.feature_names(settings) if name in present]
    frame = pl.concat([p.frame for p in parts], how="diagonal_relaxed").select(
        "ticker", "date", "close", "adj_close", *ordered, *parts[0].targets
    )
    # parts of chunks in ticker order are sorted already: a sort would copy every column (~0.6 GB at 3.1M rows)
    frame, _ = sorted_by_ticker(frame)
    return FeatureFrame(frame, ordered, parts[0].horizons)
