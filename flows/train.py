"""The train flow: ingest -> data-health gate -> features -> challenger vs champion."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from features.prices import lake
from flows.ingest import ingest_flow
from flows.lock import exclusive
from flows.model_choice import ModelChoice, choose_model
from flows.nightly import market_day
from flows.prefect_env import no_heartbeat_of_its_own
from flows.settings import Settings, dated_run_name
from flows.tasks import features_by_chunk, require_history
from forecasting import publish


@flow(name="train", flow_run_name=dated_run_name("train"))
def train_flow(settings: Settings) -> ModelChoice:
    """Evaluate a challenger now; it replaces the champion only by beating it out of sample, then is refit."""
    with exclusive(settings.paths.data_dir, "train"):
        return _train(settings)


def _train(settings: Settings) -> ModelChoice:
    with no_heartbeat_of_its_own():
        report = ingest_flow(settings)
    prices, _ = require_history(report.prices, settings)
    fingerprint = lake.fingerprint(prices)
    _, panel = features_by_chunk(prices, settings, fingerprint)
    asof = publish.current_rows(panel, report.stale)[0]
    today = market_day(settings, None)
    choice = choose_model(panel, prices, report.stale, settings, today, asof, fingerprint, force=True)
    create_markdown_artifact(
        markdown=f"# Train\n\n{choice.decision}\n" + "".join(f"\n- data health: {p}" for p in choice.health),
        key="train-decision",
        description="champion and challenger",
    )
    return choice
