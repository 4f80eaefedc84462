"""The nightly flow: ingest -> features -> champion or challenger (evaluate, refit) -> forecast -> publish ->
ledger -> live record.

Tasks are thin wrappers over `features` and `forecasting`; the flow only puts them in order and leaves
artifacts in the UI. `asof` replays a past night: every stage sees only data up to that date.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from features import lake
from features.build import FeatureFrame
from features.calendar import is_session, sessions_between
from features.errors import ConfigError, InsufficientDataError
from features.ingest import IngestReport, stored_report
from features.windows import Panel, known_ends, refit_split
from flows import artifacts
from flows.artifacts import nightly_markdown
from flows.ingest import ingest_flow
from flows.lock import exclusive
from flows.model_choice import ModelChoice, choose_model, evaluation_settings
from flows.settings import Settings
from flows.tasks import features_by_chunk, require_history
from forecasting import attention, ledger, live, metrics, plots, policy, publish, train
from forecasting.backtest import conformal_widths, make_forecasters
from forecasting.names import BASELINES, PUBLISHING_MODEL

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

    @property
    def skill(self) -> dict[int, bool]:
        return {h: s.skill for h, s in self.sources.items()}


def _bounds(
    choice: ModelChoice,
    panel: Panel,
    quantiles: np.ndarray | None,
    y: np.ndarray,
    sources: list[str],
    asof: date,
    settings: Settings,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Interval bounds (log returns) per row and horizon: the model's quantile head under
    `backtest.interval = "quantile"`, otherwise conformal, from the evaluation's out-of-sample residuals."""
    bt = settings.backtest
    if bt.interval == "none":
        return None
    widths = conformal_widths(choice.evaluation.predictions, asof, bt.coverage, bt.conformal_window, bt.conformal_min)
    w = np.array([widths.get((s, h), np.nan) for s, h in zip(sources, panel.horizons, strict=True)])
    lower, upper = y - w, y + w
    if bt.interval == "quantile" and quantiles is not None:
        from_model = np.array([s == PUBLISHING_MODEL for s in sources])
        lower[:, from_model], upper[:, from_model] = quantiles[:, from_model, 0], quantiles[:, from_model, -1]
    return lower, upper


@task(name="forecast", cache_policy=NO_CACHE)
def forecast(
    choice: ModelChoice,
    panel: Panel,
    ff: FeatureFrame,
    settings: Settings,
    sources: dict[int, policy.Source],
    stale: dict[str, int],
) -> pl.DataFrame:
    """Forecasts from every current ticker's last row: the published model, or a baseline refit on every
    realised label where the guardrail says so."""
    asof, rows, left_out = publish.current_rows(panel, stale)
    for ticker in left_out:
        log.warning("%s is not current on %s (stale or lagging): not forecast", ticker, asof)
    horizons = panel.horizons
    by_horizon = [sources[h].model for h in horizons]
    published = train.predict(choice.published, panel, rows)  # the mean and, with a quantile head, its band
    predictions = {PUBLISHING_MODEL: published.mean}
    needed = sorted(set(by_horizon) - {PUBLISHING_MODEL})
    if needed:
        split = refit_split(panel, settings.windows.lookback, np.datetime64(asof, "D"))
        bt = evaluation_settings(settings).model_copy(update={"models": needed})
        for baseline in make_forecasters(bt, settings.model, settings.train, settings.windows.lookback):
            baseline.fit(panel, split)
            predictions[baseline.name] = baseline.predict(panel, rows)
    y = np.column_stack([predictions[s][:, k] for k, s in enumerate(by_horizon)]).astype(np.float64)
    for h in horizons:
        s = sources[h]
        why = "is significantly worse than the random walk" if s.worse else "has no skill"
        if s.model != PUBLISHING_MODEL:
            log.warning("horizon %d: the model %s on the evaluation span; publishing %s instead", h, why, s.model)
        elif not s.skill:
            log.warning("NO SKILL at horizon %d: the model %s; published with skill=false", h, why)
    close = ff.frame.sort("ticker", "date")["close"].to_numpy()[rows]
    ev = choice.evaluation
    meta = {
        "run_id": str(flow_run.id or "local"),
        "model_version": choice.version,
        "trained_through": date.fromisoformat(choice.published.trained_through),
        "eval_version": choice.evaluation_version,
        "eval_start": ev.test_start.astype(object),
        "eval_end": ev.test_end.astype(object),
    }
    return publish.forecast_frame(
        panel,
        rows,
        y,
        _bounds(choice, panel, published.quantiles, y, by_horizon, asof, settings),
        close,
        asof,
        settings.publish.calendar,
        by_horizon,
        [sources[h].skill and sources[h].model == PUBLISHING_MODEL for h in horizons],
        meta,
    )


@task(name="inspect attention", cache_policy=NO_CACHE)
def inspect_attention(
    trained: train.TrainedModel, panel: Panel, test_start: np.datetime64, asof: date, settings: Settings
) -> tuple[str, list[Path]]:
    """Mean attention of the published model per lag / input variable over the evaluation span: tables, a
    heatmap PNG and a summary."""
    known = known_ends(panel, settings.windows.lookback)
    report = attention.attention_report(trained, panel, known[panel.dates[known] >= test_start])
    if report is None:
        return "the model has no attention (plain LSTM)", []
    folder = publish.partition_dir(settings.paths.out_dir, "reports", asof)
    paths = publish.write_frame(report.per_lag, folder, "attention_lags", settings.publish.formats)
    if report.per_feature is not None:
        paths += publish.write_frame(report.per_feature, folder, "attention_features", settings.publish.formats)
    paths.append(plots.plot_attention(report, folder / "attention.png"))
    return report.summary, paths


@task(name="publish", cache_policy=NO_CACHE)
def publish_outputs(
    asof: date, forecasts: pl.DataFrame, choice: ModelChoice, universe: list[str], settings: Settings
) -> list[Path]:
    out, formats = settings.paths.out_dir, settings.publish.formats
    folder = publish.partition_dir(out, "forecasts", asof)
    merged = publish.merge_forecasts(folder, "forecasts", forecasts, universe, formats)
    paths = publish.write_frame(merged, folder, "forecasts", formats)
    metrics_dir = publish.partition_dir(out, "metrics", asof)
    paths += publish.write_frame(choice.evaluation.metrics, metrics_dir, "metrics", formats)
    # Parquet only: every evaluation origin of every model (25k rows on the sample), rewritten each night; as CSV
    # it was 3 MB a night (400 MB for a half-year replay)
    paths += publish.write_frame(choice.evaluation.predictions, metrics_dir, "predictions", ["parquet"])
    return paths


@task(name="ledger", cache_policy=NO_CACHE)
def record_in_ledger(forecasts: pl.DataFrame, settings: Settings) -> Path:
    """Every published forecast into the ledger; a rerun of the date replaces its rows, never duplicates."""
    return ledger.write_partition(settings.paths.out_dir / "ledger", forecasts)


@task(name="live record", cache_policy=NO_CACHE)
def live_record(asof: date, settings: Settings) -> tuple[live.ScoredLedger, pl.DataFrame, list[Path]]:
    """Score every ledger forecast whose target date has passed by `asof` against the lake's adjusted closes."""
    book = live.score_ledger(settings.paths.out_dir / "ledger", settings.paths.lake, asof)
    record = live.live_record(book.scored)
    folder = publish.partition_dir(settings.paths.out_dir, "record", asof)
    paths = publish.write_frame(record, folder, "record", settings.publish.formats)
    paths.append(plots.plot_live_record(book.scored, folder / "live_record.png"))
    return book, record, paths


@task(name="run metadata and latest pointer", cache_policy=NO_CACHE)
def finish_publishing(asof: date, paths: list[Path], settings: Settings, metadata: dict) -> list[Path]:
    """run.json beside the forecasts, then move `latest.json` to this as-of date (last, once all files exist)."""
    folder = publish.partition_dir(settings.paths.out_dir, "forecasts", asof)
    meta = publish.write_run_metadata(
        folder, {"run_id": str(flow_run.id or "local"), "asof_date": asof, **metadata, "files": [str(p) for p in paths]}
    )
    pointer = publish.update_latest(settings.paths.out_dir, asof, [*paths, meta])
    return [meta] + ([pointer] if pointer else [])


def _run_metadata(
    choice: ModelChoice, sources: dict[int, policy.Source], record: pl.DataFrame, not_forecast: dict, settings
) -> dict:
    ev, verdict = choice.evaluation, choice.verdict
    pooled = metrics.pooled(ev.metrics).filter(pl.col("model") == PUBLISHING_MODEL).sort("horizon")
    return {
        "model_version": choice.version,
        "checkpoint": str(choice.checkpoint),
        "trained_through": choice.published.trained_through,
        "evaluation": {
            "version": choice.evaluation_version,
            "cutoff": choice.evaluation_model.cutoff,
            "origins": [str(ev.test_start), str(ev.test_end)],
            "mse_ratio": {str(r["horizon"]): r["mse_ratio"] for r in pooled.iter_rows(named=True)},
            "dm_pvalue": {str(r["horizon"]): r["dm_pvalue"] for r in pooled.iter_rows(named=True)},
        },
        "decision": choice.decision,
        "retrained": choice.retrained,
        "champion_vs_challenger": None
        if verdict is None or verdict.n_forecasts == 0
        else {
            "champion_score": verdict.champion_score,
            "challenger_score": verdict.challenger_score,
            "score": "mean over horizons of the MSE ratio to the random walk",
            "origins": [str(verdict.first_origin), str(verdict.last_origin)],
            "forecasts": verdict.n_forecasts,
        },
        "data_fingerprint": choice.published.fingerprint,
        "not_forecast": not_forecast,
        "skill": {str(h): s.skill for h, s in sources.items()},
        "sources": {str(h): s.model for h, s in sources.items()},
        "live_record": metrics.pooled(record).to_dicts(),
        "settings": settings.model_dump(mode="json"),
    }


def _not_forecast(report: IngestReport, forecasts: pl.DataFrame, quarantined: dict[str, str]) -> dict[str, str]:
    """Every ticker of the run's universe without a forecast, and why (stale, quarantined, lagging)."""
    done = set(forecasts["ticker"].unique().to_list())
    why = {t: f"stale: {n} sessions behind {report.reference}" for t, n in report.stale.items()} | quarantined
    return {t: why.get(t, "no bar on the as-of date") for t in report.summary["ticker"].to_list() if t not in done}


def _artifacts(forecasts: pl.DataFrame, paths: list[Path], asof: date, settings: Settings, images: bool) -> None:
    """The forecasts as a table, the plots as images (`images`) and the files written, for the Prefect UI."""
    create_table_artifact(
        table=artifacts.forecast_rows(forecasts, settings.backtest.coverage),
        key="nightly-forecasts",
        description=f"forecasts published as of {asof} (all columns: the forecasts file)",
    )
    shown = {
        "attention.png": ("attention-heatmap", "mean temporal attention per ticker and lag over the evaluation span"),
        "live_record.png": (
            "live-record",
            "cumulative squared error of the published forecasts minus the random walk's",
        ),
    }
    for path in paths if images else []:
        if path.name in shown:
            artifacts.image_artifact(path, *shown[path.name])
    create_markdown_artifact(
        markdown=artifacts.files_markdown(paths, f"Files written as of {asof}"),
        key="nightly-files",
        description="where the forecasts, metrics, ledger and plots were written",
    )


def _name_run_after(asof: date) -> None:
    """Rename the running flow run after its as-of date, once the data has told us (best effort)."""
    if flow_run.id is None:
        return
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=f"nightly-asof-{asof.isoformat()}")
    except Exception as exc:  # the name is cosmetic: never fail a run over it
        log.debug("could not rename the flow run: %s", exc)


def _run_name() -> str:
    params = flow_run.parameters or {}
    day = params.get("asof") or params.get("run_date")
    return f"nightly-{day or date.today().isoformat()}"


@dataclass
class MarketClosed:
    day: date
    message: str


def market_day(settings: Settings, run_date: date | None) -> date:
    """The run's date on the exchange's clock."""
    return run_date or datetime.now(ZoneInfo(settings.schedule.timezone)).date()


def nightly_report(settings: Settings, asof: date | None, ingest: bool) -> IngestReport:
    """Ingest (or read the lake as stored), then cut at `asof`: rows after it are invisible to every stage."""
    if ingest:
        report = ingest_flow(settings)
    else:
        report = stored_report(settings.paths.lake, settings.source.tickers)
    if asof is None:
        return report
    reference = None
    if settings.source.kind == "yfinance":  # judged against the exchange's last session by then, as live
        reference = min(report.reference or asof, sessions_between(asof, 1, settings.publish.calendar)[-1])
    return report.as_of(asof, settings.ingest.stale_after, reference)


@flow(name="nightly", flow_run_name=_run_name, log_prints=True)
def nightly(
    settings: Settings, run_date: date | None = None, asof: date | None = None, ingest: bool = True
) -> NightlyResult | MarketClosed:
    """Run the nightly job once with `settings`.

    `run_date`: the exchange date of the run (default today). `asof`: replay the night of that past date, from
    data up to it only (lake rows after it are invisible to features, health gate, training, calendar and the
    live record). `ingest=False` reads the lake as stored instead of the source (for `source.tickers`).
    """
    with exclusive(settings.paths.data_dir, "nightly"):
        return _nightly(settings, run_date, asof, ingest)


def _nightly(
    settings: Settings, run_date: date | None, asof: date | None, ingest: bool
) -> NightlyResult | MarketClosed:
    logger = get_run_logger()
    if asof is not None:
        settings = settings.model_copy(update={"paths": settings.paths.for_replay()})
    day = asof or market_day(settings, run_date)
    if asof is not None and asof > market_day(settings, None):
        raise ConfigError(f"--asof {asof} is in the future")
    if (
        settings.source.kind == "yfinance"
        and settings.schedule.skip_closed_days
        and not is_session(day, settings.publish.calendar)
    ):
        message = (
            f"market closed on {day} ({settings.publish.calendar}): no new bars, nothing republished "
            "(schedule.skip_closed_days = false runs anyway)"
        )
        logger.info("%s", message)
        return MarketClosed(day, message)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    report = nightly_report(settings, asof, ingest)
    prices, short = require_history(report.prices, settings)
    if set(prices["ticker"].unique().to_list()) <= set(report.stale):  # before any training: fail fast
        raise InsufficientDataError(
            "nothing current to forecast: every ticker is stale ("
            + ", ".join(f"{t} {n} sessions behind {report.reference}" for t, n in sorted(report.stale.items()))
            + "); nothing published"
        )
    quarantined = {**report.quarantined, **short}
    fingerprint = lake.fingerprint(prices)
    lap("ingest")
    # a replayed night's data is never seen again: caching its features would only fill the disk
    cache = (
        settings
        if asof is None
        else settings.model_copy(update={"runner": settings.runner.model_copy(update={"cache_features": False})})
    )
    ff, panel = features_by_chunk(prices, cache, fingerprint)
    lap("features")
    data_asof = publish.current_rows(panel, report.stale)[0]
    _name_run_after(data_asof)
    choice = choose_model(panel, prices, report.stale, settings, day, data_asof, fingerprint)
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
    sources = policy.horizon_sources(
        ev.metrics, PUBLISHING_MODEL, BASELINES, settings.backtest.dm_alpha, settings.publish.guardrail
    )
    lap("train+evaluate")
    forecasts = forecast(choice, panel, ff, settings, sources, report.stale)
    universe = report.summary["ticker"].to_list()
    paths = publish_outputs(data_asof, forecasts, choice, universe, settings)
    paths.append(record_in_ledger(forecasts, settings))
    book, record, record_paths = live_record(data_asof, settings)
    paths += record_paths
    attention_summary, report_paths = inspect_attention(choice.published, panel, ev.test_start, data_asof, settings)
    paths += report_paths
    paths += finish_publishing(
        data_asof,
        paths,
        settings,
        _run_metadata(choice, sources, record, _not_forecast(report, forecasts, quarantined), settings),
    )
    # a replay's nights would store a few hundred KB of images each in Prefect's database: the files suffice
    _artifacts(forecasts, paths, data_asof, settings, images=asof is None)
    logger.info("%s", attention_summary)
    lap("forecast+publish")
    create_markdown_artifact(
        markdown=nightly_markdown(
            ev.metrics, forecasts, quarantined, choice.version, choice.decision, choice.health, attention_summary
        )
        + "\n\n"
        + live.record_markdown(record, book.waiting, book.unpriced),
        key="nightly-summary",
        description=f"nightcast nightly as of {data_asof}",
    )
    return NightlyResult(
        data_asof,
        forecasts,
        ev.metrics,
        record,
        book.waiting,
        book.unpriced,
        paths,
        quarantined,
        report.stale,
        choice.version,
        choice.checkpoint,
        date.fromisoformat(choice.published.trained_through),
        choice.evaluation_version,
        ev.test_start.astype(object),
        ev.test_end.astype(object),
        attention_summary,
        sources,
        choice.decision,
        choice.retrained,
        choice.health,
        timings,
    )
