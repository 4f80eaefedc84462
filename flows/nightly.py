"""The nightly flow: ingest -> features -> fit and evaluate against baselines on the last test_days
-> forecast (with the skill guardrail) -> inspect attention -> publish.

Tasks are thin wrappers over `features` and `forecasting`; the flow only puts
them in order and leaves artifacts in the UI.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from features import lake
from features.build import FeatureFrame
from features.calendar import is_session
from features.windows import Panel, known_ends
from flows.ingest import ingest_flow
from flows.model_choice import BASELINES, MODEL_NAME, choose_model
from flows.settings import Settings
from flows.tasks import features_by_chunk, require_history
from forecasting import metrics, publish, reports, train
from forecasting.backtest import BacktestResult

log = logging.getLogger("nightcast.flows.nightly")


@dataclass
class NightlyResult:
    asof: date
    forecasts: pl.DataFrame
    metrics: pl.DataFrame
    paths: list[Path]
    quarantined: dict[str, str]
    stale: dict[str, int]
    model_version: str
    checkpoint: Path
    test_start: date
    test_end: date
    attention_summary: str
    skill: dict[int, bool]
    decision: str = ""
    health: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@task(name="forecast", cache_policy=NO_CACHE)
def forecast(
    result: BacktestResult, panel: Panel, ff: FeatureFrame, settings: Settings, version: str, skill: dict[int, bool]
) -> tuple[date, pl.DataFrame]:
    """Forecasts from every current ticker's last row; horizons without skill are flagged or replaced."""
    asof, rows = publish.current_rows(panel)
    by_name = {f.name: f for f in result.forecasters}
    y = by_name[MODEL_NAME].predict(panel, rows)
    source = np.full(y.shape, MODEL_NAME, dtype=object)
    horizons = [int(t.removeprefix("y_h")) for t in panel.targets]
    baseline_forecasts: dict[str, np.ndarray] = {}
    pooled = result.metrics.filter(pl.col("ticker") == metrics.POOLED)
    for k, h in enumerate(horizons):
        if skill.get(h, False):
            continue
        if settings.publish.guardrail == "baseline":
            candidates = pooled.filter(
                pl.col("horizon") == h, pl.col("model").is_in([b for b in BASELINES if b in by_name])
            )
            best = candidates.sort("mse")["model"][0]
            if best not in baseline_forecasts:
                baseline_forecasts[best] = by_name[best].predict(panel, rows)
            y[:, k] = baseline_forecasts[best][:, k]
            source[:, k] = best
            log.warning("NO SKILL at horizon %d: publishing the best baseline (%s) instead of the model", h, best)
        else:
            log.warning(
                "NO SKILL at horizon %d: the model does not beat the random walk significantly on the "
                "last %d days; forecasts are published with skill=false",
                h,
                settings.windows.test_days,
            )
    close = ff.frame.sort("ticker", "date")["close"].to_numpy()[rows]
    run_id = str(flow_run.id or "local")
    frame = publish.forecast_frame(panel, rows, y, close, asof, run_id, version, settings.publish.calendar)
    return asof, frame.with_columns(
        pl.col("horizon").replace_strict(skill, default=False, return_dtype=pl.Boolean).alias("skill"),
        pl.Series("source_model", source.reshape(-1).tolist()),
    )


@task(name="inspect attention", cache_policy=NO_CACHE)
def inspect_attention(
    trained: train.TrainedModel, panel: Panel, test_start: np.datetime64, asof: date, settings: Settings
) -> tuple[str, list[Path]]:
    """Mean attention per lag / input variable on the test span: tables, a heatmap PNG and a summary."""
    known = known_ends(panel, settings.windows.lookback)
    report = reports.attention_report(trained, panel, known[panel.dates[known] >= test_start])
    if report is None:
        return "the model has no attention (plain LSTM)", []
    folder = publish.partition_dir(settings.paths.out_dir, "reports", asof)
    paths = publish.write_frame(report.per_lag, folder, "attention_lags", settings.publish.formats)
    if report.per_feature is not None:
        paths += publish.write_frame(report.per_feature, folder, "attention_features", settings.publish.formats)
    paths.append(reports.plot_attention(report, folder / "attention.png"))
    return report.summary, paths


@task(name="publish", cache_policy=NO_CACHE)
def publish_outputs(asof: date, forecasts: pl.DataFrame, result: BacktestResult, settings: Settings) -> list[Path]:
    out, formats = settings.paths.out_dir, settings.publish.formats
    paths = publish.write_frame(forecasts, publish.partition_dir(out, "forecasts", asof), "forecasts", formats)
    metrics_dir = publish.partition_dir(out, "metrics", asof)
    paths += publish.write_frame(result.metrics, metrics_dir, "metrics", formats)
    paths += publish.write_frame(result.predictions, metrics_dir, "predictions", formats)
    return paths


@task(name="run metadata and latest pointer", cache_policy=NO_CACHE)
def finish_publishing(
    asof: date,
    paths: list[Path],
    settings: Settings,
    version: str,
    checkpoint: Path,
    fingerprint: str,
    skill: dict[int, bool],
) -> list[Path]:
    """run.json beside the forecasts, then move `latest.json` to this as-of date (last, once all files exist)."""
    meta = publish.write_run_metadata(
        publish.partition_dir(settings.paths.out_dir, "forecasts", asof),
        {
            "run_id": str(flow_run.id or "local"),
            "asof_date": asof,
            "model_version": version,
            "checkpoint": str(checkpoint),
            "data_fingerprint": fingerprint,
            "skill": {str(h): v for h, v in skill.items()},
            "settings": settings.model_dump(mode="json"),
            "files": [str(p) for p in paths],
        },
    )
    pointer = publish.update_latest(settings.paths.out_dir, asof, [*paths, meta])
    return [meta] + ([pointer] if pointer else [])


def _artifacts(forecasts: pl.DataFrame, paths: list[Path]) -> None:
    """A table of the forecasts and links to the published files and plots, for the Prefect UI."""
    rows = forecasts.with_columns(pl.col(pl.Date).cast(pl.String)).to_dicts()
    create_table_artifact(table=rows, key="nightly-forecasts", description="the forecasts just published")
    for path in paths:
        if path.suffix in (".parquet", ".png", ".json") and path.name != "latest.json":
            key = re.sub(r"[^a-z0-9-]+", "-", f"{path.parent.parent.name}-{path.stem}-{path.suffix[1:]}".lower())
            create_link_artifact(link=path.resolve().as_uri(), link_text=str(path), key=key.strip("-"))


def _markdown(table: pl.DataFrame, forecasts: pl.DataFrame, quarantined: dict[str, str], version: str) -> str:
    lines = [
        f"# nightcast nightly — as of {forecasts['asof_date'][0]}",
        "",
        f"model `{version}`",
        "",
        "| horizon | model | MSE | ratio vs random walk | hit rate | always up | DM p |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.filter(pl.col("ticker") == metrics.POOLED).iter_rows(named=True):
        ratio = "" if r["mse_ratio"] is None else f"{r['mse_ratio']:.4f}"
        p = "" if r["dm_pvalue"] is None else f"{r['dm_pvalue']:.3f}"
        lines.append(
            f"| {r['horizon']} | {r['model']} | {r['mse']:.3e} | {ratio} | {r['hit_rate']:.3f} | "
            f"{r['up_rate']:.3f} | {p} |"
        )
    if quarantined:
        lines += ["", "## Quarantined tickers", ""] + [f"- {v}" for v in quarantined.values()]
    lines += [
        "",
        "## Forecasts",
        "",
        "| ticker | horizon | target date | last price | predicted price | skill | from |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in forecasts.iter_rows(named=True):
        lines.append(
            f"| {r['ticker']} | {r['horizon']} | {r['target_date']} | {r['last_price']:.2f} | "
            f"{r['pred_price']:.2f} | {r['skill']} | {r['source_model']} |"
        )
    return "\n".join(lines)


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
    run_date = flow_run.parameters.get("run_date") if flow_run.parameters else None
    return f"nightly-{run_date or date.today().isoformat()}"


@dataclass
class MarketClosed:
    day: date
    message: str


def market_day(settings: Settings, run_date: date | None) -> date:
    """The run's date on the exchange's clock."""
    return run_date or datetime.now(ZoneInfo(settings.schedule.timezone)).date()


@flow(name="nightly", flow_run_name=_run_name, log_prints=True)
def nightly(settings: Settings, run_date: date | None = None) -> NightlyResult | MarketClosed:
    """Run the whole nightly job once with `settings` (`run_date`: the exchange date of the run, default today)."""
    logger = get_run_logger()
    day = market_day(settings, run_date)
    if (
        settings.source.kind == "yfinance"
        and settings.schedule.skip_closed_days
        and not is_session(day, settings.publish.calendar)
    ):
        message = f"market closed on {day} ({settings.publish.calendar}): no new bars, nothing republished"
        logger.info("%s", message)
        return MarketClosed(day, message)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    report = ingest_flow(settings)
    prices, short = require_history(report.prices, settings)
    quarantined = {**report.quarantined, **short}
    fingerprint = lake.fingerprint(prices)
    lap("ingest")
    ff, panel = features_by_chunk(prices, settings, fingerprint)
    lap("features")
    choice = choose_model(panel, prices, report.stale, settings, fingerprint, market_day(settings, run_date))
    result, trained, version, checkpoint = choice.result, choice.trained, choice.version, Path(choice.checkpoint)
    logger.info(
        "%d tickers, %d rows, %d features; evaluated on %s .. %s",
        len(panel.tickers),
        len(panel.dates),
        len(panel.features),
        result.test_start,
        result.test_end,
    )
    skill = metrics.skill(result.metrics, MODEL_NAME, settings.backtest.dm_alpha)
    lap("train+evaluate")
    _name_run_after(publish.current_rows(panel)[0])
    asof, forecasts = forecast(result, panel, ff, settings, version, skill)
    paths = publish_outputs(asof, forecasts, result, settings)
    attention_summary, report_paths = inspect_attention(trained, panel, result.test_start, asof, settings)
    paths += report_paths
    paths += finish_publishing(asof, paths, settings, version, checkpoint, fingerprint, skill)
    _artifacts(forecasts, paths)
    logger.info("%s", attention_summary)
    lap("forecast+publish")
    create_markdown_artifact(
        markdown=_markdown(result.metrics, forecasts, quarantined, version)
        + f"\n\n## Model\n\n{choice.decision}\n"
        + "".join(f"\n- data health: {p}" for p in choice.health)
        + "\n\n## Attention\n\n"
        + attention_summary,
        key="nightly-summary",
        description=f"nightcast nightly as of {asof}",
    )
    return NightlyResult(
        asof,
        forecasts,
        result.metrics,
        paths,
        quarantined,
        report.stale,
        version,
        checkpoint,
        result.test_start.astype(object),
        result.test_end.astype(object),
        attention_summary,
        skill,
        choice.decision,
        choice.health,
        timings,
    )
