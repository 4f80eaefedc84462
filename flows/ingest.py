"""The ingest flow: bring the lake up to date from the configured source."""

from __future__ import annotations

import logging

import polars as pl
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from features.market import context_only
from features.prices import lake
from features.prices.ingest import IngestReport, ingest
from flows.lock import exclusive
from flows.settings import Settings, dated_run_name
from forecasting.results import markdown_table
from nightcast.errors import SourceError

log = logging.getLogger("nightcast.flows.ingest")


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(settings: Settings, write_manifest: bool = True, context: list[str] | None = None) -> IngestReport:
    """`context`: series stored beside the tickers (fetched from yfinance, read from a file that holds them)."""
    # yfinance retries transient failures itself (backoff with jitter), then falls back to the lake.
    return ingest(
        settings.source,
        settings.ingest,
        settings.validation,
        settings.paths.lake,
        cache_dir=settings.paths.cache / "yfinance",
        write_manifest=write_manifest,
        context=context or [],
        calendar=settings.publish.calendar,
    )


@task(name="ingest (chunk)", cache_policy=NO_CACHE)
def chunk_task(settings: Settings, write_manifest: bool) -> IngestReport | str:
    """One chunk; a chunk with no data at all (every ticker failed, nothing stored) is reported, not raised."""
    try:
        return ingest_task.fn(settings, write_manifest)  # context series are tickers of the chunks (yfinance)
    except SourceError as exc:
        return str(exc)


@task(name="update lake manifest", cache_policy=NO_CACHE)
def manifest_task(settings: Settings, tickers: list[str], written: list[str]) -> None:
    lake.update_manifest(settings.paths.lake, tickers, written=written)


def ingest_chunks(settings: Settings) -> IngestReport:
    """yfinance universes are ingested per chunk of `runner.chunk_size` tickers as parallel tasks.

    The reference date (the latest closed session) is the same for every chunk, so the merged report
    equals a single ingest; the lake manifest is written once, after all chunks. The market family's
    context-only series are ingested with them (fetched from yfinance like any ticker).
    """
    context = context_only(settings.features, settings.source)
    tickers = [*settings.source.tickers, *context]
    size = settings.runner.chunk_size
    if settings.source.kind != "yfinance" or len(tickers) <= size:
        return ingest_task(settings, context=context)
    chunks = [tickers[i : i + size] for i in range(0, len(tickers), size)]
    futures = [
        chunk_task.submit(
            settings.model_copy(update={"source": settings.source.model_copy(update={"tickers": chunk})}), False
        )
        for chunk in chunks
    ]
    parts = [f.result() for f in futures]
    report = IngestReport.merge([p for p in parts if isinstance(p, IngestReport)])
    failures = [p for p in parts if isinstance(p, str)]
    if report.prices.is_empty():
        raise SourceError("no data at all: " + "; ".join(failures))
    for reason in failures:
        log.warning("a chunk of tickers brought nothing: %s", reason)
    failed_rows = [
        {"ticker": t, "status": "failed", "reason": r[:500]}
        for c, r in zip(chunks, parts, strict=True)
        if isinstance(r, str)
        for t in c
    ]
    if failed_rows:
        report.summary = pl.concat([report.summary, pl.DataFrame(failed_rows)], how="diagonal_relaxed").sort("ticker")
    # the tickers whose files the chunks wrote: any other entry the manifest rebuilds is a repair, said so
    changed = pl.sum_horizontal("rows_added", "rows_revised", "rows_filled").fill_null(0) > 0
    written = report.summary.filter(changed)["ticker"].to_list()
    manifest_task(settings, report.stored, written)
    return report


@flow(name="ingest", flow_run_name=dated_run_name("ingest"))
def ingest_flow(settings: Settings) -> IngestReport:
    """Fetch or load prices, validate them and upsert them into the lake; return what is usable.

    Context-only series (`features.market.context_only`) are stored and shown in the summary artifact, but the
    report returned holds them apart (`IngestReport.context`): the universe that is checked, trained on,
    forecast and published is the tickers asked for. Features read the context series from the lake.
    """
    with exclusive(settings.paths.data_dir, "ingest"):
        report = ingest_chunks(settings)
    text = [
        f"# Ingest from {settings.source.kind}",
        "",
        f"lake `{settings.paths.lake}`, reference date {report.reference}",
        "",
        markdown_table(report.summary),
    ]
    create_markdown_artifact(markdown="\n".join(text), key="ingest-summary", description="rows added per ticker")
    return report.set_apart(context_only(settings.features, settings.source))
