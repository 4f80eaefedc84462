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
    assert "the settings that define the model differ from the champion's" in choice.decision
    assert "reads other features" in choice.decision and choice.verdict.n_forecasts == 0  # never scored on them
    assert choice.evaluation_model.lookback == 12 and history(settings) == ["promoted", "promoted"]


def test_a_champion_whose_features_the_data_lacks_is_retrained(first, tmp_path):
    """Same settings, other columns: a close-only source builds no bar features. The champion cannot read
    this data; it is retrained (it used to stop every run with the predict's error on the feature lists)."""
    settings, case = from_first(first, tmp_path)
    close_only = case.prices.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in ("open", "high", "low"))
    close_only = close_only.with_columns(pl.lit(None, dtype=close_only["volume"].dtype).alias("volume"))
    narrow = case_of(close_only, settings)
    assert "hl_range" in case.panel.features and "hl_range" not in narrow.panel.features
    choice = choose(narrow, settings)
    assert choice.retrained and choice.verdict.promote and "reads other features" in choice.decision
    assert "the data lacks hl_range" in choice.decision and "close-only" in choice.decision
    assert choice.evaluation_model.features == list(narrow.panel.features)
    assert history(settings) == ["promoted", "promoted"]


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
    assert any(p.endswith("(health.max_jump = 0.4)") for p in choice.health)  # what decides it, to change it
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


# What publishes (publish.forecast): by default the network combined with the historical mean and the random
# walk, by weights its evaluation fit's validation span chose; `first` was decided under that default.


def champion_record(settings) -> tuple:
    """The champion.json body and its path, to mend a copy's last record."""
    import json

    path = settings.paths.models / "champion.json"
    return json.loads(path.read_text()), path


def test_the_combination_weights_come_from_the_evaluation_fits_validation_span_only(first):
    """Perturbing every label not realised before the evaluation span (what it is scored on) changes no
    weight; perturbing the validation span's held labels (`publish.combination_holdout`, the span the network
    did not early-stop on) does: the weights are fit there and nowhere else."""
    from features.windows import Panel, splits_before
    from flows.model_choice import evaluation_settings
    from flows.tasks import run_backtest
    from forecasting.combine import Publishing
    from forecasting.registry import read_history

    settings, case, choice = first
    weights = np.array(choice.publishing.weights)
    assert choice.publishing.name == "combined" and weights.shape == (2, 2)
    assert (weights >= 0).all() and (weights.sum(axis=1) <= 1 + 1e-12).all()
    assert read_history(settings.paths.models)[-1].combination == weights.tolist()  # stored with the champion
    assert sorted(choice.evaluation.predictions["model"].unique()) == [
        "attention_lstm",
        "combined",
        "hist_mean",
        "random_walk",
        "ridge",
    ]
    panel, start = case.panel, choice.evaluation.test_start

    def perturbed(rows: np.ndarray, labels: np.ndarray) -> Panel:
        return Panel(**{**panel.__dict__, "Y": np.where(rows[:, None], labels, panel.Y)})

    def weights_on(p: Panel) -> Publishing:
        return Publishing.from_evaluation(run_backtest.fn(p, settings, evaluation_settings(settings), "").forecasters)

    # labels of zero make the random walk's zero forecast the best: weights fit on them would both be 0
    zeros = np.zeros_like(panel.Y)
    assert weights_on(perturbed(panel.target_end >= start, zeros)) == choice.publishing  # not realised before
    held = np.zeros(len(panel.dates), dtype=bool)
    held[splits_before(panel, 10, start, 30, held_share=settings.publish.combination_holdout).held] = True
    assert settings.publish.combination_holdout == 0.5 and held.sum() > 0  # lookback 10, val_days 30: 15 dates
    assert weights_on(perturbed(held, zeros)).weights == ((0.0, 0.0), (0.0, 0.0))


def test_the_published_forecast_is_the_refit_combined_with_the_refits_historical_mean(first):
    """a * refit + b * hist_mean (fit on the refit's split) per horizon, exactly; quantiles around it."""
    from features.windows import refit_split
    from flows.nightly_tasks import forecast
    from forecasting import train
    from forecasting.baselines import HistoricalMean
    from forecasting.policy import Source
    from forecasting.publish import QUANTILE_COLUMNS, current_rows

    settings, case, choice = first
    sources = {1: Source("combined", False, False), 2: Source("combined", False, False)}
    got = forecast.fn(choice, case.panel, case.ff, settings, sources, {}).sort("ticker", "horizon")
    # labelled by what published: a horizon whose weights give the network none is its baseline's
    assert got["source_model"].to_list() == choice.publishing.labels(["combined", "combined"]) * 2
    rows = current_rows(case.panel)[1]
    mean = HistoricalMean()
    mean.fit(case.panel, refit_split(case.panel, 10, np.datetime64(case.asof, "D")))
    w = np.array(choice.publishing.weights)
    network = train.predict(choice.published, case.panel, rows).mean.astype(np.float64)
    expected = w[:, 0] * network + w[:, 1] * mean.predict(case.panel, rows).astype(np.float64)
    assert got["pred_log_return"].to_list() == expected.reshape(-1).tolist()
    # the quantiles, as prices: increasing, the median the point forecast (symmetric), the 10% and 90% the
    # bounds of the 80% interval (both from the combination's own out-of-sample residuals)
    q = got.select(QUANTILE_COLUMNS).to_numpy()
    assert np.isfinite(q).all() and (np.diff(q, axis=1) > 0).all()
    assert got["pred_q50"].to_list() == pytest.approx(got["pred_price"].to_list(), rel=1e-12)
    assert got["pred_q10"].to_list() == pytest.approx(got["pred_lower"].to_list(), rel=1e-9)
    assert got["pred_q90"].to_list() == pytest.approx(got["pred_upper"].to_list(), rel=1e-9)


def test_a_kept_champion_combines_by_its_stored_weights(first, tmp_path):
    """The weights in the champion record are the ones used: the evaluation's combined forecasts are
    a * network + b * hist_mean by them, and so is the forecast."""
    import json

    settings, case = from_first(first, tmp_path)
    body, path = champion_record(settings)
    body["history"][-1]["combination"] = [[0.5, 0.25], [0.125, 0.75]]
    path.write_text(json.dumps(body))
    choice = choose(case, settings)
    assert not choice.retrained and choice.publishing.weights == ((0.5, 0.25), (0.125, 0.75))
    p = choice.evaluation.predictions.sort("ticker", "asof_date", "horizon")
    part = {m: p.filter(pl.col("model") == m) for m in ("combined", "attention_lstm", "hist_mean")}
    a = np.where(part["combined"]["horizon"].to_numpy() == 1, 0.5, 0.125)
    b = np.where(part["combined"]["horizon"].to_numpy() == 1, 0.25, 0.75)
    expected = a * part["attention_lstm"]["y_pred"].to_numpy() + b * part["hist_mean"]["y_pred"].to_numpy()
    assert part["combined"]["y_pred"].to_numpy() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # the published forecast: the refit network and the historical mean of every realised label, by these weights
    from features.windows import refit_split
    from flows.nightly_tasks import forecast
    from forecasting import train
    from forecasting.baselines import HistoricalMean
    from forecasting.policy import Source
    from forecasting.publish import current_rows

    sources = {1: Source("combined", False, False), 2: Source("combined", False, False)}
    got = forecast.fn(choice, case.panel, case.ff, settings, sources, {}).sort("ticker", "horizon")
    asof, rows, _ = current_rows(case.panel)
    mean = HistoricalMean()
    mean.fit(case.panel, refit_split(case.panel, settings.windows.lookback, np.datetime64(asof, "D")))
    network = train.predict(choice.published, case.panel, rows).mean.astype(np.float64)
    by_hand = np.array([0.5, 0.125]) * network + np.array([0.25, 0.75]) * mean.predict(case.panel, rows)
    assert got["pred_log_return"].to_numpy() == pytest.approx(by_hand.reshape(-1), rel=1e-12, abs=1e-15)


def test_an_old_champion_record_without_weights_publishes_the_network(first, tmp_path):
    """A record made before the combination existed loads, and means what it meant: the network alone."""
    import json

    from flows.nightly_tasks import forecast
    from forecasting import train
    from forecasting.combine import Publishing
    from forecasting.policy import Source
    from forecasting.publish import current_rows

    settings, case = from_first(first, tmp_path)
    body, path = champion_record(settings)
    del body["history"][-1]["combination"]
    path.write_text(json.dumps(body))
    choice = choose(case, settings)
    assert not choice.retrained and choice.publishing == Publishing() and choice.publishing.name == "attention_lstm"
    assert "combined" not in choice.evaluation.predictions["model"].unique().to_list()
    sources = {1: Source("attention_lstm", False, False), 2: Source("attention_lstm", False, False)}
    got = forecast.fn(choice, case.panel, case.ff, settings, sources, {}).sort("ticker", "horizon")
    network = train.predict(choice.published, case.panel, current_rows(case.panel)[1]).mean
    assert got["pred_log_return"].to_list() == network.astype(np.float64).reshape(-1).tolist()


def test_a_champion_recorded_before_newer_settings_existed_is_still_fresh(first, tmp_path):
    """A champion recorded by a nightcast that had no model.bidirectional, self_attention, features.market or
    publish.combination_holdout (its hashes were taken without them) is the same recipe while they hold their
    old behaviour's values: kept, and held for publishing; set one of them and it is a new recipe (an upgrade
    retrained every champion, saying the user's settings had changed)."""
    import copy
    import json

    from flows.model_choice import _recipe_parts
    from forecasting.registry import settings_hash

    settings, case = from_first(first, tmp_path, publish={"combination_holdout": 0.0})
    recipe, inputs = copy.deepcopy(_recipe_parts(settings))
    del recipe["model"]["bidirectional"], recipe["model"]["self_attention"]
    del recipe["features"]["market"], inputs["features"]["market"], recipe["publish"]["combination_holdout"]
    body, path = champion_record(settings)
    body["history"][-1] |= {"settings_hash": settings_hash(recipe), "inputs_hash": settings_hash(inputs)}
    path.write_text(json.dumps(body))
    choice = choose(case, settings)
    assert choice.decision == f"kept champion {first[2].version}: still fresh" and not choice.retrained

    kept = {"publish": {"combination_holdout": 0.0}}
    for n, change in enumerate(({**kept, "model": {"bidirectional": True}}, {"publish": {"combination_holdout": 0.5}})):
        changed = small_settings(tmp_path / f"changed{n}", **change)
        shutil.copytree(settings.paths.models, changed.paths.models)
        again = choose(case, changed)
        assert again.retrained and "the settings that define the model differ from the champion's" in again.decision


def test_the_plain_model_setting_publishes_as_before(first, tmp_path):
    """publish.forecast = "model": the recipe hash of before the setting existed (its champions stay valid),
    the same network as under the combination, scored and published alone."""
    from forecasting.registry import read_history, settings_hash

    plain = small_settings(tmp_path, publish={"forecast": "model"})
    dumped = plain.model_dump(mode="json")
    before = {k: dumped[k] for k in ("denoise", "features", "windows", "model")} | {
        "train": training_recipe(plain.train)
    }
    assert config_hashes(plain)[0] == settings_hash(before) != config_hashes(first[0])[0]
    choice = choose(first[1], plain)
    assert choice.publishing.weights is None and read_history(plain.paths.models)[-1].combination is None
    # one epoch: early stopping has nothing to choose, so the same network (in general the combination's network
    # early-stops on the validation span less its held share, and the plain one on all of it)
    assert choice.version == first[2].version
    assert sorted(choice.evaluation.predictions["model"].unique()) == [
        "attention_lstm",
        "hist_mean",
        "random_walk",
        "ridge",
    ]


def extended(prices: pl.DataFrame, sessions: int) -> pl.DataFrame:
    """`prices` and `sessions` more business days per ticker, each a calm +0.1% day: the same history, newer data."""
    from datetime import timedelta

    from tests.conftest import business_days

    last = prices.sort("date").group_by("ticker", maintain_order=True).last()
    days = business_days(prices["date"].max() + timedelta(days=1), sessions)
    grown = [
        last.with_columns(
            pl.lit(day).alias("date"),
            *(pl.col(c) * 1.001 ** (k + 1) for c in ("open", "high", "low", "close", "adj_close")),
        )
        for k, day in enumerate(days)
    ]
    return pl.concat([prices, *grown]).sort("ticker", "date")


def test_the_age_rule_counts_the_days_the_data_moved(first, tmp_path):
    """The champion was trained on TODAY with data to ~2011-04-08; the same day, data a month newer arrives (a
    newer price file): it is retrained, not kept as 'still fresh' (before: kept, publishing from a model a month
    behind the data)."""
    settings, case = from_first(first, tmp_path)
    newer = case_of(extended(case.prices, 22), settings)
    champion = first[2]
    choice = choose(newer, settings, today=TODAY)
    days = (newer.asof - case.asof).days
    assert choice.retrained, choice.decision
    reason = f"retrained (the data reaches {newer.asof}, {days} days past the {case.asof} the champion was trained with"
    assert reason in choice.decision
    assert choice.version != champion.version and len(history(settings)) == 2  # a new decision, a new refit
    assert date.fromisoformat(choice.published.trained_through) > case.asof  # the refit saw the new sessions


def test_a_ticker_stale_for_longer_than_the_health_window_does_not_block_training(first, tmp_path):
    """BBB stopped 128 sessions ago (delisted): no champion yet, and training goes ahead (before: 'no model to
    publish: ... BBB: stale, 128 sessions behind'); one stopped 8 sessions ago still blocks, naming the setting."""
    from flows.model_choice import choose_model
    from nightcast.errors import InsufficientDataError

    _, case, _ = first
    settings = small_settings(tmp_path / "recent")
    with pytest.raises(InsufficientDataError) as info:
        choose_model(case.panel, case.prices, {"BBB": 8}, settings, TODAY, case.asof, case.fingerprint)
    assert str(info.value) == (
        "no model to publish: there is no champion yet and the data-health gate blocked training: BBB: stale, 8 "
        "sessions behind, within health.window_days = 21 (health.block_on_stale = false trains anyway) (each names "
        "the setting that decides it; health.enabled = false turns the gate off)"
    )
    settings = small_settings(tmp_path / "delisted")
    choice = choose_model(case.panel, case.prices, {"BBB": 128}, settings, TODAY, case.asof, case.fingerprint)
    assert choice.retrained and choice.health == [] and history(settings) == ["promoted"]


def only(case: Case, ticker: str, settings) -> Case:
    return case_of(case.prices.filter(pl.col("ticker") == ticker), settings)


def test_a_subset_run_publishes_from_the_champion_and_never_retrains_it(first, tmp_path):
    """`--tickers AAA` on a champion of AAA and BBB: before, the changed fingerprint retrained ('revised (or
    tickers changed)') and a one-ticker model became the champion of both."""
    settings, case = from_first(first, tmp_path, source={"tickers": ["AAA"]})
    subset = only(case, "AAA", settings)
    choice = choose(subset, settings)
    assert not choice.retrained and choice.version == first[2].version and history(settings) == ["promoted"]
    assert choice.decision == (
        f"kept champion {first[2].version}: still fresh; this run asks for 1 of the 2 tickers it trained on "
        "(source.tickers): a subset run publishes from the champion and never retrains it (a run of its whole "
        "universe does; `nightcast train` with these tickers makes them the universe)"
    )
    assert set(choice.evaluation.predictions["ticker"].unique()) == {"AAA"}  # evaluated on what it publishes
    # due by age: still not retrained on the subset; the decision says what a full run will do
    late = choose(subset, settings, today=date(2011, 6, 1))
    assert not late.retrained and history(settings) == ["promoted"]
    assert "due for a retrain (the champion is 31 days old (train.max_age_days = 7))" in late.decision


def test_a_ticker_that_left_the_data_is_named_in_the_retrain_reason(first, tmp_path):
    """A price file that stops holding BBB (no `--tickers`): the whole universe changed, so the champion of AAA
    and BBB is retrained, and the decision says which ticker left (it said 'revised (or tickers changed)')."""
    settings, case = from_first(first, tmp_path)
    choice = choose(only(case, "AAA", settings), settings)
    assert choice.retrained
    assert "1 ticker the champion trained on is no longer in the data: BBB" in choice.decision


def test_which_runs_are_subset_runs():
    from types import SimpleNamespace

    from flows.model_choice import subset_of_champion

    held = (SimpleNamespace(tickers=["AAA", "BBB", "CCC"]), None)

    def asked(*tickers):
        return load_settings(None, environ={}, overrides={"source": {"tickers": list(tickers)}})

    one = "this run asks for 1 of the 3 tickers it trained on (source.tickers)"
    assert subset_of_champion(asked("bbb"), held) == one
    assert subset_of_champion(asked(), held) is None  # every ticker of the source: the ordinary rules
    assert subset_of_champion(asked("AAA", "BBB", "CCC"), held) is None  # its whole universe
    assert subset_of_champion(asked("AAA", "DDD"), held) is None  # a ticker it never saw: the ordinary rules
    assert subset_of_champion(asked("AAA"), None) is None  # no usable champion: nothing to publish from but a new one
