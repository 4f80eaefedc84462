"""The train flow: ingest -> data-health gate -> features -> challenger vs champion."""

from __future__ import annotations

from datetime import date

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from features import lake
from flows.ingest import ingest_flow
from flows.model_choice import ModelChoice, choose_model
from flows.settings import Settings
from flows.tasks import features_by_chunk, require_history


def _run_name() -> str:
    return f"train-{date.today().isoformat()}"


@flow(name="train", flow_run_name=_run_name)
def train_flow(settings: Settings) -> ModelChoice:
    """Train a challenger now and keep it only if it beats the champion on the recent span."""
    report = ingest_flow(settings)
    prices, _ = require_history(report.prices, settings)
    fingerprint = lake.fingerprint(prices)
    _, panel = features_by_chunk(prices, settings, fingerprint)
    choice = choose_model(panel, prices, report.stale, settings, fingerprint, date.today(), force=True)
    create_markdown_artifact(
        markdown=f"# Train\n\n{choice.decision}\n" + "".join(f"\n- data health: {p}" for p in choice.health),
        key="train-decision",
        description="champion and challenger",
    )
    return choice
