"""The ingest flow: bring the lake up to date from the configured source."""

from __future__ import annotations

from datetime import date

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from features.ingest import IngestReport, ingest
from flows.artifacts import markdown_table
from flows.settings import Settings


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(settings: Settings) -> IngestReport:
    # yfinance retries transient failures itself (backoff with jitter), then falls back to the lake.
    return ingest(
        settings.source,
        settings.ingest,
        settings.validation,
        settings.paths.lake,
        cache_dir=settings.paths.cache / "yfinance",
    )


def _run_name() -> str:
    return f"ingest-{date.today().isoformat()}"


@flow(name="ingest", flow_run_name=_run_name)
def ingest_flow(settings: Settings) -> IngestReport:
    """Fetch or load prices, validate them and upsert them into the lake; return what is usable."""
    report = ingest_task(settings)
    text = [
        f"# Ingest from {settings.source.kind}",
        "",
        f"lake `{settings.paths.lake}`, reference date {report.reference}",
        "",
        markdown_table(report.summary),
    ]
    create_markdown_artifact(markdown="\n".join(text), key="ingest-summary", description="rows added per ticker")
    return report
