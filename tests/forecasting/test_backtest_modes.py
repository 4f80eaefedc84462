"""The walk-forward's modes: a rolling training window, and intervals from the quantile head or none at all."""

from datetime import date

import numpy as np
import polars as pl
import pytest

from features.build import build_features
from features.denoise import denoise
from features.settings import DenoiseSettings, FeatureSettings
from features.windows import Panel, known_ends, make_panel
from forecasting.backtest import Intervals, Schedule, make_forecasters, walk_forward
from forecasting.baselines import HistoricalMean
from forecasting.settings import BacktestSettings, ModelSettings, PublishSettings, TrainSettings, held_share
from tests.conftest import synthetic_prices

MODEL = ModelSettings(hidden_size=4, attention_size=4, dropout=0.0)
TRAIN = TrainSettings(epochs=1, batch_size=64, progress=False, threads=1, seed=5)
FEATURES = FeatureSettings(horizons=[1, 3])
LOOKBACK, VAL_DAYS = 10, 40


@pytest.fixture(scope="module")
def panel() -> Panel:
    prices = synthetic_prices(["AAA", "BBB"], 420, seed=13)
    return make_panel(build_features(denoise(prices, DenoiseSettings()), FEATURES), FEATURES.max_horizon)


def backtest(panel: Panel, bt: BacktestSettings, forecasters=None, model: ModelSettings = MODEL):
    """The one call of `walk_forward` in this file (its signature is the backtest module's business)."""
    schedule = Schedule.from_settings(
        panel,
        bt,
        lookback=LOOKBACK,
        val_days=VAL_DAYS,
        test_days=60,
        held_share=held_share(bt.models, PublishSettings()),
    )
    forecasters = forecasters or make_forecasters(bt, model, TRAIN, lookback=LOOKBACK)
    return walk_forward(panel, forecasters, schedule, Intervals.from_settings(bt), progress=False)


class RecordingMean(HistoricalMean):
    """The historical mean, remembering the split of every fit."""

    def __init__(self):
        self.splits = []

    def fit(self, panel, splits):
        self.splits.append(splits)
        super().fit(panel, splits)


def settings(**overrides) -> BacktestSettings:
    return BacktestSettings(
        test_start=date(2011, 3, 1), test_end=date(2011, 4, 29), refit_every=20, conformal_min=5, **overrides
    )


def test_a_rolling_window_trains_on_exactly_rolling_days_dates(panel):
    rolling, expanding = RecordingMean(), RecordingMean()
    rolled = backtest(panel, settings(window="rolling", rolling_days=60, models=["hist_mean"]), [rolling])
    backtest(panel, settings(models=["hist_mean"]), [expanding])
    grid = np.unique(panel.dates[known_ends(panel, LOOKBACK)])
    assert len(rolling.splits) == len(expanding.splits) == 3
    starts = []
    for split, wide in zip(rolling.splits, expanding.splits, strict=True):
        first = panel.dates[split.train].min()
        starts.append(first)
        # the window: the 60 dates before the validation span (the last few only purged of unrealised labels)
        assert ((grid >= first) & (grid < split.val_start)).sum() == 60
        assert panel.dates[split.train].max() < split.val_start and split.train_start == first
        assert np.array_equal(split.val, wide.val)  # validation is the same span either way
        assert set(split.train) < set(wide.train)  # a strict part of the expanding window's samples
    assert all(np.diff(np.array(starts)) > np.timedelta64(0, "D"))  # it rolls forward with every refit
    assert len({panel.dates[w.train].min() for w in expanding.splits}) == 1  # the expanding one never moves
    # the forecasts are what the window says: each ticker's mean label over that fold's train and validation
    fold = rolling.splits[-1]
    seen = np.concatenate([fold.train, fold.val])
    aaa = seen[panel.ticker_id[seen] == 0]
    last = rolled.predictions.filter(
        (pl.col("ticker") == "AAA") & (pl.col("asof_date") == pl.col("asof_date").max()) & (pl.col("horizon") == 3)
    )
    assert last["y_pred"].item() == pytest.approx(float(panel.Y[aaa, 1].mean()), rel=1e-5)
    assert rolled.folds["train"].to_list() == [len(s.train) for s in rolling.splits]


def test_quantile_intervals_are_the_model_band_and_none_gives_none(panel):
    from forecasting.train import predict

    q_model = MODEL.model_copy(update={"quantiles": [0.1, 0.5, 0.9]})
    models = ["attention_lstm", "random_walk"]
    result = backtest(panel, settings(interval="quantile", models=models), model=q_model)
    quantile = result.predictions
    neural = quantile.filter(pl.col("model") == "attention_lstm")
    lower, upper, mid = (neural[c].to_numpy() for c in ("y_lower", "y_upper", "y_pred"))
    assert np.isfinite(lower).all() and (lower < mid).all() and (mid < upper).all()
    # exactly the trained head's outer quantiles (0.1 and 0.9): the last fold, predicted again by its fit
    last_refit = result.folds["refit_date"].to_list()[-1]
    block = known_ends(panel, LOOKBACK)
    block = block[
        (panel.dates[block] >= np.datetime64(last_refit)) & (panel.dates[block] <= np.datetime64("2011-04-29"))
    ]
    band = predict(result.forecasters[0].trained, panel, block).quantiles  # (N, K, Q)
    order = np.lexsort((panel.ticker_id[block], panel.dates[block]))  # the frame's row order below
    tail = neural.filter(pl.col("asof_date") >= last_refit).sort("asof_date", "ticker", "horizon")
    np.testing.assert_allclose(tail["y_lower"].to_numpy(), band[order, :, 0].reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(tail["y_upper"].to_numpy(), band[order, :, -1].reshape(-1), rtol=1e-6)
    # a baseline has no quantile head: no interval rather than a made-up one, and no coverage scored for it
    assert quantile.filter(pl.col("model") == "random_walk")["y_lower"].null_count() == neural.height
    pooled = result.metrics.filter((pl.col("scope") == "pooled") & (pl.col("horizon") == 1)).sort("model")
    h1 = neural.filter(pl.col("horizon") == 1)
    inside = ((h1["y_true"] >= h1["y_lower"]) & (h1["y_true"] <= h1["y_upper"])).mean()
    assert pooled["coverage"].to_list() == [pytest.approx(inside), None]  # attention_lstm, random_walk

    none = backtest(panel, settings(interval="none", models=models), model=q_model)
    assert "y_lower" not in none.predictions.columns and "coverage" not in none.metrics.columns
    assert none.predictions["y_pred"].to_list() == quantile["y_pred"].to_list()  # the forecasts are the same
