"""Champion and challenger: the steps the `train` and `nightly` flows share.

Given the features, decide whether the champion is stale; if so (and the
data-health gate passes) train a challenger and keep whichever has the lower
out-of-sample MSE on the same recent span. Returns the evaluation of the
model that will be published, beside the baselines on identical origins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from features.errors import InsufficientDataError
from features.health import HealthReport, check_health
from features.windows import Panel
from flows.settings import Settings
from flows.tasks import run_backtest
from forecasting import metrics, registry, train
from forecasting.backtest import BacktestResult, FixedForecaster, NeuralForecaster, make_forecasters, walk_forward

MODEL_NAME = "attention_lstm"
BASELINES = ("random_walk", "hist_mean", "ridge")
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate", "weight_decay", "grad_clip", "patience", "seed")
log = logging.getLogger("nightcast.flows.model_choice")


@dataclass
class ModelChoice:
    result: BacktestResult  # evaluation of the published model and the baselines on the recent span
    trained: train.TrainedModel
    version: str
    checkpoint: str
    decision: str  # one sentence for logs and the run summary
    champion_mse: float | None = None
    challenger_mse: float | None = None
    health: list[str] = field(default_factory=list)


def evaluation_settings(settings: Settings):
    return settings.backtest.model_copy(
        update={"refit_every": 0, "test_start": None, "test_end": None, "models": [MODEL_NAME, *BASELINES]}
    )


def mean_mse(result: BacktestResult) -> float:
    rows = result.metrics.filter((pl.col("model") == MODEL_NAME) & (pl.col("ticker") == metrics.POOLED))
    return float(rows["mse"].mean())


@task(name="data-health gate", cache_policy=NO_CACHE)
def health_gate(prices: pl.DataFrame, stale: dict[str, int], settings: Settings) -> HealthReport:
    report = check_health(prices, stale, settings.health, settings.publish.calendar)
    for problem in report.problems:
        log.warning("data health: %s", problem)
    return report


@task(name="evaluate champion", cache_policy=NO_CACHE)
def evaluate_fixed(panel: Panel, trained: train.TrainedModel, settings: Settings) -> BacktestResult:
    bt = evaluation_settings(settings)
    baselines = [
        f
        for f in make_forecasters(
            bt.model_copy(update={"models": list(BASELINES)}), settings.model, settings.train, settings.windows.lookback
        )
    ]
    return walk_forward(
        panel,
        bt,
        settings.model,
        settings.train,
        settings.windows.lookback,
        settings.windows.val_days,
        settings.windows.test_days,
        progress=False,
        forecasters=[FixedForecaster(MODEL_NAME, trained), *baselines],
    )


def choose_model(
    panel: Panel,
    prices: pl.DataFrame,
    stale: dict[str, int],
    settings: Settings,
    fingerprint: str,
    today: date,
    force: bool = False,
) -> ModelChoice:
    """Retrain when stale (and healthy); keep the better of champion and challenger; evaluate what is published."""
    models_dir = settings.paths.models
    dumped = settings.model_dump(mode="json")
    config_hash = registry.settings_hash(
        {k: dumped[k] for k in ("denoise", "features", "windows", "model")}
        | {"train": {k: dumped["train"][k] for k in TRAINING_KEYS}}
    )
    champion = registry.read_champion(models_dir)
    reason = registry.staleness(
        champion, fingerprint, config_hash, today, settings.train.max_age_days, settings.train.retrain_on_new_data
    )
    if force and reason is None:
        reason = "a retrain was requested"
    health = health_gate(prices, stale, settings)
    champion_model = train.load_checkpoint(champion.checkpoint) if champion else None
    if reason is None or not health.ok:
        if champion_model is None:
            raise InsufficientDataError(
                "no model to publish: the data-health gate blocked training and there is no champion yet: "
                + "; ".join(health.problems)
            )
        why = "still fresh" if reason is None else f"stale ({reason}) but training is blocked by the data-health gate"
        log.info("kept champion %s: %s", champion.version, why)
        result = evaluate_fixed(panel, champion_model, settings)
        return ModelChoice(
            result,
            champion_model,
            champion.version,
            champion.checkpoint,
            f"kept champion {champion.version}: {why}",
            champion_mse=mean_mse(result),
            health=health.problems,
        )

    timed = run_backtest.with_options(timeout_seconds=settings.train.timeout_s)
    challenger_result = timed(panel, settings, evaluation_settings(settings), fingerprint)
    neural = next(f for f in challenger_result.forecasters if f.name == MODEL_NAME)
    assert isinstance(neural, NeuralForecaster) and neural.trained is not None
    challenger_mse = mean_mse(challenger_result)
    champion_result = champion_mse = None
    if champion_model is not None and champion_model.features == list(panel.features):
        champion_result = evaluate_fixed(panel, champion_model, settings)
        champion_mse = mean_mse(champion_result)
    if champion_mse is not None and champion_mse <= challenger_mse:
        decision = (
            f"retrained ({reason}); the challenger's recent MSE {challenger_mse:.4e} does not beat the "
            f"champion's {champion_mse:.4e}: kept champion {champion.version}"
        )
        log.info("%s", decision)
        return ModelChoice(
            champion_result,
            champion_model,
            champion.version,
            champion.checkpoint,
            decision,
            champion_mse,
            challenger_mse,
            health.problems,
        )
    version = f"{MODEL_NAME}-{train.weights_digest(neural.trained.model)}"
    checkpoint = train.save_checkpoint(neural.trained, models_dir / f"{version}.pt")
    registry.write_champion(
        models_dir,
        registry.Champion(version, str(checkpoint), today.isoformat(), fingerprint, config_hash, challenger_mse),
    )
    against = "no champion before" if champion_mse is None else f"champion's {champion_mse:.4e}"
    decision = f"retrained ({reason}); challenger {version} promoted: recent MSE {challenger_mse:.4e} vs {against}"
    log.info("%s", decision)
    return ModelChoice(
        challenger_result,
        neural.trained,
        version,
        str(checkpoint),
        decision,
        champion_mse,
        challenger_mse,
        health.problems,
    )
