import dataclasses
from datetime import date

import numpy as np
import polars as pl
import pytest

from features.build import build_features
from features.denoise import denoise
from features.settings import DenoiseSettings, FeatureSettings
from features.windows import Panel, known_ends, make_panel, splits_before
from forecasting.backtest import Intervals, Schedule, make_forecasters, walk_forward
from forecasting.baselines import HistoricalMean, RandomWalk, RidgeBaseline
from forecasting.conformal import conformal_intervals
from forecasting.settings import BacktestSettings, ModelSettings, PublishSettings, TrainSettings, held_share
from tests.conftest import synthetic_prices

MODEL = ModelSettings(hidden_size=8, attention_size=4, dropout=0.0)
TRAIN = TrainSettings(epochs=2, batch_size=64, progress=False, threads=1, seed=5)
FEATURES = FeatureSettings(horizons=[1, 3])
PRICES = synthetic_prices(["AAA", "BBB"], 420, seed=13)


def panel_of(prices: pl.DataFrame) -> Panel:
    return make_panel(build_features(denoise(prices, DenoiseSettings()), FEATURES), FEATURES.max_horizon)


def run(panel: Panel, **overrides):
    bt = BacktestSettings(test_start=date(2011, 3, 1), refit_every=20, conformal_min=5, **overrides)
    schedule = Schedule.from_settings(
        panel, bt, lookback=10, val_days=40, test_days=60, held_share=held_share(bt.models, PublishSettings())
    )
    forecasters = make_forecasters(bt, MODEL, TRAIN, lookback=10)
    return walk_forward(panel, forecasters, schedule, Intervals.from_settings(bt), progress=False)


@pytest.fixture(scope="module")
def full():
    return run(panel_of(PRICES), test_end=date(2011, 5, 20))


def test_every_model_forecasts_from_identical_origins(full):
    p = full.predictions
    keys = {m: set(g.select("ticker", "asof_date", "horizon").iter_rows()) for (m,), g in p.group_by("model")}
    assert set(keys) == {"attention_lstm", "combined", "lstm", "random_walk", "hist_mean", "ridge"}
    assert len({frozenset(v) for v in keys.values()}) == 1
    assert p["asof_date"].min() >= date(2011, 3, 1) and p["asof_date"].max() <= date(2011, 5, 20)
    assert (p["target_date"] > p["asof_date"]).all()
    assert full.folds["refit_date"].to_list()[0] == date(2011, 3, 1)
    assert full.folds.height == int(np.ceil(full.folds["origins"].sum() / 20))
    assert set(full.predictions.columns) >= {
        "model",
        "ticker",
        "asof_date",
        "horizon",
        "target_date",
        "y_true",
        "y_pred",
        "y_lower",
        "y_upper",
    }


def test_no_origin_sees_data_after_it():
    """Predictions (and intervals) at origins up to D are identical whether or not data after D exists."""
    cutoff = date(2011, 5, 20)
    with_future = run(panel_of(PRICES), test_end=cutoff).predictions
    without = run(panel_of(PRICES.filter(pl.col("date") <= cutoff)), test_end=cutoff).predictions
    assert without.height > 0
    key = ["model", "ticker", "asof_date", "horizon"]
    joined = without.join(with_future, on=key, how="left", suffix="_f")
    assert joined["y_pred_f"].null_count() == 0
    for col in ("y_pred", "y_true", "y_lower", "y_upper"):
        a, b = joined[col].to_numpy(), joined[f"{col}_f"].to_numpy()
        assert np.array_equal(a, b, equal_nan=True), col


def test_a_series_that_ends_early_is_scored_to_its_end_at_the_horizons_it_knows():
    """Survivorship: an origin needed every horizon's target known, so a ticker that delists was not scored at
    h=1 on its last days (its h=3 target lay past its end): a selection made on its future."""
    ended = date(2011, 4, 15)
    prices = PRICES.filter((pl.col("ticker") == "AAA") | (pl.col("date") <= ended))
    p = run(panel_of(prices), test_end=date(2011, 5, 20), models=["random_walk", "hist_mean"]).predictions
    assert p["y_true"].is_nan().sum() == 0 and p["y_true"].null_count() == 0  # only what is realised is scored
    last = dict(
        p.filter((pl.col("ticker") == "BBB") & (pl.col("model") == "random_walk"))
        .group_by("horizon")
        .agg(pl.col("asof_date").max(), pl.col("target_date").max())
        .select("horizon", pl.struct("asof_date", "target_date"))
        .iter_rows()
    )
    days = prices.filter(pl.col("ticker") == "BBB")["date"].sort()
    assert last[1] == {"asof_date": days[-2], "target_date": ended}  # h=1 to the end: the day before its last
    assert last[3] == {"asof_date": days[-4], "target_date": ended}
    aaa = p.filter((pl.col("ticker") == "AAA") & (pl.col("model") == "random_walk"))
    assert aaa.group_by("horizon").len().sort("horizon")["len"].n_unique() == 1  # a full series: every horizon


def test_warm_start_changes_later_folds_only():
    panel = panel_of(PRICES)
    warm = run(panel, test_end=date(2011, 5, 20), models=["attention_lstm"]).predictions
    cold = run(panel, test_end=date(2011, 5, 20), models=["attention_lstm"], warm_start=False).predictions
    first = pl.col("asof_date") < date(2011, 3, 29)  # the first fold: both start from the seed
    assert warm.filter(first)["y_pred"].to_list() == cold.filter(first)["y_pred"].to_list()
    assert warm.filter(~first)["y_pred"].to_list() != cold.filter(~first)["y_pred"].to_list()


def test_conformal_intervals_use_only_realised_residuals():
    days = [date(2020, 1, d) for d in range(1, 11)]
    rows = [
        {
            "model": "m",
            "ticker": "A",
            "asof_date": d,
            "horizon": 1,
            "target_date": date(2020, 1, d.day + 1),
            "y_true": float(d.day),
            "y_pred": 0.0,
        }
        for d in days
    ]
    out = conformal_intervals(pl.DataFrame(rows), coverage=1.0, window=100, min_count=2).sort("asof_date")
    # at origin day k the realised residuals are those with target day <= k: |y| of days 1..k-1
    assert out["y_upper"].to_list()[:3] == [None, None, 2.0]
    assert out["y_upper"].to_list()[9] == 9.0


def test_ridge_recovers_an_ar1_coefficient():
    rng = np.random.default_rng(4)
    n, phi = 3000, 0.5
    r = np.zeros(n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + rng.normal(0, 0.01)
    X = r[:-1, None].astype(np.float32)  # feature at t: today's return
    Y = r[1:, None].astype(np.float32)  # target at t: tomorrow's return
    dates = np.datetime64("2000-01-03") + np.arange(n - 1).astype("timedelta64[D]")
    panel = Panel(
        X,
        Y,
        dates,
        np.ones(n - 1),
        dates + 1,
        np.zeros(n - 1, np.int32),
        np.array([0, n - 1]),
        ["AR"],
        ["ret_1"],
        [1],
    )
    split = splits_before(panel, 1, dates[-1], val_days=200)
    ridge = RidgeBaseline(alpha=1.0)
    ridge.fit(panel, split)
    assert ridge.raw_coefficients()[0, 0] == pytest.approx(phi, abs=0.05)


def test_historical_mean_and_random_walk_by_hand():
    panel = panel_of(PRICES)
    split = splits_before(panel, 10, np.datetime64("2011-03-01"), val_days=40)
    hm = HistoricalMean()
    hm.fit(panel, split)
    seen = np.concatenate([split.train, split.val])
    aaa = seen[panel.ticker_id[seen] == 0]
    ends = known_ends(panel, 10)[-2:]
    expected = panel.Y[aaa].mean(axis=0)
    np.testing.assert_allclose(hm.predict(panel, aaa[:1]), expected[None, :], rtol=1e-5)
    assert not RandomWalk().predict(panel, ends).any()
    # every ticker's float64 sum in row order, as np.add.at makes it: the very same means
    sums, counts = np.zeros((len(panel.tickers), len(panel.horizons))), np.zeros(len(panel.tickers))
    np.add.at(sums, panel.ticker_id[seen], panel.Y[seen])
    np.add.at(counts, panel.ticker_id[seen], 1)
    np.testing.assert_array_equal(hm.means, sums / counts[:, None])
    # a ticker with no realised label: the pooled mean
    first = seen[panel.ticker_id[seen] != 0]
    hm.fit(panel, dataclasses.replace(split, train=first, val=np.array([], dtype=np.int64)))
    np.testing.assert_array_equal(hm.means[0], panel.Y[first].mean(axis=0))


def test_predictions_sorted_a_column_at_a_time_are_the_whole_concatenation_sorted():
    """Gathered a column at a time into the sorted order (one column's copy at a time, not every column twice):
    the same rows, columns, types and order as concatenating every frame and sorting, whatever order the folds
    came in, with a model's band columns missing elsewhere, a float32 column beside float64 ones and an empty
    frame; each column one chunk, as after a sort."""
    from forecasting.backtest import _sorted_by_model

    rng = np.random.default_rng(0)

    def frame(model: str, tickers: list[str], day: int, band: bool, f32: bool = False) -> pl.DataFrame:
        rows = [(t, date(2020, 1, day + d), h) for t in tickers for d in range(3) for h in (1, 5)]
        out = pl.DataFrame(rows, schema=["ticker", "asof_date", "horizon"], orient="row").with_columns(
            model=pl.lit(model), y_pred=pl.Series(rng.normal(size=len(rows)), dtype=pl.Float32 if f32 else pl.Float64)
        )
        return out.with_columns(y_lower=pl.col("y_pred") - 1.0) if band else out

    frames = [
        frame("ridge", ["BBB", "AAA"], 10, band=False),
        frame("attention_lstm", ["BBB", "AAA"], 10, band=True, f32=True),
        frame("ridge", ["AAA", "BBB"], 1, band=False),
        frame("attention_lstm", ["AAA", "BBB"], 1, band=True),
        frame("hist_mean", ["AAA"], 1, band=False).head(0),
    ]
    expected = pl.concat(frames, how="diagonal_relaxed").sort("model", "ticker", "asof_date", "horizon")
    got = _sorted_by_model(list(frames))
    assert got.equals(expected) and got.schema == expected.schema
    assert {got[c].n_chunks() for c in got.columns} == {1}
    dropped = _sorted_by_model(list(frames), drop=("y_lower",))
    assert dropped.equals(expected.drop("y_lower"))
    held = list(frames)
    _sorted_by_model(held)
    assert held == []  # emptied: the caller holds no frame beside the result
