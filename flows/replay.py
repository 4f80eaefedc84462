"""The replay flow: the nightly job for every session between two dates, each from data up to its night.

The lake is brought up to date once; each night is then a `nightly` subflow run `asof` that night, reading
the lake as stored. The champion rules decide when a night retrains, exactly as they would have live, and
each night's forecasts go into the ledger, so the replay ends with a live record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from features.calendar import is_session
from features.errors import ConfigError, InsufficientDataError
from flows.ingest import ingest_flow
from flows.nightly import NightlyResult, nightly
from flows.settings import Settings
from forecasting import live


@dataclass
class ReplayResult:
    nights: pl.DataFrame  # one row per replayed night
    last: NightlyResult
    seconds: float

    @property
    def retrains(self) -> int:
        return int(self.nights["retrained"].sum())


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    return f"replay-{p.get('start')}-to-{p.get('end')}"


@flow(name="replay", flow_run_name=_run_name)
def replay_flow(settings: Settings, start: date, end: date, progress: bool = True) -> ReplayResult:
    """Run the nightly as of every session from `start` to `end` that has data, in order."""
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    started = time.perf_counter()
    report = ingest_flow(settings)
    usable = report.summary.filter(pl.col("status").is_in(["ok", "stale"]))["ticker"].to_list()
    days = report.prices.filter(pl.col("date").is_between(start, end))["date"].unique().sort().to_list()
    nights = [d for d in days if is_session(d, settings.publish.calendar)]
    if not nights:
        raise InsufficientDataError(f"no session with data between {start} and {end}")
    # the universe is fixed to what the source holds now, and each night reads the lake as stored
    # (the replay's bar is the progress: the nights train without their own epoch bars)
    fixed = settings.model_copy(
        update={
            "source": settings.source.model_copy(update={"tickers": usable}),
            "train": settings.train.model_copy(update={"progress": False}),
        }
    )
    rows, last = [], None
    bar = Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} nights  {task.fields[night]}"),
        TimeElapsedColumn(),
        disable=not progress,
    )
    with bar:
        task = bar.add_task("nights", total=len(nights), night="")
        for night in nights:
            t0 = time.perf_counter()
            last = nightly(fixed, asof=night, ingest=False)
            rows.append(
                {
                    "night": night,
                    "asof": last.asof,
                    "retrained": last.retrained,
                    "model_version": last.model_version,
                    "trained_through": last.trained_through,
                    "forecasts": last.forecasts.height,
                    "scored": int(last.record.filter(pl.col("scope") == "pooled")["n"].sum()),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "decision": last.decision,
                }
            )
            bar.update(task, advance=1, night=f"{night} ({'retrained' if last.retrained else 'kept'})")
    result = ReplayResult(pl.DataFrame(rows), last, time.perf_counter() - started)
    create_markdown_artifact(
        markdown=f"# nightcast replay {nights[0]} .. {nights[-1]}\n\n{len(nights)} nights, {result.retrains} "
        f"retrains, {result.seconds:.0f} s\n\n" + live.record_markdown(last.record, last.pending),
        key="replay-summary",
        description="replayed nights and the live record they left",
    )
    return result
