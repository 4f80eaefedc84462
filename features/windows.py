"""Per-ticker contiguous arrays, lookback windows as strided views, date splits, scalers.

A `Panel` stacks every ticker's rows into one (R, F) feature matrix with row
offsets per ticker. A sample is identified by the row index of its last day
("end"); its window is rows end-L+1 .. end of the same ticker, so no window
mixes two tickers and no window is ever copied until a batch is gathered.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from features.build import FeatureFrame, sorted_by_ticker
from features.catalogue import target_name
from features.settings import WindowSettings, held_dates
from nightcast.errors import InsufficientDataError


@dataclass(frozen=True)
class Panel:
    X: np.ndarray  # (R, F) float32 features, rows grouped by ticker, sorted by date
    Y: np.ndarray  # (R, H) float32 forward log returns, NaN where not yet known
    dates: np.ndarray  # (R,) datetime64[D]
    price: np.ndarray  # (R,) float64 adjusted close: the base of implied-price forecasts
    target_end: np.ndarray  # (R,) datetime64[D]: date of row end + max horizon (NaT when unknown)
    ticker_id: np.ndarray  # (R,) int32 index into `tickers`
    offsets: np.ndarray  # (n_tickers + 1,) first row of each ticker, then R
    tickers: list[str]
    features: list[str]
    horizons: list[int]  # forecast horizons in trading days, the columns of Y in this order

    def ends(self, lookback: int) -> np.ndarray:
        """Row indices with at least `lookback` rows of the same ticker up to and including them."""
        short = np.zeros(len(self.dates), dtype=bool)  # a mask, not R-long index arithmetic: memory stays ~R bytes
        for first, end in zip(self.offsets[:-1], self.offsets[1:], strict=True):
            short[first : min(end, first + lookback - 1)] = True
        return np.flatnonzero(~short)

    def windows(self, lookback: int) -> np.ndarray:
        """All windows as a read-only strided view of X: view[end - L + 1] is the (L, F) window ending at `end`."""
        return sliding_window_view(self.X, lookback, axis=0).transpose(0, 2, 1)  # (R - L + 1, L, F)

    @property
    def targets(self) -> list[str]:
        """The target columns Y was read from."""
        return [target_name(h) for h in self.horizons]

    def last_rows(self) -> np.ndarray:
        """Row index of each ticker's latest day."""
        return self.offsets[1:] - 1


PANEL_DTYPE = pl.Float32  # the precision the panel holds every feature and target in (the model computes in it)


def in_panel_precision(ff: FeatureFrame) -> FeatureFrame:
    """`ff` with its features and targets cast to `PANEL_DTYPE` now: the same panel from it (`make_panel` casts
    each column so anyway), smaller while it waits to be stacked: the features are built in float32 already, the
    targets in float64 (~60 MB of the nightly's chunks at 500 tickers x 25 years, held at its feature stage's
    peak)."""
    values = [*ff.features, *ff.targets]
    return replace(ff, frame=ff.frame.with_columns(pl.col(values).cast(PANEL_DTYPE))) if values else ff


def _column_stack(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """(R, C) C-ordered float32, filled one column at a time: peak memory stays near the result itself."""
    out = np.empty((frame.height, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        out[:, j] = frame[name].cast(PANEL_DTYPE).fill_null(float("nan")).to_numpy()
    return out


def make_panel(ff: FeatureFrame, max_horizon: int) -> Panel:
    frame, starts = sorted_by_ticker(ff.frame)
    tickers = frame["ticker"].gather(starts).to_list()
    offsets = np.append(starts, frame.height).astype(np.int64)
    counts = np.diff(offsets)  # rows per ticker (a group_by on the ticker strings peaked at 1.7x the features)
    dates = frame["date"].to_numpy().astype("datetime64[D]", copy=False)
    target_end = np.full(len(dates), np.datetime64("NaT", "D"))
    for first, end in zip(offsets[:-1], offsets[1:], strict=True):  # only rows max_horizon ahead in the same ticker
        target_end[first : max(first, end - max_horizon)] = dates[first + max_horizon : end]
    return Panel(
        X=_column_stack(frame, ff.features),
        Y=_column_stack(frame, ff.targets),
        dates=dates,
        price=frame["adj_close"].to_numpy().astype(np.float64, copy=False),
        target_end=target_end,
        ticker_id=np.repeat(np.arange(len(tickers), dtype=np.int32), counts),
        offsets=offsets,
        tickers=tickers,
        features=list(ff.features),
        horizons=list(ff.horizons),
    )


def _no_rows() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class Splits:
    """Sample ends of each span. Purged: a train target ends before val_start, a validation target (val, purged or
    held) before test_start.

    `held`: the validation span's latest samples kept out of early stopping (`val`), for the forecast
    combination's weights (`forecasting/combine.py`): a val target ends before the first held date, and the
    samples between whose targets reach it are `purged` (in neither, but realised: the historical mean and
    the ridge still learn from them)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_start: np.datetime64
    test_start: np.datetime64
    test_end: np.datetime64
    train_start: np.datetime64 | None = None  # set for rolling windows: scalers then fit from here
    held: np.ndarray = field(default_factory=_no_rows)
    purged: np.ndarray = field(default_factory=_no_rows)

    @property
    def validation(self) -> np.ndarray:
        """The whole validation span's samples, in row order (as `val` is when nothing is held)."""
        return np.sort(np.concatenate([self.val, self.purged, self.held]))

    @property
    def seen(self) -> np.ndarray:
        """Every sample whose labels the fit may know: training and the whole validation span."""
        return np.concatenate([self.train, self.validation])


def known_ends(panel: Panel, lookback: int) -> np.ndarray:
    """Sample ends with `lookback` days of history and every target known."""
    ends = panel.ends(lookback)
    unknown = np.isnan(panel.Y).any(axis=1)  # per row: R bytes, where Y[ends] would copy R x H floats
    known = ends[~unknown[ends]]
    if known.size == 0:
        raise InsufficientDataError(f"no sample has {lookback} days of history and known targets")
    return known


def scored_ends(panel: Panel, lookback: int) -> np.ndarray:
    """Sample ends with `lookback` days of history and at least one target known: what a backtest scores, each
    at the horizons it knows. A ticker whose series ends early (delisted, halted) keeps its last origins at the
    short horizons, where requiring every horizon (`known_ends`, what training needs) would leave out, on
    knowledge of its future, the days just before it ended."""
    ends = panel.ends(lookback)
    some = ~np.isnan(panel.Y).all(axis=1)
    return ends[some[ends]]


def distinct_dates(dates: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Sorted distinct dates of `rows`: marked in a table of days, where np.unique would sort a copy of them."""
    if rows.size == 0:
        return np.empty(0, dtype="datetime64[D]")
    days = dates.view(np.int64)
    first = int(days.min())
    present = np.zeros(int(days.max()) - first + 1, dtype=bool)
    offsets = days[rows]
    offsets -= first  # in place: one R-long temporary, not two
    present[offsets] = True
    return (np.flatnonzero(present) + first).astype("datetime64[D]")


def splits_before(
    panel: Panel,
    lookback: int,
    origin: np.datetime64,
    val_days: int,
    rolling_days: int | None = None,
    known: np.ndarray | None = None,
    held_share: float = 0.0,
) -> Splits:
    """Train and validation ends for a model fit at `origin`, using only labels realised before it.

    A sample's longest target must end before `origin` (it is known then); the
    last `val_days` dates of those samples validate (early stopping), and train
    samples' targets end before the validation span starts (a purge gap of the
    longest horizon between them). With `rolling_days`, training starts that
    many dates before the validation span. `known`: `known_ends(panel, lookback)`
    when the caller has it already. `held_share`: that share of the validation
    dates, the latest, is held out of early stopping (`Splits.held`), and the
    early-stopping samples' targets end before it (purged again).
    """
    # Conditions are tested on every row (1 byte each) and then picked at the sample ends, rather than
    # picking 8-byte dates at the ends first: the splits of 3M rows peaked 0.15x the features lower.
    known = known_ends(panel, lookback) if known is None else known
    realised = known[(panel.target_end < origin)[known]]
    grid = distinct_dates(panel.dates, realised)
    if grid.size <= val_days:
        raise InsufficientDataError(
            f"only {grid.size} dates with realised targets before {origin}; need more than val_days = {val_days} "
            "(move the test start later, shorten val_days, or supply more history)"
        )
    val_start = grid[-val_days]
    train = realised[(panel.target_end < val_start)[realised]]
    train_start = None
    if rolling_days is not None:
        before = grid[grid < val_start]
        train_start = before[max(0, before.size - rolling_days)] if before.size else val_start
        train = train[(panel.dates >= train_start)[train]]
    val = realised[(panel.dates >= val_start)[realised]]
    if train.size == 0 or val.size == 0:
        raise InsufficientDataError(f"empty split before {origin}: {train.size} train, {val.size} validation samples")
    held = purged = _no_rows()
    if (n_held := held_dates(val_days, held_share)) > 0:
        held_start = grid[-n_held]
        before = (panel.dates < held_start)[val]
        stops = (panel.target_end < held_start)[val]
        held, purged, val = val[~before], val[before & ~stops], val[before & stops]
        if val.size == 0:
            raise InsufficientDataError(
                f"no early-stopping sample before {origin}: the validation span's {val_days} dates less the "
                f"{n_held} held for the combination's weights and a purge of the longest horizon leave none "
                "(lengthen windows.val_days or lower publish.combination_holdout)"
            )
    return Splits(train, val, _no_rows(), val_start, origin, origin, train_start, held, purged)


def refit_split(panel: Panel, lookback: int, asof: np.datetime64, known: np.ndarray | None = None) -> Splits:
    """Every sample whose longest target is realised by `asof`, all of them training: a refit on everything
    known then, with no validation span (the epoch count comes from an early-stopped fit).

    Scalers see every row dated up to `asof` (their features are known by then); the split's cutoff (first
    origin out of sample) is the day after `asof`.
    """
    cutoff = np.datetime64(asof, "D") + np.timedelta64(1, "D")
    known = known_ends(panel, lookback) if known is None else known
    realised = known[(panel.target_end < cutoff)[known]]
    if realised.size == 0:
        raise InsufficientDataError(f"no sample has its targets realised by {asof}")
    empty = np.empty(0, dtype=np.int64)
    return Splits(realised, empty, empty, cutoff, cutoff, cutoff)


def known_dates_needed(settings: WindowSettings, longest: int) -> int:
    """Dates with known targets a model needs to be fit and evaluated: the evaluation span (the last `test_days`
    of them); before it a purge of the `longest` horizon, `val_days` dates to validate on, another purge, and at
    least one date to train on (`date_splits`, `splits_before`)."""
    return settings.test_days + settings.val_days + 2 * longest + 1


def dates_needed(settings: WindowSettings, longest: int, warmup: int) -> int:
    """Dates of prices a ticker needs for `known_dates_needed`: a date's targets are known once `longest` more
    dates follow it, and its first sample comes after `warmup` rows of features' warm-up and a window of
    `lookback`. A lower bound for a universe's distinct dates (a feature may drop more rows)."""
    return known_dates_needed(settings, longest) + longest + warmup + settings.lookback - 1


def dates_short(panel: Panel, settings: WindowSettings) -> int:
    """How many more dates with known targets the panel needs before a model can be fit and evaluated
    (`known_dates_needed`; 0: enough)."""
    need = known_dates_needed(settings, max(panel.horizons))
    try:
        have = distinct_dates(panel.dates, known_ends(panel, settings.lookback)).size
    except InsufficientDataError:  # no sample at all yet
        have = 0
    return max(0, need - have)


def date_splits(panel: Panel, settings: WindowSettings, held_share: float = 0.0) -> Splits:
    """Train / validation / test sample ends by date, for one fit before the test span.

    The test span is the last `test_days` dates whose targets are all known; the
    model is fit as `splits_before` the first of them (`held_share`: there).
    """
    known = known_ends(panel, settings.lookback)
    grid = distinct_dates(panel.dates, known)
    if grid.size <= settings.test_days + settings.val_days:
        raise InsufficientDataError(
            f"{grid.size} dates with known targets; need more than test_days + val_days = "
            f"{settings.test_days + settings.val_days} "
            "(shorten windows.test_days / windows.val_days or supply more history)"
        )
    test_start = grid[-settings.test_days]
    fit = splits_before(panel, settings.lookback, test_start, settings.val_days, known=known, held_share=held_share)
    test = known[(panel.dates >= test_start)[known]]
    return replace(fit, test=test, test_start=test_start, test_end=grid[-1])


_BLOCK_ROWS = 1 << 16  # rows scaled, or reduced, at a time: ~6-12 MB of temporaries at 23 features


def column_moments(values: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and (population) std of each column of `values` (of its `rows` only, when given), NaN
    ignored: float64 (C,) arrays; a column with no value has mean NaN and std NaN.

    A block of rows at a time in float64, each block's mean and squared deviations merged into the running
    ones (Chan, Golub and LeVeque's pairwise update): numpy's nanmean/nanstd on a float32 panel summed in
    float32 row after row (off by ~0.1% at 3M rows), four columns of the training rows at a time, and took
    3.5 s a fit at 500 tickers x 25 years (issue 15: as long as the fit's epoch on a GPU); this is exact to
    float64 rounding, 4-5x faster and holds one block's temporaries. `rows`: indices, or a boolean mask."""
    if rows is not None and rows.dtype == bool:
        rows = np.flatnonzero(rows)
    columns = values.shape[1]
    n, mean, m2 = np.zeros(columns), np.zeros(columns), np.zeros(columns)
    total = len(values) if rows is None else len(rows)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # inf values: a non-finite mean
        for start in range(0, total, _BLOCK_ROWS):
            part = values[start : start + _BLOCK_ROWS] if rows is None else values[rows[start : start + _BLOCK_ROWS]]
            block = part.astype(np.float64)  # a copy, worked on in place
            missing = np.isnan(block)
            count = len(block) - np.count_nonzero(missing, axis=0)
            np.copyto(block, 0.0, where=missing)
            block_mean = np.divide(block.sum(axis=0), count, out=np.zeros(columns), where=count > 0)
            block -= block_mean
            np.copyto(block, 0.0, where=missing)
            block *= block
            merged = n + count
            share = np.divide(count, merged, out=np.zeros(columns), where=merged > 0)
            delta = block_mean - mean
            mean += delta * share
            m2 += block.sum(axis=0) + delta * delta * n * share
            n = merged
        return n, np.where(n > 0, mean, np.nan), np.sqrt(m2 / n)


@dataclass(frozen=True)
class Scaler:
    """Per-column standardisation fit on the training span only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, rows: np.ndarray | None = None) -> Scaler:
        """Mean and std per column of `values` (of its `rows` only, when given), ignoring NaN (close-only
        tickers' bar features); a column with no value (or a non-finite one) scales by mean 0 and std 1, a
        column whose std is below 1e-8 (a constant) by std 1."""
        return cls.from_moments(*column_moments(values, rows)[1:])

    @classmethod
    def from_moments(cls, mean: np.ndarray, std: np.ndarray) -> Scaler:
        """From `column_moments`' mean and std (or the same figures computed elsewhere, e.g. on a GPU)."""
        usable = np.isfinite(mean) & np.isfinite(std)
        mean = np.where(usable, mean, 0.0)
        return cls(mean.astype(np.float32), np.where(usable & (std > 1e-8), std, 1.0).astype(np.float32))

    def transform(self, values: np.ndarray, in_place: bool = False) -> np.ndarray:
        """Standardise; missing values become 0, the training mean. `in_place`: `values` is a float32 copy of
        the caller's own (rows gathered from the panel) and is overwritten and returned, with no second array
        of its size (~0.25 GiB for a fold's training rows at 500 tickers x 25 years)."""
        if in_place and values.dtype != np.float32:
            raise TypeError(f"an in-place transform needs float32 values, got {values.dtype}")
        out = values if in_place else np.empty(values.shape, dtype=np.float32)
        # np.nan_to_num((values - mean) / std).astype(float32), a block of rows at a time: every step is
        # elementwise, so the values are the same, and its temporaries (the difference, and nan_to_num's five
        # boolean masks) are a block's, not the whole array's (they doubled the peak of scaling a 3.1M-row panel)
        for start in range(0, len(values), _BLOCK_ROWS):
            part = values[start : start + _BLOCK_ROWS] - self.mean
            part /= self.std
            out[start : start + _BLOCK_ROWS] = np.nan_to_num(part, copy=False, nan=0.0)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Scaler:
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


def training_rows(panel: Panel, splits: Splits) -> np.ndarray:
    """Rows of the training window (before the validation span): what scalers may see."""
    inside = panel.dates < splits.val_start
    if splits.train_start is not None:
        inside &= panel.dates >= splits.train_start
    return np.flatnonzero(inside)
