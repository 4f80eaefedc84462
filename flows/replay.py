"""The replay flow: the nightly job for every session between two dates, each from data up to its night.

The lake is brought up to date once; each night is then a `nightly` subflow run `asof` that night, reading
the lake as stored. The champion rules decide when a night retrains, exactly as they would have live, and
each night's forecasts go into the replay's own ledger (`<out>/replay`, apart from what was published live),
so the replay ends with the live record it would have had.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from features.prices import lake
from features.prices.calendar import is_session
from flows.ingest import ingest_flow
from flows.lock import exclusive
from flows.nightly import NightlyResult, nightly
from flows.prefect_env import no_heartbeat_of_its_own
from flows.settings import Settings
from forecasting import live
from forecasting.metrics import pooled
from nightcast.errors import ConfigError, InsufficientDataError, NightcastError
from nightcast.progress import Steps

log = logging.getLogger("nightcast.flows.replay")


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
    with exclusive(settings.paths.data_dir, "replay"):
        return _replay(settings, start, end, progress)


def _replay(settings: Settings, start: date, end: date, progress: bool) -> ReplayResult:
    started = time.perf_counter()
    with no_heartbeat_of_its_own():
        report = ingest_flow(settings)
    # The universe: every requested ticker the lake holds (one quarantined by today's ingest still has its
    # stored history); each night then judges from the lake what was usable by then.
    stored = set(lake.read_manifest(settings.paths.lake))
    universe = [t for t in report.summary["ticker"].to_list() if t in stored]
    days = report.prices.filter(pl.col("date").is_between(start, end))["date"].unique().sort().to_list()
    nights = [d for d in days if is_session(d, settings.publish.calendar)]
    if not nights:
        raise InsufficientDataError(f"no session with data between {start} and {end}")
    # (the replay's bar is the progress: the nights train without their own epoch bars)
    fixed = settings.model_copy(
        update={
            "source": settings.source.model_copy(update={"tickers": universe}),
            "train": settings.train.model_copy(update={"progress": False}),
        }
    )
    rows, last = [], None
    with Steps("replay", len(nights), "{completed}/{total} nights  {night}", log, progress, night="") as bar:
        for night in nights:
            t0 = time.perf_counter()
            try:
                # plots of the last night only: it shows the whole record (earlier nights' would be overwritten
                # views of fewer forecasts, ~0.7 s each)
                with no_heartbeat_of_its_own():
                    result = nightly(fixed, asof=night, ingest=False, with_plots=night == nights[-1])
            except NightcastError as exc:  # e.g. too little history yet: that night publishes nothing, the rest go on
                log.warning("night %s: %s", night, exc)
                rows.append({"night": night, "retrained": False, "decision": f"failed: {exc}"})
                bar.advance(night=f"{night} (failed)")
                continue
            last = result
            rows.append(
                {
                    "night": night,
                    "asof": result.asof,
                    "retrained": result.retrained,
                    "model_version": result.model_version,
                    "trained_through": result.trained_through,
                    "forecasts": result.forecasts.height,
                    "scored": int(pooled(result.record)["n"].sum()),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "decision": result.decision,
                }
            )
            bar.advance(night=f"{night} ({'retrained' if result.retrained else 'kept'})")
    if last is None:
        raise InsufficientDataError(f"every night from {start} to {end} failed: {rows[0]['decision']}")
    result = ReplayResult(pl.DataFrame(rows, infer_schema_length=None), last, time.perf_counter() - started)
    create_markdown_artifact(
        markdown=f"# nightcast replay {nights[0]} .. {nights[-1]}\n\n{len(nights)} nights, {result.retrains} "
        f"retrains, {result.seconds:.0f} s\n\n" + live.record_markdown(last.record, last.waiting, last.unpriced),
        key="replay-summary",
        description="replayed nights and the live record they left",
    )
    return result
