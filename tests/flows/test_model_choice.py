"""Champion and challenger: the recipe a kept champion is refit with, the hashes that decide a retrain, and
every decision path of `choose_model`."""

import shutil
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
import pytest
import torch

from flows.model_choice import _recipe_of, config_hashes
from flows.settings import load_settings
from forecasting.settings import training_recipe
from forecasting.train import TrainedModel
from tests.conftest import synthetic_prices


def test_a_kept_champion_is_refit_with_its_own_recipe():
    today = load_settings(None, environ={"NIGHTCAST_TRAIN__LEARNING_RATE": "0.01", "NIGHTCAST_TRAIN__THREADS": "1"})
    then = load_settings(None, environ={"NIGHTCAST_MODEL__HIDDEN_SIZE": "32", "NIGHTCAST_TRAIN__EPOCHS": "9"})
    evaluated = TrainedModel(
        None, None, None, [], [], 40, "", {"model": then.model.model_dump(), "train": then.train.model_dump()}
    )
    model, training = _recipe_of(evaluated, today)
    assert model == then.model and model.hidden_size == 32
    assert all(getattr(training, k) == getattr(then.train, k) for k in training_recipe(then.train))  # lr 1e-3, 9 epochs
    assert training.threads == 1  # how to run it is today's business


def test_recipe_and_input_hashes():
    base = load_settings(None, environ={})
    lr = load_settings(None, environ={"NIGHTCAST_TRAIN__LEARNING_RATE": "0.01"})
    threads = load_settings(None, environ={"NIGHTCAST_TRAIN__THREADS": "1"})
    rsi = load_settings(None, environ={"NIGHTCAST_FEATURES__RSI_WINDOW": "10"})
    assert config_hashes(threads) == config_hashes(base)  # runtime settings define nothing
    assert config_hashes(lr)[0] != config_hashes(base)[0] and config_hashes(lr)[1] == config_hashes(base)[1]
    assert config_hashes(rsi)[1] != config_hashes(base)[1]  # other inputs: models cannot score each other's data


# The champion decision paths of `choose_model`, each on a tiny synthetic panel (two tickers, a 4-unit model,
# one epoch): what the nightly and train flow tests used to prove with whole flow runs, seconds each.

SMALL = {
    "features": {"horizons": [1, 2]},
    "windows": {"lookback": 10, "test_days": 30, "val_days": 30},
    "model": {"hidden_size": 4, "attention_size": 4},
    # one thread: float sums differ with the thread count, and a tie between identical recipes must be exact
    "train": {"epochs": 1, "batch_size": 128, "progress": False, "threads": 1},
}
TODAY = date(2011, 5, 1)


def small_settings(tmp_path, **sections):
    overrides = {**SMALL, "paths": {"data_dir": tmp_path / "data", "out_dir": tmp_path / "out"}}
    for key, value in sections.items():
        overrides[key] = {**overrides.get(key, {}), **value}
    return load_settings(None, environ={}, overrides=overrides)


@dataclass
class Case:
    prices: pl.DataFrame
    ff: object
    panel: object
    fingerprint: str
    asof: date


def case_of(prices: pl.DataFrame, settings) -> Case:
    from features.prices import lake
    from flows.tasks import make_features

    ff, panel = make_features.fn(prices, settings, "unused")
    return Case(prices, ff, panel, lake.fingerprint(prices), prices["date"].max())


def choose(case: Case, settings, today=TODAY, force=False):
    from flows.model_choice import choose_model

    return choose_model(case.panel, case.prices, {}, settings, today, case.asof, case.fingerprint, force=force)


def history(settings) -> list[str]:
    from forecasting.registry import read_history

    return [c.event for c in read_history(settings.paths.models)]


@pytest.fixture(scope="module")
def first(prefect_harness, tmp_path_factory):
    """The first decision on an empty models directory: (settings, case, choice); later tests copy its files."""
    root = tmp_path_factory.mktemp("first")
    settings = small_settings(root)
    case = case_of(synthetic_prices(["AAA", "BBB"], 330, seed=4), settings)
    return settings, case, choose(case, settings)


def from_first(first, tmp_path, **sections):
    """Settings over a copy of the first decision's models directory (each test mends its own copy)."""
    settings, case, _ = first
    mine = small_settings(tmp_path, **sections)
    shutil.copytree(settings.paths.models, mine.paths.models)
    return mine, case


def test_a_first_challenger_is_promoted(first):
    settings, _, choice = first
    assert choice.retrained and choice.verdict.promote and choice.verdict.champion_score is None
    assert "promoted: no champion to compare with" in choice.decision and "no champion model yet" in choice.decision
    assert history(settings) == ["promoted"]
    assert (settings.paths.models / f"{choice.version}.pt").exists()
    assert (settings.paths.models / f"{choice.evaluation_version}.pt").exists()


def test_a_fresh_champion_is_kept_without_training(first, tmp_path):
    settings, case = from_first(first, tmp_path)
    choice = choose(case, settings)
    assert choice.decision == f"kept champion {first[2].version}: still fresh" and not choice.retrained
    assert choice.version == first[2].version and history(settings) == ["promoted"]  # nothing recorded


def test_an_equal_challenger_keeps_the_champion(first, tmp_path):
    settings, case = from_first(first, tmp_path)
    choice = choose(case, settings, force=True)  # same data, recipe and seed: the challenger ties
    assert not choice.verdict.promote and "does not beat the champion" in choice.decision
    assert choice.verdict.champion_score == choice.verdict.challenger_score
    assert choice.verdict.n_forecasts == 2 * 30 * 2  # tickers x evaluation origins x horizons, out of sample for both
    assert choice.version == first[2].version  # the champion's recipe refit on the same data: the same weights
    assert history(settings) == ["promoted", "kept"]


def test_a_better_challenger_is_promoted(first, tmp_path):
    from forecasting import registry, train

    settings, case = from_first(first, tmp_path)
    champion = registry.read_history(settings.paths.models)[-1]
    path = settings.paths.models / champion.evaluation_checkpoint
    worse = train.load_checkpoint(path, "cpu")
    with torch.no_grad():
        worse.model.head[-1].bias += 5.0  # every forecast five target deviations off: far worse than the recipe
    train.save_checkpoint(worse, path)
    choice = choose(case, settings, force=True)
    assert choice.verdict.promote and "beats the champion" in choice.decision
    assert choice.verdict.challenger_score < 2 < 10 < choice.verdict.champion_score  # ~1.06 against ~40
    assert history(settings) == ["promoted", "promoted"]


def test_a_champion_reading_other_features_is_not_reused(first, tmp_path):
    settings, case = from_first(first, tmp_path, windows={"lookback": 12})  # another input window
    choice = choose(case, settings)
    assert "the settings that define the model changed" in choice.decision
    assert "reads other features" in choice.decision and choice.verdict.n_forecasts == 0  # never scored on them
    assert choice.evaluation_model.lookback == 12 and history(settings) == ["promoted", "promoted"]


def jumped(prices: pl.DataFrame) -> pl.DataFrame:
    last = prices["date"].max()
    return prices.with_columns(
        pl.when((pl.col("ticker") == "BBB") & (pl.col("date") == last))
        .then(pl.col("adj_close") * 3)
        .otherwise(pl.col("adj_close"))
        .alias("adj_close")
    )


def test_the_health_gate_blocks_retraining_not_publishing(first, tmp_path):
    from nightcast.errors import InsufficientDataError

    settings, case = from_first(first, tmp_path)
    unhealthy = Case(jumped(case.prices), case.ff, case.panel, case.fingerprint, case.asof)
    choice = choose(unhealthy, settings, force=True)
    assert choice.decision == (
        f"kept champion {first[2].version}: stale (a retrain was requested) but training is blocked by the "
        "data-health gate"
    )
    assert not choice.retrained and any("BBB: implausible move" in p for p in choice.health)
    assert choice.version == first[2].version and history(settings) == ["promoted"]
    # nothing to fall back on: no champion yet, or one that reads other features
    for empty in (small_settings(tmp_path / "empty"), small_settings(tmp_path, windows={"lookback": 12})):
        with pytest.raises(InsufficientDataError, match="no model to publish: .* the data-health gate blocked"):
            choose(unhealthy, empty)


def test_the_guardrail_publishes_baselines_where_told(first):
    """The forecast step publishes what the policy chose per horizon: here the random walk at h=1 and the
    historical mean at h=2 (fit on every realised label), the model nowhere."""
    from features.windows import known_ends, refit_split
    from flows.nightly_tasks import forecast
    from forecasting.baselines import HistoricalMean
    from forecasting.policy import Source

    settings, case, choice = first
    sources = {1: Source("random_walk", False, True), 2: Source("hist_mean", False, True)}
    got = forecast.fn(choice, case.panel, case.ff, settings, sources, {}).sort("ticker", "horizon")
    assert got["source_model"].to_list() == ["random_walk", "hist_mean"] * 2 and not got["skill"].any()
    rw = got.filter(pl.col("horizon") == 1)
    assert (rw["pred_log_return"] == 0).all() and (rw["pred_price"] == rw["last_price"]).all()
    hm = HistoricalMean()
    hm.fit(case.panel, refit_split(case.panel, 10, np.datetime64(case.asof, "D")))
    last_rows = known_ends(case.panel, 10)  # any row of a ticker predicts its mean: take each ticker's last
    per_ticker = {case.panel.tickers[case.panel.ticker_id[r]]: r for r in last_rows}
    expected = [float(hm.predict(case.panel, np.array([per_ticker[t]]))[0, 1]) for t in ("AAA", "BBB")]
    assert got.filter(pl.col("horizon") == 2)["pred_log_return"].to_list() == pytest.approx(expected, rel=1e-6)
