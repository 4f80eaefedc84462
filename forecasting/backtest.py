"""Walk-forward backtest: every model and baseline forecasts from identical origins.

A forecast origin is every trading day of the test span. Models are refit every
`refit_every` origins on labels realised before the refit date (a purge gap
of the longest horizon, early stopping on the last `val_days` of them), and all
origins until the next refit are scored in one batched pass. Every
out-of-sample prediction is kept in the long contract
`model, ticker, asof_date, horizon, target_date, y_true, y_pred[, y_lower, y_upper]`
(plus `last_price`, the adjusted close at the origin, for implied-price metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from features.windows import Panel, Splits, known_ends, scored_ends, splits_before
from forecasting.baselines import Forecaster, HistoricalMean, PointForecaster, RandomWalk, RidgeBaseline
from forecasting.combine import Combination
from forecasting.conformal import conformal_intervals, conformal_quantiles
from forecasting.intervals import QUANTILE_LEVELS
from forecasting.metrics import metrics_table
from forecasting.names import Model
from forecasting.relative import RelativeForecaster
from forecasting.settings import BacktestSettings, ModelSettings, TrainSettings
from forecasting.together import fit_many, width
from forecasting.train import FitJob, TrainedModel, predict, resolve_device
from forecasting.volatility import PanelSigma
from nightcast.errors import InsufficientDataError
from nightcast.memory import release, trim_heap
from nightcast.progress import Steps

log = logging.getLogger("nightcast.forecasting.backtest")


def long_predictions(
    panel: Panel, ends: np.ndarray, y_pred: np.ndarray, model: str, sigma: np.ndarray | PanelSigma | None = None
) -> pl.DataFrame:
    """One row per (origin, horizon) for predictions `y_pred` (N, K) made at rows `ends`; with `sigma` (R, K),
    the volatility forecast made at each origin (`volatility.panel_sigma`, or a `PanelSigma`) as column
    `sigma`."""
    horizons = np.asarray(panel.horizons)
    n, k = len(ends), len(horizons)
    rows = np.repeat(ends, k)
    h = np.tile(horizons, n)
    last_row = panel.offsets[panel.ticker_id[rows] + 1] - 1
    target_row = np.minimum(rows + h, last_row)
    target_date = np.where(rows + h <= last_row, panel.dates[target_row], np.datetime64("NaT", "D"))
    extra = {} if sigma is None else {"sigma": sigma[ends].reshape(-1)}
    return pl.DataFrame(
        {
            "model": np.full(n * k, model),
            "ticker": np.asarray(panel.tickers)[panel.ticker_id[rows]],
            "asof_date": panel.dates[rows],
            "horizon": h.astype(np.int32),
            "target_date": target_date.astype("datetime64[D]"),
            "y_true": panel.Y[ends].reshape(-1).astype(np.float64),
            "y_pred": np.asarray(y_pred, dtype=np.float64).reshape(-1),
            "last_price": panel.price[rows],
            **extra,
        }
    ).with_columns(pl.col("^sigma$").fill_nan(None))


class NeuralForecaster:
    """The attention LSTM (or its plain-LSTM ablation) behind the baselines' interface, warm-starting refits."""

    def __init__(
        self,
        name: str,
        model: ModelSettings,
        train: TrainSettings,
        lookback: int,
        warm_start: bool,
        fingerprint: str = "",
    ):
        self.name, self.model_settings, self.train_settings = name, model, train
        self.lookback, self.warm_start, self.fingerprint = lookback, warm_start, fingerprint
        self.trained: TrainedModel | None = None

    def fit(self, panel: Panel, splits: Splits) -> None:
        self.adopt(fit_many(self.jobs(panel, splits)))

    def jobs(self, panel: Panel, splits: Splits) -> list[FitJob]:
        """The fit of this fold, to train beside others' (`fit_many`); a warm start chains it to the last."""
        init = self.trained if self.warm_start else None
        ms, ts = self.model_settings, self.train_settings
        return [FitJob(panel, splits, ms, ts, self.lookback, self.fingerprint, init=init)]

    def adopt(self, trained: list[TrainedModel]) -> None:
        (self.trained,) = trained

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return predict(self.trained, panel, ends).mean

    def band(self, panel: Panel, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return quantile_band(self.trained, panel, ends)


class EnsembleForecaster(PointForecaster):
    """Members that differ only in their seed (weights, dropout and batch order), forecasts averaged: the seed
    noise of a network trained on returns this noisy is about as large as its signal."""

    def __init__(self, name: str, members: list[NeuralForecaster]):
        self.name, self.members = name, members

    @property
    def warm_start(self) -> bool:
        return any(m.warm_start for m in self.members)

    def fit(self, panel: Panel, splits: Splits) -> None:
        self.adopt(fit_many(self.jobs(panel, splits)))

    def jobs(self, panel: Panel, splits: Splits) -> list[FitJob]:
        return [job for m in self.members for job in m.jobs(panel, splits)]

    def adopt(self, trained: list[TrainedModel]) -> None:
        for member, model in zip(self.members, trained, strict=True):
            member.adopt([model])

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return np.mean([m.predict(panel, ends) for m in self.members], axis=0).astype(np.float32)


class FixedForecaster:
    """An already-trained model (the champion) behind the same interface: fitting it changes nothing."""

    def __init__(self, name: str, trained: TrainedModel):
        self.name, self.trained = name, trained

    def fit(self, panel: Panel, splits: Splits) -> None:
        pass

    def predict(self, panel: Panel, ends: np.ndarray) -> np.ndarray:
        return predict(self.trained, panel, ends).mean

    def band(self, panel: Panel, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return quantile_band(self.trained, panel, ends)


def quantile_band(trained: TrainedModel, panel: Panel, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Lowest and highest forecast quantiles (N, K) when the model has a quantile head."""
    q = predict(trained, panel, ends).quantiles
    return None if q is None else (q[..., 0], q[..., -1])


def make_forecasters(
    bt: BacktestSettings, model: ModelSettings, train: TrainSettings, lookback: int, fingerprint: str = ""
) -> list[Forecaster]:
    # one fit: show its epoch bar; many folds: the fold bar is enough
    quiet = train if bt.refit_every == 0 else train.model_copy(update={"progress": False})
    ablation = model.model_copy(update={"attention": False, "input_attention": False})
    heads = 4 if model.hidden_size % 4 == 0 else 1  # multi-head where the hidden size allows

    def variant(name: Model, **update) -> NeuralForecaster:
        arch = model.model_copy(update={"attention": True, **update})
        return NeuralForecaster(name, arch, quiet, lookback, bt.warm_start, fingerprint)

    factories = {
        Model.ATTENTION_LSTM: lambda: NeuralForecaster(
            Model.ATTENTION_LSTM,
            model.model_copy(update={"attention": True}),
            quiet,
            lookback,
            bt.warm_start,
            fingerprint,
        ),
        Model.LSTM: lambda: NeuralForecaster(Model.LSTM, ablation, quiet, lookback, bt.warm_start, fingerprint),
        Model.BIDIRECTIONAL: lambda: variant(Model.BIDIRECTIONAL, bidirectional=True),
        Model.SELF_ATTENTION: lambda: variant(Model.SELF_ATTENTION, self_attention=True, attention_heads=heads),
        Model.DEMEANED: lambda: RelativeForecaster(Model.DEMEANED, variant(Model.DEMEANED)),
        Model.ENSEMBLE: lambda: EnsembleForecaster(
            Model.ENSEMBLE,
            [
                NeuralForecaster(
                    Model.ENSEMBLE,
                    model.model_copy(update={"attention": True}),
                    quiet.model_copy(update={"seed": train.seed + k, "progress": False}),
                    lookback,
                    bt.warm_start,
                    fingerprint,
                )
                for k in range(bt.ensemble_seeds)
            ],
        ),
        Model.RANDOM_WALK: RandomWalk,
        Model.HIST_MEAN: HistoricalMean,
        Model.RIDGE: lambda: RidgeBaseline(bt.ridge_alpha, bt.ridge_alphas),
    }
    built: dict[str, Forecaster] = {}
    for name in sorted(bt.models, key=lambda m: m == Model.COMBINED):  # fit after the model it combines
        if name == Model.COMBINED:
            built[name] = Combination(Model.COMBINED, built[Model.ATTENTION_LSTM])
        else:
            built[name] = factories[name]()
    return list(built.values())


@dataclass
class BacktestResult:
    predictions: pl.DataFrame
    metrics: pl.DataFrame
    folds: pl.DataFrame
    forecasters: list[Forecaster]
    test_start: np.datetime64
    test_end: np.datetime64
    seconds: float
    # the predictions whole, written aside (`publish.set_aside`) while only some of their columns stay in memory
    predictions_file: Path | None = None


@dataclass(frozen=True)
class Fold:
    number: int
    refit: np.datetime64  # the fold's models know only labels realised before this date
    block: np.ndarray  # sample ends (rows) it forecasts from: its origins up to the next refit
    split: Splits  # train and validation ends of its fit


@dataclass(frozen=True)
class Schedule:
    """Which origins a walk-forward forecasts from, when it refits, and on which window it trains."""

    origins: np.ndarray  # forecast origin dates, ascending
    refits: np.ndarray  # the first origin of each fold
    lookback: int
    val_days: int
    rolling_days: int | None = None  # train on this many dates before the validation span (None: expanding)
    held_share: float = 0.0  # of the validation span, held out of early stopping (`splits_before`)

    @classmethod
    def from_settings(
        cls,
        panel: Panel,
        bt: BacktestSettings,
        lookback: int,
        val_days: int,
        test_days: int,
        *,
        held_share: float,
    ):
        """Origins from `bt.test_start` (default: the last `test_days` dates with known targets) to `bt.test_end`,
        a refit every `bt.refit_every` origins (0: one fit, at the start). `held_share`, of each fit's validation
        span held out of early stopping: `forecasting.settings.held_share` (no default: a caller that forgot it
        would train by another protocol than the nightly's without a word)."""
        grid = np.unique(panel.dates[known_ends(panel, lookback)])
        start = np.datetime64(bt.test_start, "D") if bt.test_start else grid[-min(test_days, grid.size)]
        end = np.datetime64(bt.test_end, "D") if bt.test_end else grid[-1]
        origins = grid[(grid >= start) & (grid <= end)]
        if origins.size == 0:
            raise InsufficientDataError(f"no forecast origin with known targets between {start} and {end}")
        refits = origins[:: bt.refit_every] if bt.refit_every else origins[:1]
        rolling = bt.rolling_days if bt.window == "rolling" else None
        return cls(origins, refits, lookback, val_days, rolling, held_share)

    def folds(self, panel: Panel) -> Iterator[Fold]:
        scored = scored_ends(panel, self.lookback)  # a ticker that ends early: its last origins, short horizons
        dates = panel.dates[scored]
        end = self.origins[-1]
        for k, refit in enumerate(self.refits):
            stop = self.refits[k + 1] if k + 1 < len(self.refits) else end + np.timedelta64(1, "D")
            block = scored[(dates >= refit) & (dates < stop) & (dates <= end)]
            split = splits_before(
                panel, self.lookback, refit, self.val_days, self.rolling_days, held_share=self.held_share
            )
            yield Fold(k, refit, block, split)


@dataclass(frozen=True)
class Intervals:
    """How prediction intervals are made: conformal on past out-of-sample residuals, the forecasters' own
    quantile bands, or none."""

    kind: Literal["conformal", "quantile", "none"]
    coverage: float
    window: int
    min_count: int  # the defaults live in BacktestSettings: build one with `from_settings`
    scale: Literal["ewma", "none"]
    vol_fast_weight: float  # the volatility forecast's blend (`volatility.blended_variance`)

    @classmethod
    def from_settings(cls, bt: BacktestSettings) -> Intervals:
        return cls(
            bt.interval, bt.coverage, bt.conformal_window, bt.conformal_min, bt.interval_scale, bt.vol_fast_weight
        )


def _fold_predictions(
    panel: Panel, fold: Fold, forecaster: Forecaster, intervals: Intervals, sigma: PanelSigma
) -> pl.DataFrame:
    frame = long_predictions(panel, fold.block, forecaster.predict(panel, fold.block), forecaster.name, sigma)
    if intervals.kind == "quantile" and (band := forecaster.band(panel, fold.block)) is not None:
        frame = frame.with_columns(
            pl.Series("y_lower", band[0].reshape(-1).astype(np.float64)),
            pl.Series("y_upper", band[1].reshape(-1).astype(np.float64)),
        )
    if np.isnan(panel.Y[fold.block]).any():  # an origin of a series that ends early: only the horizons it knows
        frame = frame.filter(pl.col("y_true").is_not_nan())
    return frame


Joint = NeuralForecaster | EnsembleForecaster  # forecasters whose fits train beside each other (fit_many)


def _fit_jointly(joint: list[Joint], panel: Panel, fold: Fold, ahead: dict[int, list[TrainedModel]]) -> None:
    """The fold's fits of every neural forecaster, trained at once on a GPU (`forecasting/together.py`),
    or taken from `ahead` where they were trained already; each forecaster adopts its own."""
    trained = ahead.pop(fold.number, None)
    if trained is None:
        trained = fit_many([job for f in joint for job in f.jobs(panel, fold.split)])
    for f in joint:
        n = len(f.members) if isinstance(f, EnsembleForecaster) else 1
        f.adopt(trained[:n])
        trained = trained[n:]
    assert not trained, "more fits than forecasters to adopt them"


def _cold_fits(joint: list[Joint], panel: Panel, schedule: Schedule) -> dict[int, list[TrainedModel]]:
    """With cold starts every fold's fits are independent: on a GPU train all of them at once, before the first
    fold is scored (a warm start chains each fold to the last: then only a fold's models train together).
    Per fold, its fits in `_fit_jointly`'s order; empty where there is nothing to gain (then no fold's splits
    are held beyond its turn)."""
    if not joint or any(f.warm_start for f in joint) or len(schedule.refits) < 2:
        return {}
    first = [job for f in joint for job in f.jobs(panel, next(schedule.folds(panel)).split)]
    if width(first, resolve_device(first[0].train_settings.device)) == 1:
        return {}  # one at a time either way: fit each fold in its turn
    folds = list(schedule.folds(panel))
    jobs = [[job for f in joint for job in f.jobs(panel, fold.split)] for fold in folds]
    trained = fit_many([job for fold_jobs in jobs for job in fold_jobs])
    out, start = {}, 0
    for fold, fold_jobs in zip(folds, jobs, strict=True):
        out[fold.number], start = trained[start : start + len(fold_jobs)], start + len(fold_jobs)
    return out


def _with_bands(frames: list[pl.DataFrame], intervals: Intervals) -> pl.DataFrame:
    """Every fold's predictions in one frame, sorted, with the conformal bands when `intervals` asks for them.
    `frames` is emptied: each model's frames are not held beside their concatenation (~0.17 GB at 500 x 25)."""
    trim_heap()  # the concatenation and the sort are built beside the frames, not on top of freed heap pages too
    predictions = _sorted_by_model(frames, drop=("y_lower", "y_upper") if intervals.kind == "conformal" else ())
    if intervals.kind != "conformal":
        return predictions
    scaled = intervals.scale == "ewma"
    predictions = conformal_intervals(predictions, intervals.coverage, intervals.window, intervals.min_count, scaled)
    if scaled:
        predictions = conformal_quantiles(predictions, QUANTILE_LEVELS, intervals.window, intervals.min_count)
    release()  # the bands' per-group temporaries go before the metrics build on top of them
    return predictions


def _sorted_by_model(frames: list[pl.DataFrame], drop: Sequence[str] = ()) -> pl.DataFrame:
    """`frames` concatenated (columns in their order of appearance) less the columns `drop`, sorted by model,
    ticker, asof_date and horizon; `frames` is emptied.

    Sorted a column at a time: the concatenation shares the frames' buffers, the rows' order is found once from
    the keys, and each column is gathered into it as the unsorted one is let go. A frame's `sort` gathered every
    column beside the whole concatenation (~0.45 GiB at once at 500 tickers x 25 years, the peak of the nightly's
    evaluation); gathered into one contiguous buffer each, the columns stay as one chunk, as the sort's did."""
    whole = pl.concat(frames, how="diagonal_relaxed")
    frames.clear()
    whole = whole.drop(drop, strict=False)
    order = whole.select(pl.arg_sort_by("model", "ticker", "asof_date", "horizon")).to_series()
    columns = {}
    for name in whole.columns:
        columns[name] = whole.drop_in_place(name).gather(order)
    return pl.DataFrame(columns)


def walk_forward(
    panel: Panel,
    forecasters: list[Forecaster],
    schedule: Schedule,
    intervals: Intervals,
    progress: bool = True,
) -> BacktestResult:
    """Every forecaster refit at each of `schedule`'s folds and scored on the fold's origins, all on identical
    origins; every out-of-sample prediction kept and scored."""
    started = time.perf_counter()
    frames, folds = [], []
    sigma = PanelSigma(panel, intervals.vol_fast_weight)  # each origin's volatility: beside it, scales its band
    # off a terminal each fold logs its own line (below): the bar only
    with Steps("backtest", len(schedule.refits), "fold {completed}/{total}", None, progress) as bar:
        joint = [f for f in forecasters if isinstance(f, Joint)]
        t0 = time.perf_counter()
        ahead = _cold_fits(joint, panel, schedule)
        up_front = time.perf_counter() - t0  # with cold starts on a GPU: every fold's fits, counted in the first
        for fold in schedule.folds(panel):
            row = {
                "fold": fold.number,
                "refit_date": fold.refit.astype(object),
                "train": len(fold.split.train),
                "val": len(fold.split.val),
                "held": len(fold.split.held),
                "origins": len(np.unique(panel.dates[fold.block])),
                "predictions": len(fold.block),
            }
            t0 = time.perf_counter()
            _fit_jointly(joint, panel, fold, ahead)
            row["neural_fit_s"] = round(time.perf_counter() - t0 + up_front, 2)  # the fold's neural fits, together
            up_front = 0.0
            for f in forecasters:
                t0 = time.perf_counter()
                if f not in joint:
                    f.fit(panel, fold.split)
                frames.append(_fold_predictions(panel, fold, f, intervals, sigma))
                row[f"{f.name}_s"] = round(time.perf_counter() - t0, 2)  # a neural model's: its forecasts only
                if isinstance(f, NeuralForecaster):
                    row[f"{f.name}_epochs"] = len(f.trained.history)
            folds.append(row)
            held = f" ({row['held']} more held for the combination's weights)" if row["held"] else ""
            log.info(
                "fold %d/%d refit %s: %d train / %d val samples%s, %d origins",
                fold.number + 1,
                len(schedule.refits),
                fold.refit,
                row["train"],
                row["val"],
                held,
                row["origins"],
            )
            bar.advance()
    del sigma  # not held beside the predictions' concatenation and bands
    predictions = _with_bands(frames, intervals)
    return BacktestResult(
        predictions,
        metrics_table(predictions),
        pl.DataFrame(folds),
        forecasters,
        schedule.origins[0],
        schedule.origins[-1],
        time.perf_counter() - started,
    )
