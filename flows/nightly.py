"""The nightly flow: ingest -> features -> champion or challenger (evaluate, refit) -> forecast -> publish ->
ledger -> live record.

Tasks are thin wrappers over `features` and `forecasting`; the flow only puts them in order and leaves
artifacts in the UI. `asof` replays a past night: every stage sees only data up to that date.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from features.build import FeatureFrame
from features.history import too_little_history
from features.prices import lake
from features.prices.calendar import is_session, sessions_between
from features.prices.ingest import IngestReport, stored_report
from features.windows import Panel, dates_short
from flows import nightly_tasks, run_summary
from flows.artifacts import nightly_markdown
from flows.ingest import ingest_flow
from flows.lock import exclusive, publishing_into
from flows.model_choice import ModelChoice, choose_model
from flows.prefect_env import no_heartbeat_of_its_own
from flows.settings import Settings, dated_run_name
from flows.tasks import features_by_chunk, require_history
from forecasting import journal, live, policy, publish
from forecasting.combine import Publishing
from forecasting.cross_section import cross_section_table
from forecasting.names import BASELINES
from forecasting.volatility import QLIKE_INPUTS, volatility_qlike
from nightcast.errors import ConfigError, InsufficientDataError
from nightcast.io import scratch_folder
from nightcast.memory import collections_skip_what_exists, release
from nightcast.words import count

log = logging.getLogger("nightcast.flows.nightly")


@dataclass
class NightlyResult:
    asof: date
    forecasts: pl.DataFrame
    metrics: pl.DataFrame  # the evaluation of the publishing recipe and the baselines
    record: pl.DataFrame  # the live record of every published forecast scored so far
    waiting: int  # published forecasts whose target date has not come yet
    unpriced: int  # due, but without an adjusted close in the lake to score them
    paths: list[Path]
    quarantined: dict[str, str]
    stale: dict[str, int]
    model_version: str
    checkpoint: Path
    trained_through: date
    evaluation_version: str
    test_start: date
    test_end: date
    attention_summary: str
    sources: dict[int, policy.Source]  # what published at each horizon, and why
    decision: str = ""
    retrained: bool = False
    health: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    publishing: Publishing = Publishing()  # what published from the model (alone or combined), by `sources`

    @property
    def skill(self) -> dict[int, bool]:
        return {h: s.skill for h, s in self.sources.items()}


@dataclass
class MarketClosed:
    day: date
    message: str


def market_day(settings: Settings, run_date: date | None) -> date:
    """The run's date on the exchange's clock."""
    return run_date or settings.schedule.today()


def nightly_report(settings: Settings, asof: date | None, ingest: bool) -> tuple[IngestReport, np.ndarray]:
    """Ingest (or read the lake as stored), then cut at `asof`: rows after it are invisible to every stage.
    Also the stored dates after `asof`, only to say when a night too early for a model would have enough."""
    if ingest:
        with no_heartbeat_of_its_own():
            report = ingest_flow(settings)
    else:
        report = stored_report(settings.paths.lake, settings.source.tickers)
    if asof is None:
        return report, np.empty(0, dtype="datetime64[D]")
    reference = None
    if settings.source.kind == "yfinance":  # judged against the exchange's last session by then, as live
        reference = min(report.reference or asof, sessions_between(asof, 1, settings.publish.calendar)[-1])
    cut = report.as_of(asof, settings.ingest.stale_after, reference, settings.publish.calendar)
    if cut.prices.is_empty() and not report.prices.is_empty():
        raise InsufficientDataError(
            f"--asof {asof}: no stored prices on or before it; the data starts on {report.prices['date'].min()}"
        )
    short = too_little_history(
        asof, cut.prices, report.prices, settings.windows, settings.features, settings.validation.min_rows
    )
    if short:
        raise InsufficientDataError(short)
    later = report.prices["date"].filter(report.prices["date"] > asof).unique().sort().to_numpy()
    return cut, later.astype("datetime64[D]")


def _enough_known(panel: Panel, settings: Settings, asof: date | None, later: np.ndarray) -> None:
    """A night whose features leave too few dates with known targets for the model's spans is refused before
    any training, naming about when the stored data has enough (each later date adds one, once the features'
    warm-up is past)."""
    short = dates_short(panel, settings.windows)
    if not short:
        return
    w = settings.windows
    what = (
        f"{count(short, 'more date')} with known targets needed (windows.test_days {w.test_days} + windows.val_days "
        f"{w.val_days} + twice the longest horizon, after the features' warm-up and windows.lookback {w.lookback})"
    )
    if asof is None:
        raise InsufficientDataError(f"too little history: {what}; supply more history or shorten those spans")
    when = f"about {later[short - 1]}" if later.size >= short else "after the stored data ends"
    raise InsufficientDataError(f"--asof {asof}: too little history: {what}; the first night with enough is {when}")


@flow(name="nightly", flow_run_name=dated_run_name("nightly"), log_prints=True)
def nightly(
    settings: Settings,
    run_date: date | None = None,
    asof: date | None = None,
    ingest: bool = True,
    with_plots: bool = True,
) -> NightlyResult | MarketClosed:
    """Run the nightly job once with `settings`.

    `run_date`: the exchange date of the run (default today). `asof`: replay the night of that past date, from
    data up to it only (lake rows after it are invisible to features, health gate, training, calendar and the
    live record). `ingest=False` reads the lake as stored instead of the source (for `source.tickers`).
    `with_plots=False` writes no PNG (a replay draws only its last night's: ~0.7 s a night on 2 cores).
    """
    with (
        exclusive(settings.paths.data_dir, "nightly"),
        collections_skip_what_exists(),
        scratch_folder(settings.paths.data_dir / "scratch" / "nightly") as scratch,
    ):
        return _nightly(settings, run_date, asof, ingest, with_plots, scratch)


def _set_aside(scratch: Path):
    """How the nightly sets its evaluation's predictions aside (`publish.set_aside`) in its scratch folder."""
    return lambda result: publish.set_aside(result, scratch / "predictions.parquet", AFTER_EVALUATION)


# What the night reads of the evaluation's predictions once its model is chosen (the contest's score, the bands
# of tonight's forecasts, the cross-section table, the volatility table): the rest wait on disk to be published.
AFTER_EVALUATION = ("model", "ticker", "asof_date", "horizon", "target_date", "y_true", "y_pred", "sigma")


class _Laps:
    """Seconds per stage of the run, for its summary line. Each stage ends by handing back what it left
    (`nightcast.memory.release`): the next one starts from what is live, not from a stage's garbage."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, stage: str) -> None:
        release()
        now = time.perf_counter()
        self.timings[stage], self._clock = now - self._clock, now


def _closed(settings: Settings, day: date) -> MarketClosed | None:
    """A yfinance run on a day the exchange is closed stops here (no new bars: nothing to republish)."""
    if (
        settings.source.kind != "yfinance"
        or not settings.schedule.skip_closed_days
        or is_session(day, settings.publish.calendar)
    ):
        return None
    return MarketClosed(
        day,
        f"market closed on {day} ({settings.publish.calendar}): no new bars, nothing republished "
        "(schedule.skip_closed_days = false runs anyway)",
    )


def _current_prices(report: IngestReport, settings: Settings) -> tuple[pl.DataFrame, dict[str, str]]:
    """Prices of the tickers with enough history, and why each other ticker was left out; fails before any
    training when nothing current is left to forecast."""
    prices, short = require_history(report.prices, settings)
    if set(prices["ticker"].unique().to_list()) <= set(report.stale):
        raise InsufficientDataError(
            "nothing current to forecast: every ticker is stale ("
            + ", ".join(f"{t} {count(n, 'session')} behind {report.reference}" for t, n in sorted(report.stale.items()))
            + "); nothing published"
        )
    return prices, {**report.quarantined, **short}


def _closes(ff: FeatureFrame) -> FeatureFrame:
    """The feature frame as the forecast reads it after the panel is built (each row's close): the features
    and targets are in the panel, and holding them twice all night cost ~0.5 GB on 500 tickers x 25 years."""
    return dataclasses.replace(ff, frame=ff.frame.select("ticker", "date", "close"))


def _say_where_asof_landed(logger, asof: date | None, data_asof: date) -> None:
    """A replayed night without data of its own (a weekend, a holiday, no bars yet) publishes as of the latest
    date before it: said, not silent, since it replaces that night's files."""
    if asof is not None and data_asof != asof:
        logger.warning(
            "--asof %s: the latest data on or before it is of %s, so this run publishes as of %s (replacing that "
            "night's files if it was run before)",
            asof,
            data_asof,
            data_asof,
        )


def _nightly(
    settings: Settings, run_date: date | None, asof: date | None, ingest: bool, with_plots: bool, scratch: Path
) -> NightlyResult | MarketClosed:
    logger = get_run_logger()
    if asof is not None:
        settings = settings.model_copy(update={"paths": settings.paths.for_replay()})
    day = asof or market_day(settings, run_date)
    if asof is not None and asof > market_day(settings, None):
        raise ConfigError(f"--asof {asof} is in the future")
    if closed := _closed(settings, day):
        logger.info("%s", closed.message)
        return closed
    lap = _Laps()
    report, later = nightly_report(settings, asof, ingest)
    prices, quarantined = _current_prices(report, settings)
    # the ingest hashed these very rows on its way (with the manifest) when no ticker has been left out since
    fingerprint = report.fingerprint if prices is report.prices and report.fingerprint else lake.fingerprint(prices)
    # the report's rows are read no more: cleared in place, as Prefect holds the ingest flow's result to the end of
    # the run, a second copy of the prices all night when a ticker was left out (~0.3 GB at 500 x 25 years)
    report.prices = report.prices.clear()
    lap("ingest")
    # a replayed night's data is never seen again: caching its features would only fill the disk
    cache = (
        settings
        if asof is None
        else settings.model_copy(update={"runner": settings.runner.model_copy(update={"cache_features": False})})
    )
    ff, panel = features_by_chunk(prices, cache, fingerprint)
    ff = _closes(ff)
    _enough_known(panel, settings, asof, later)
    lap("features")
    data_asof = publish.current_rows(panel, report.stale)[0]
    _say_where_asof_landed(logger, asof, data_asof)
    run_summary.name_run_after(data_asof)
    # choose_model reads the prices only before it trains (the health gate, whether to retrain) and then lets go of
    # them: handed over (a call takes over the references of the arguments it is passed) they are not held here
    # through the evaluation's training, its backtest and the refit too (~0.17 GiB at 500 tickers x 25 years)
    handed = [prices]
    del prices
    aside = _set_aside(scratch)
    choice = choose_model(panel, handed.pop(), report.stale, settings, day, data_asof, fingerprint, set_aside=aside)
    ev = choice.evaluation
    _log_model(logger, panel, choice)
    sources = policy.horizon_sources(
        ev.metrics, choice.publishing.name, BASELINES, settings.backtest.dm_alpha, settings.publish.guardrail
    )
    lap("train+evaluate")
    forecasts = nightly_tasks.forecast(choice, panel, ff, settings, sources, report.stale)
    published = _publish(
        report, forecasts, choice, panel, sources, quarantined, data_asof, settings, bool(asof), with_plots
    )
    logger.info("%s", published.attention_summary)
    lap("forecast+publish")
    return NightlyResult(
        data_asof,
        forecasts,
        ev.metrics,
        published.record,
        published.book.waiting,
        published.book.unpriced,
        published.paths,
        quarantined,
        report.stale,
        choice.version,
        choice.checkpoint,
        date.fromisoformat(choice.published.trained_through),
        choice.evaluation_version,
        ev.test_start.astype(object),
        ev.test_end.astype(object),
        published.attention_summary,
        sources,
        choice.decision,
        choice.retrained,
        choice.health,
        lap.timings,
        choice.publishing,
    )


def _log_model(logger, panel: Panel, choice) -> None:
    ev = choice.evaluation
    logger.info(
        "%d tickers, %d rows, %d features; the recipe was evaluated on %s .. %s; the published model trained "
        "through %s",
        len(panel.tickers),
        len(panel.dates),
        len(panel.features),
        ev.test_start,
        ev.test_end,
        choice.published.trained_through,
    )


@dataclass
class _Published:
    paths: list[Path]
    book: live.ScoredLedger
    record: pl.DataFrame
    attention_summary: str


def _publish(
    report: IngestReport,
    forecasts: pl.DataFrame,
    choice: ModelChoice,
    panel: Panel,
    sources: dict[int, policy.Source],
    quarantined: dict[str, str],
    asof: date,
    settings: Settings,
    replay: bool,
    with_plots: bool,
) -> _Published:
    """Forecast files, the ledger, the live record, the attention report, run.json and the latest pointer (in
    that order: `latest.json` moves last), then the run's artifacts in the UI."""
    bt = settings.backtest
    across = cross_section_table(choice.evaluation.predictions, bt.long_short_k, bt.cost_bps, bt.ic_min_tickers)
    universe = report.summary["ticker"].to_list()
    # another data directory's run publishing into this folder waits for this one (`lock.publishing_into`)
    with publishing_into(settings.paths.out_dir, "nightly"):
        # ended once latest.json has moved
        journal.begin(settings.paths.out_dir, asof, forecasts["run_id"][0], settings.publish.formats)
        paths = nightly_tasks.publish_outputs(asof, forecasts, choice, across, universe, settings)
        # the evaluation's predictions are on disk now (metrics/predictions.parquet): the rest of the night reads
        # only the columns the volatility table scores, and the others go (~0.25 GiB at 500 tickers x 25 years,
        # held through the live record, the attention report and the volatility table, the last of which was the
        # night's peak)
        ev = choice.evaluation
        ev.predictions = ev.predictions.select(c for c in QLIKE_INPUTS if c in ev.predictions.columns)
        paths.append(nightly_tasks.record_in_ledger(forecasts, universe, settings))
        book, record, record_paths = nightly_tasks.live_record(asof, settings, with_plots)
        paths += record_paths
        summary, report_paths = nightly_tasks.inspect_attention(
            choice.published, panel, choice.evaluation.test_start, asof, settings, with_plots
        )
        paths += report_paths
        not_forecast = run_summary.not_forecast(report, forecasts, quarantined)
        volatility = volatility_qlike(panel, ev.predictions) if "sigma" in ev.predictions.columns else None
        warnings = run_summary.data_warnings(report)
        metadata = run_summary.run_metadata(
            choice, sources, record, across, not_forecast, settings, volatility, warnings=warnings
        )
        paths += nightly_tasks.finish_publishing(asof, paths, settings, metadata)
        journal.end(settings.paths.out_dir)
        # a replay's nights would store a few hundred KB of images each in Prefect's database: the files suffice
        run_summary.leave_artifacts(forecasts, paths, asof, settings, images=not replay)
        create_markdown_artifact(
            markdown=nightly_markdown(
                choice.evaluation.metrics,
                across,
                forecasts,
                quarantined,
                choice.version,
                choice.decision,
                choice.health,
                summary,
                run_summary.publishing_markdown(choice, sources),
            )
            + run_summary.warnings_markdown(warnings)
            + "\n\n"
            + live.record_markdown(record, book.waiting, book.unpriced),
            key="nightly-summary",
            description=f"nightcast nightly as of {asof}",
        )
    return _Published(paths, book, record, summary)
