"""What a nightly run says about itself: run.json's metadata, the tickers it did not forecast and why, its
artifacts in the Prefect UI, and the run's name."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import polars as pl
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from features.prices.ingest import IngestReport
from flows import artifacts
from flows.model_choice import ModelChoice
from flows.settings import Settings
from forecasting import metrics, policy
from nightcast.words import count

log = logging.getLogger("nightcast.flows.nightly")


def run_metadata(
    choice: ModelChoice,
    sources: dict[int, policy.Source],
    record: pl.DataFrame,
    across: pl.DataFrame,
    not_forecast: dict,
    settings,
    volatility: pl.DataFrame | None = None,
    warnings: list[str] = (),
) -> dict:
    ev, verdict, name = choice.evaluation, choice.verdict, choice.publishing.name
    pooled = metrics.pooled(ev.metrics).filter(pl.col("model") == name).sort("horizon")
    return {
        "model_version": choice.version,
        "checkpoint": str(choice.checkpoint),
        "trained_through": choice.published.trained_through,
        # what the model published as (the network alone, or combined with the baselines by these weights)
        "published_as": {"model": str(name), "weights": choice.publishing.by_horizon(sorted(map(int, sources)))},
        "evaluation": {
            "model": str(name),
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
        # what this night's ingest repaired in a way the forecasts inherit (a latest close carried from the day
        # before, dates dropped as typos): logged as warnings, and kept with what was published
        "data_warnings": list(warnings),
        # the data-health gate's findings (an implausible move, missing sessions, a stale ticker): they block
        # training, not publishing, so a forecast from a suspect bar is published beside them (a hostile user's
        # 100x unit error published with nothing in run.json); `tickers`: those they name
        "data_health": {"problems": list(choice.health), "tickers": health_tickers(choice.health)},
        "skill": {str(h): s.skill for h, s in sources.items()},
        "sources": {str(h): label for h, label in published_labels(choice, sources).items()},
        "live_record": metrics.pooled(record).to_dicts(),
        # the evaluation judged across tickers: rank IC, long-short after costs, up/down AUC, per horizon
        "across_tickers": across.filter(pl.col("model") == name).to_dicts(),
        # QLIKE of the published volatility forecast against EWMA (0.94) and HAR on the evaluation's origins
        "volatility_qlike": _qlike_by_horizon(volatility),
        "settings": settings.model_dump(mode="json"),
        # the model and training settings the published model was fit with: a kept champion's recipe, which this
        # run's `settings` may no longer say (a changed train.epochs retrains; a champion that wins is refit)
        "model_recipe": choice.published.settings,
    }


def health_tickers(problems: list[str]) -> list[str]:
    """The tickers the health gate's problems name (each problem begins `TICKER: `), sorted."""
    return sorted({p.split(": ", 1)[0] for p in problems if ": " in p})


def _qlike_by_horizon(volatility: pl.DataFrame | None) -> dict | None:
    if volatility is None or volatility.is_empty():
        return None
    out: dict[str, dict[str, float]] = {}
    for r in volatility.sort("horizon", "forecast").iter_rows(named=True):
        out.setdefault(str(r["horizon"]), {})[r["forecast"]] = r["qlike"]
    return out


def published_labels(choice: ModelChoice, sources: dict[int, policy.Source]) -> dict[int, str]:
    """What each horizon's forecast is, as the files' `source_model` says (`Publishing.labels`: a combination
    that gives the network no weight is the baseline it leaves); run.json and the run summary say the same."""
    horizons = sorted(sources)
    return dict(zip(horizons, choice.publishing.labels([sources[h].model for h in horizons]), strict=True))


def publishing_markdown(choice: ModelChoice, sources: dict[int, policy.Source]) -> str:
    """What published at each horizon and, for a combination, its weights (the run summary's section)."""
    weights = choice.publishing.by_horizon(sorted(sources)) or {}
    labels = published_labels(choice, sources)
    lines = ["| horizon | published | weights: model, hist_mean, random walk |", "|---|---|---|"]
    for h, s in sorted(sources.items()):
        w = weights.get(str(h)) if s.model == choice.publishing.name else None
        shares = ", ".join(f"{v:.3f}" for v in w.values()) if w else ""
        lines.append(f"| {h} | {labels[h]} | {shares} |")
    return "\n".join(lines)


def not_forecast(report: IngestReport, forecasts: pl.DataFrame, quarantined: dict[str, str]) -> dict[str, str]:
    """Every ticker of the run's universe without a forecast, and why (stale, quarantined, lagging)."""
    done = set(forecasts["ticker"].unique().to_list())
    why = {t: f"stale: {count(n, 'session')} behind {report.reference}" for t, n in report.stale.items()} | quarantined
    return {t: why.get(t, "no bar on the as-of date") for t in report.summary["ticker"].to_list() if t not in done}


def leave_artifacts(forecasts: pl.DataFrame, paths: list[Path], asof: date, settings: Settings, images: bool) -> None:
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


def name_run_after(asof: date) -> None:
    """Rename the running flow run after its as-of date, once the data has told us (best effort)."""
    if flow_run.id is None:
        return
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=f"nightly-asof-{asof.isoformat()}")
    except Exception as exc:  # the name is cosmetic: never fail a run over it
        log.debug("could not rename the flow run: %s", exc)


def data_warnings(report: IngestReport) -> list[str]:
    """The ingest's findings marked as warnings (quarantines aside: those are `not_forecast`), one line each."""
    return [str(f) for f in report.findings if f.warn]


def warnings_markdown(warnings: list[str]) -> str:
    """The run summary's section of data warnings; empty without any."""
    if not warnings:
        return ""
    return "\n\n**Data warnings** (the forecasts inherit these repairs)\n\n" + "\n".join(f"- {w}" for w in warnings)
