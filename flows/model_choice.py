"""Champion and challenger: the steps the `train` and `nightly` flows share. Wiring only; the rules are
`forecasting.policy` and the bookkeeping `forecasting.registry`.

A recipe (the settings that define a model) is vouched for by its evaluation fit: trained only on labels
realised before the evaluation span (the last `windows.test_days` origins), scored out of sample there beside
the baselines on identical origins. The model that publishes is the same recipe refit on every label realised
by the as-of date. When the champion is stale (and the data-health gate passes) a challenger recipe is
evaluated; it replaces the champion only by beating the champion's evaluation fit on forecasts out of sample
for both. Either way the winning recipe is then refit on the newer data, and the decision recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from features.prices import lake
from features.prices.health import HealthReport, check_health
from features.windows import Panel, refit_split
from flows.settings import Settings
from flows.tasks import run_backtest
from forecasting import policy, registry, train
from forecasting.backtest import (
    BacktestResult,
    FixedForecaster,
    Intervals,
    NeuralForecaster,
    Schedule,
    make_forecasters,
    walk_forward,
)
from forecasting.batching import BatchPlan
from forecasting.combine import Publishing
from forecasting.names import BASELINES, TRAINED_MODEL
from forecasting.settings import (
    ADDED_TO_RECIPE,
    ModelSettings,
    TrainSettings,
    publishing_recipe,
    training_recipe,
)
from nightcast.errors import InsufficientDataError

log = logging.getLogger("nightcast.flows.model_choice")


@dataclass
class ModelChoice:
    evaluation: BacktestResult  # the publishing recipe's evaluation fit and the baselines, out of sample
    evaluation_model: train.TrainedModel
    evaluation_version: str
    published: train.TrainedModel  # the same recipe refit on every label realised by the as-of date
    version: str
    checkpoint: Path
    decision: str  # one sentence for logs, the run summary and run.json
    retrained: bool  # a challenger was evaluated this run
    verdict: policy.Verdict | None = None
    health: list[str] = field(default_factory=list)
    publishing: Publishing = Publishing()  # what publishes from `published`: the network alone or combined


def evaluation_settings(settings: Settings):
    models = [*Publishing.evaluated(settings.publish.forecast), *BASELINES]
    return settings.backtest.model_copy(
        update={"refit_every": 0, "test_start": None, "test_end": None, "models": models}
    )


def _recipe_parts(settings: Settings) -> tuple[dict, dict]:
    """(the recipe, the inputs) as the champion's hashes take them (their sections are copies of their own)."""
    dumped = settings.model_dump(mode="json")
    inputs = {
        "denoise": dict(dumped["denoise"]),
        "features": dict(dumped["features"]),
        "lookback": dumped["windows"]["lookback"],
    }
    recipe = {k: dumped[k] for k in ("denoise", "features", "windows", "model")} | {
        "train": training_recipe(settings.train)
    }
    if published := publishing_recipe(settings.publish):
        recipe["publish"] = published
    return recipe, inputs


def config_hashes(settings: Settings) -> tuple[str, str]:
    """(everything that defines the model, what its inputs are): a change of the first retrains; models with
    equal second hashes read the same features, so one can be scored on the other's data."""
    recipe, inputs = _recipe_parts(settings)
    return registry.settings_hash(recipe), registry.settings_hash(inputs)


def accepted_hashes(settings: Settings) -> tuple[list[str], list[str]]:
    """`config_hashes` as a champion recorded by an earlier nightcast may hold them: every layout of the
    settings without the recipe settings added since, while they hold their old behaviour's values."""
    recipe, inputs = _recipe_parts(settings)
    return registry.layout_hashes(recipe, ADDED_TO_RECIPE), registry.layout_hashes(inputs, ADDED_TO_RECIPE)


@task(name="data-health gate", cache_policy=NO_CACHE)
def health_gate(prices: pl.DataFrame, stale: dict[str, int], settings: Settings) -> HealthReport:
    report = check_health(prices, stale, settings.health, settings.publish.calendar)
    for problem in report.problems:
        log.warning("data health: %s", problem)
    return report


@task(name="evaluate champion", cache_policy=NO_CACHE)
def evaluate_fixed(
    panel: Panel, trained: train.TrainedModel, publishing: Publishing, settings: Settings
) -> BacktestResult:
    """The champion's evaluation fit (and its combination, by the champion's stored weights) and freshly fit
    baselines on today's evaluation span (out of sample for the champion: its cutoff is at or before the span's
    start, and its weights were chosen on its evaluation fit's validation span, before that cutoff)."""
    bt, w = evaluation_settings(settings), settings.windows
    baselines = make_forecasters(
        bt.model_copy(update={"models": list(BASELINES)}), settings.model, settings.train, w.lookback
    )
    return walk_forward(
        panel,
        [*publishing.forecasters(FixedForecaster(TRAINED_MODEL, trained)), *baselines],
        # none held: nothing here early-stops (the champion is fixed, its weights stored), and the baselines read
        # the whole validation span either way (`Splits.seen`, `Splits.validation`)
        Schedule.from_settings(panel, bt, w.lookback, w.val_days, w.test_days, held_share=0.0),
        Intervals.from_settings(bt),
        progress=False,
    )


@task(name="refit on everything known", cache_policy=NO_CACHE)
def refit(
    panel: Panel,
    model: ModelSettings,
    training: TrainSettings,
    lookback: int,
    epochs: int,
    asof: date,
    fingerprint: str,
    plan: BatchPlan | None = None,
) -> train.TrainedModel:
    """The evaluated recipe trained on every sample whose longest target is realised by `asof`, with the
    evaluated fit's batch size and learning rate (`plan`): on a GPU the batch grows with the span, and the
    refit's larger span would otherwise train with a bigger batch and learning rate than the evaluated epochs
    were counted for."""
    split = refit_split(panel, lookback, np.datetime64(asof, "D"))
    return train.fit(panel, split, model, training, lookback, fingerprint, stop_after=epochs, plan=plan)


def _recipe_of(evaluated: train.TrainedModel, settings: Settings) -> tuple[ModelSettings, TrainSettings]:
    """The model and training settings an evaluation fit was trained with (device, threads, progress: today's)."""
    saved = evaluated.settings["train"]
    training = settings.train.model_copy(update={k: saved[k] for k in training_recipe(settings.train) if k in saved})
    return ModelSettings.model_validate(evaluated.settings["model"]), training


def _held(models_dir: Path, champion: registry.Champion | None, inputs_hashes: list[str], features: list[str]):
    """((published, evaluation) models of the champion, None), or (None, why) when it cannot read today's
    features (why None: there is no champion, or its settings read other features, which retrains anyway).
    `inputs_hashes`: today's inputs as any layout of the settings records them (`accepted_hashes`)."""
    if champion is None or champion.inputs_hash not in inputs_hashes:
        return None, None
    published = train.load_checkpoint(models_dir / champion.checkpoint)
    if published.features != list(features):
        # the same settings build other features from other data: a close-only file has no bar features
        return None, feature_change(published.features, features)
    return (published, train.load_checkpoint(models_dir / champion.evaluation_checkpoint)), None


def feature_change(old: list[str], new: list[str]) -> str:
    """One phrase: how the features of today's data differ from a model's."""
    lacks, adds = [f for f in old if f not in new], [f for f in new if f not in old]
    parts = [f"lacks {', '.join(lacks)}" if lacks else "", f"adds {', '.join(adds)}" if adds else ""]
    change = " and ".join(p for p in parts if p) or "orders them differently"
    hint = " (a close-only source has no open, high, low or volume)" if lacks else ""
    return f"the champion's features differ from this data's: the data {change}{hint}"


def _hand_over(result: BacktestResult, evaluations, set_aside: Callable[[BacktestResult], None] | None) -> None:
    """Before the refit: the evaluation that won a retrain's contest to `set_aside` (the nightly writes most of
    its predictions to disk), and the predictions of the other, read no more, let go of (Prefect holds a task's
    result to the end of the run: with a champion, two evaluations' predictions, ~0.34 GiB each at 500 x 25)."""
    for other in evaluations:
        if other is not None and other is not result:
            other.predictions = other.predictions.clear()
    if set_aside is not None:
        set_aside(result)


def _published_predictions(result: BacktestResult, publishing: Publishing) -> pl.DataFrame:
    """The evaluation's forecasts of what publishes: the contest judges these, and reads only these columns (every
    column of a fifth of the predictions, and `mean_ratio`'s sorted copy of them, were ~0.15 GiB at 500 tickers x
    25 years)."""
    return (
        result.predictions.lazy()
        .filter(pl.col("model") == publishing.name)
        .select(*policy.KEY, "y_true", "y_pred")
        .collect()
    )


def choose_model(
    panel: Panel,
    prices: pl.DataFrame,
    stale: dict[str, int],
    settings: Settings,
    today: date,
    asof: date,
    fingerprint: str,
    *,
    force: bool = False,
    set_aside: Callable[[BacktestResult], None] | None = None,
) -> ModelChoice:
    """The champion as of `asof`, retrained when the rules say so (and the data is healthy).

    `fingerprint`: of `prices`, which hold data up to `asof` only. `set_aside`: see `_hand_over`.
    """
    models_dir = settings.paths.models
    recipes, inputs = accepted_hashes(settings)
    champion = registry.champion_as_of(models_dir, asof)
    held, unreadable = _held(models_dir, champion, inputs, panel.features)
    # a run on some of the champion's tickers publishes from it and never retrains it (`nightcast train` may)
    subset = None if force else subset_of_champion(settings, held)
    reason = unreadable or _retrain_reason(
        champion, prices, fingerprint, asof, today, recipes, settings.train, subset, force, held
    )
    health = health_gate(prices, stale, settings)
    # read no more here: not held through the evaluation's training and backtest and the refit (the nightly hands
    # them over and keeps no reference of its own; ~0.17 GiB at 500 tickers x 25 years)
    del prices
    # a champion publishes what it was vouched for as: its stored weights, or (none, an older record) the network
    held_publishing = Publishing.of(champion.combination) if champion is not None else Publishing()
    champion_result = evaluate_fixed(panel, held[1], held_publishing, settings) if held else None
    if reason is None or not health.ok or subset is not None:
        return _keep(champion, held, (champion_result, held_publishing), reason, health.problems, models_dir, subset)

    challenger_result = run_backtest.with_options(timeout_seconds=settings.train.timeout_s)(
        panel, settings, evaluation_settings(settings), fingerprint
    )
    recipe = _evaluated_recipe(challenger_result)
    evaluated, publishing = recipe.trained, Publishing.from_evaluation(challenger_result.forecasters)
    verdict = _verdict(champion, held, (champion_result, held_publishing), (challenger_result, publishing), evaluated)
    if verdict.promote:
        model, training = recipe.model_settings, recipe.train_settings
        result, event = challenger_result, "promoted"
        evaluation_version = f"{TRAINED_MODEL}-eval-{train.weights_digest(evaluated.model)}"
        train.save_checkpoint(evaluated, models_dir / f"{evaluation_version}.pt")
    else:
        # The champion's recipe won out of sample: it goes on publishing (as it was vouched for: alone or by its
        # weights), refit on the newer data too.
        evaluated, evaluation_version, publishing = held[1], champion.evaluation_version, held_publishing
        model, training = _recipe_of(evaluated, settings)
        result, event = champion_result, "kept"
    _hand_over(result, (champion_result, challenger_result), set_aside)
    epochs, plan = policy.refit_epochs(evaluated.best_epoch), evaluated.batch_plan  # as the evaluation trained
    published = refit.with_options(timeout_seconds=settings.train.timeout_s)(
        panel, model, training, evaluated.lookback, epochs, asof, fingerprint, plan
    )
    version = f"{TRAINED_MODEL}-{train.weights_digest(published.model)}"
    checkpoint = train.save_checkpoint(published, models_dir / f"{version}.pt")
    score = verdict.challenger_score if verdict.promote else verdict.champion_score
    if score is None:
        score = policy.mean_ratio(_published_predictions(result, publishing), "y_pred")
    decided = _Decided(version, evaluation_version, published, evaluated, result, publishing, score, event)
    registry.record_decision(
        models_dir, _record(decided, asof, today, fingerprint, *config_hashes(settings), checkpoint.name)
    )
    decision = _retrained(reason, verdict, version, evaluation_version)
    return ModelChoice(
        result,
        evaluated,
        evaluation_version,
        published,
        version,
        checkpoint,
        decision,
        True,
        verdict,
        health.problems,
        publishing,
    )


def _retrained(reason: str, verdict: policy.Verdict, version: str, evaluation_version: str) -> str:
    """The decision of a run that retrained, logged and returned (one sentence)."""
    if verdict.promote:
        decision = f"retrained ({reason}); challenger {version} promoted: {verdict.reason}"
    else:
        decision = (
            f"retrained ({reason}); kept the champion's recipe ({evaluation_version}), refit as {version}: "
            f"{verdict.reason}"
        )
    log.info("%s", decision)
    return decision


@dataclass(frozen=True)
class _Decided:
    """What a retrain decided: the models, the evaluation that vouched for them and how they publish."""

    version: str
    evaluation_version: str
    published: train.TrainedModel
    evaluated: train.TrainedModel
    result: BacktestResult
    publishing: Publishing
    score: float
    event: str


def _record(
    d: _Decided, asof: date, today: date, fingerprint: str, recipe_hash: str, inputs_hash: str, checkpoint: str
) -> registry.Champion:
    return registry.Champion(
        d.version,
        checkpoint,
        d.evaluation_version,
        f"{d.evaluation_version}.pt",
        asof,
        today,
        date.fromisoformat(d.published.trained_through),
        date.fromisoformat(d.evaluated.cutoff),
        fingerprint,
        recipe_hash,
        inputs_hash,
        d.result.test_start.astype(object),
        d.result.test_end.astype(object),
        d.score,
        d.event,
        d.publishing.record(),
    )


def subset_of_champion(settings: Settings, held) -> str | None:
    """How this run is a subset run, or None: `source.tickers` (`--tickers`) asks for some, not all, of the
    tickers the champion's published model trained on. Such a run refreshes those tickers' forecasts from the
    champion of the whole universe: retraining on the subset would make a model of a few tickers the champion
    of all of them (and a later run whose training the health gate blocks would publish every ticker from it).
    Judged on what was asked, not on what arrived: a ticker quarantined tonight leaves the ordinary rules on."""
    if held is None or not settings.source.tickers:
        return None
    universe, asked = set(held[0].tickers), set(settings.source.tickers)
    if not asked < universe:  # the same tickers, or some it never trained on: the ordinary rules decide
        return None
    return f"this run asks for {len(asked)} of the {len(universe)} tickers it trained on (source.tickers)"


def _retrain_reason(
    champion: registry.Champion | None,
    prices: pl.DataFrame,
    fingerprint: str,
    asof: date,
    today: date,
    recipe_hashes: list[str],
    ts: TrainSettings,
    subset: str | None = None,
    force: bool = False,
    held: tuple[train.TrainedModel, train.TrainedModel] | None = None,
) -> str | None:
    """Why the champion must be retrained (None: it is fresh; `force`: always a reason). Revisions are judged
    on the data it saw, and not in a `subset` run: its fingerprint differs from the champion's by the tickers
    it left out, and a run of the whole universe judges revisions. `held`: the champion's (published,
    evaluation) models: the published one's tickers name those that left the data."""
    then = None
    if champion is not None and subset is None:  # `prices` end at `asof`: when the champion's as-of covers them
        then = (
            fingerprint if champion.asof >= asof else lake.fingerprint(prices.filter(pl.col("date") <= champion.asof))
        )
    tickers = (held[0].tickers, prices["ticker"].unique().to_list()) if held else None
    reason = policy.staleness(
        champion, today, recipe_hashes, then, ts.max_age_days, ts.retrain_on_revision, asof, tickers
    )
    return "a retrain was requested" if force and reason is None else reason


def _keep(
    champion: registry.Champion | None,
    held,
    champion_side: tuple[BacktestResult | None, Publishing],
    reason: str | None,
    problems: list[str],
    models_dir: Path,
    subset: str | None = None,
) -> ModelChoice:
    """The champion as it is: fresh, stale while the data-health gate blocks training, or publishing for a
    subset of its tickers (`subset_of_champion`)."""
    champion_result, publishing = champion_side
    if held is None:
        why = "there is no champion yet" if champion is None else reason or "the champion reads other features"
        raise InsufficientDataError(
            f"no model to publish: {why} and the data-health gate blocked training: "
            + "; ".join(problems)
            + " (each names the setting that decides it; health.enabled = false turns the gate off)"
        )
    if subset is not None:
        due = "still fresh" if reason is None else f"due for a retrain ({reason})"
        why = (
            f"{due}; {subset}: a subset run publishes from the champion and never retrains it (a run of its "
            "whole universe does; `nightcast train` with these tickers makes them the universe)"
        )
    elif reason is None:
        why = "still fresh"
    else:
        why = f"stale ({reason}) but training is blocked by the data-health gate"
    decision = f"kept champion {champion.version}: {why}"
    log.info("%s", decision)
    return ModelChoice(
        champion_result,
        held[1],
        champion.evaluation_version,
        held[0],
        champion.version,
        models_dir / champion.checkpoint,
        decision,
        False,
        None,
        problems,
        publishing,
    )


def _evaluated_recipe(result: BacktestResult) -> NeuralForecaster:
    """The publishing model's forecaster (its settings and evaluation fit) out of the evaluation backtest."""
    for f in result.forecasters:
        if f.name == TRAINED_MODEL and isinstance(f, NeuralForecaster) and f.trained is not None:
            return f
    raise InsufficientDataError(f"the evaluation did not train {TRAINED_MODEL}")


def _verdict(
    champion: registry.Champion | None,
    held,
    champion_side: tuple[BacktestResult | None, Publishing],
    challenger_side: tuple[BacktestResult, Publishing],
    evaluated: train.TrainedModel,
) -> policy.Verdict:
    """The contest, on what each side publishes (its combination, or the network alone)."""
    if held is None and champion is not None:
        why = "the champion reads other features (its denoise, feature or lookback settings, or the data's columns)"
        return policy.Verdict(True, why, None, None, None, None, 0)
    champion_result, champion_publishing = champion_side
    return policy.judge(
        _published_predictions(champion_result, champion_publishing) if champion_result else None,
        _published_predictions(*challenger_side),
        champion.cutoff if champion else None,
        date.fromisoformat(evaluated.cutoff),
    )
