"""The nightly flow: load -> validate -> lake -> denoise + features -> windows -> train
-> evaluate against the random walk -> forecast -> publish.

Tasks are thin wrappers over `features` and `forecasting`; the flow only puts
them in order, adds retries on network I/O, and leaves artifacts in the UI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from features import denoise, lake, validate
from features.build import FeatureFrame, build_features
from features.errors import InsufficientDataError
from features.windows import Panel, Splits, date_splits, make_panel
from flows.ingest import ingest_flow
from flows.settings import Settings
from forecasting import backtest, metrics, publish, reports, train

MODEL_NAME = "attention_lstm"


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
    timings: dict[str, float] = field(default_factory=dict)


@task(name="require history", cache_policy=NO_CACHE)
def require_history(prices: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame, dict[str, str]]:
    kept, findings = validate.require_history(prices, settings.validation.min_rows)
    if kept.is_empty():
        raise InsufficientDataError(
            f"no ticker has validation.min_rows={settings.validation.min_rows} rows: "
            + "; ".join(str(f) for f in findings)
        )
    return kept, {f.ticker: str(f) for f in findings}


@task(name="features", cache_policy=NO_CACHE)
def make_features(prices: pl.DataFrame, settings: Settings) -> FeatureFrame:
    return build_features(denoise.denoise(prices.sort("ticker", "date"), settings.denoise), settings.features)


@task(name="windows", cache_policy=NO_CACHE)
def make_windows(ff: FeatureFrame, settings: Settings) -> tuple[Panel, Splits]:
    panel = make_panel(ff, settings.features.max_horizon)
    return panel, date_splits(panel, settings.windows)


@task(name="train", cache_policy=NO_CACHE)
def train_model(
    panel: Panel, splits: Splits, settings: Settings, fingerprint: str
) -> tuple[train.TrainedModel, str, Path]:
    trained = train.fit(panel, splits, settings.model, settings.train, settings.windows.lookback, fingerprint)
    version = f"{MODEL_NAME}-{train.weights_digest(trained.model)}"
    checkpoint = train.save_checkpoint(trained, settings.paths.models / f"{version}.pt")
    return trained, version, checkpoint


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(trained: train.TrainedModel, panel: Panel, splits: Splits) -> tuple[pl.DataFrame, pl.DataFrame]:
    predictions = backtest.holdout_predictions(trained, panel, splits, MODEL_NAME)
    return predictions, metrics.horizon_table(predictions, MODEL_NAME)


@task(name="forecast", cache_policy=NO_CACHE)
def forecast(
    trained: train.TrainedModel, panel: Panel, ff: FeatureFrame, settings: Settings, model_version: str
) -> tuple[date, pl.DataFrame]:
    asof, rows = publish.current_rows(panel)
    y_pred = train.predict(trained, panel, rows).mean
    close = ff.frame.sort("ticker", "date")["close"].to_numpy()[rows]
    run_id = str(flow_run.id or "local")
    frame = publish.forecast_frame(panel, rows, y_pred, close, asof, run_id, model_version, settings.publish.calendar)
    return asof, frame


@task(name="inspect attention", cache_policy=NO_CACHE)
def inspect_attention(
    trained: train.TrainedModel, panel: Panel, splits: Splits, asof: date, settings: Settings
) -> tuple[str, list[Path]]:
    """Mean attention per lag / input variable on the test span: tables, a heatmap PNG and a summary."""
    report = reports.attention_report(trained, panel, splits.test)
    if report is None:
        return "the model has no attention (plain LSTM)", []
    folder = publish.partition_dir(settings.paths.out_dir, "reports", asof)
    paths = publish.write_frame(report.per_lag, folder, "attention_lags", settings.publish.formats)
    if report.per_feature is not None:
        paths += publish.write_frame(report.per_feature, folder, "attention_features", settings.publish.formats)
    paths.append(reports.plot_attention(report, folder / "attention.png"))
    return report.summary, paths


@task(name="publish", cache_policy=NO_CACHE)
def publish_outputs(
    asof: date, forecasts: pl.DataFrame, table: pl.DataFrame, predictions: pl.DataFrame, settings: Settings
) -> list[Path]:
    out, formats = settings.paths.out_dir, settings.publish.formats
    paths = publish.write_frame(forecasts, publish.partition_dir(out, "forecasts", asof), "forecasts", formats)
    metrics_dir = publish.partition_dir(out, "metrics", asof)
    paths += publish.write_frame(table, metrics_dir, "metrics", formats)
    paths += publish.write_frame(predictions, metrics_dir, "predictions", formats)
    return paths


def _markdown(result_table: pl.DataFrame, forecasts: pl.DataFrame, quarantined: dict[str, str], version: str) -> str:
    lines = [
        f"# nightcast nightly — as of {forecasts['asof_date'][0]}",
        "",
        f"model `{version}`",
        "",
        "| horizon | model MSE | random-walk MSE | ratio | hit rate | always-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in result_table.iter_rows(named=True):
        lines.append(
            f"| {r['horizon']} | {r['model_mse']:.3e} | {r['baseline_mse']:.3e} | {r['mse_ratio']:.3f} "
            f"| {r['hit_rate']:.3f} | {r['up_rate']:.3f} |"
        )
    if quarantined:
        lines += ["", "## Quarantined tickers", ""] + [f"- {v}" for v in quarantined.values()]
    lines += [
        "",
        "## Forecasts",
        "",
        "| ticker | horizon | target date | last price | predicted price |",
        "|---|---|---|---|---|",
    ]
    for r in forecasts.iter_rows(named=True):
        lines.append(
            f"| {r['ticker']} | {r['horizon']} | {r['target_date']} | {r['last_price']:.2f} | {r['pred_price']:.2f} |"
        )
    return "\n".join(lines)


def _run_name() -> str:
    return f"nightly-{date.today().isoformat()}"


@flow(name="nightly", flow_run_name=_run_name, log_prints=True)
def nightly(settings: Settings) -> NightlyResult:
    """Run the whole nightly job once with `settings`."""
    logger = get_run_logger()
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
    ff = make_features(prices, settings)
    panel, splits = make_windows(ff, settings)
    logger.info(
        "%d tickers, %d rows, %d features; train < %s <= val < %s <= test <= %s",
        len(panel.tickers),
        len(panel.dates),
        len(panel.features),
        splits.val_start,
        splits.test_start,
        splits.test_end,
    )
    lap("features")
    trained, version, checkpoint = train_model(panel, splits, settings, fingerprint)
    lap("train")
    predictions, table = evaluate(trained, panel, splits)
    asof, forecasts = forecast(trained, panel, ff, settings, version)
    paths = publish_outputs(asof, forecasts, table, predictions, settings)
    attention_summary, report_paths = inspect_attention(trained, panel, splits, asof, settings)
    paths += report_paths
    get_run_logger().info("%s", attention_summary)
    lap("evaluate+publish")
    create_markdown_artifact(
        markdown=_markdown(table, forecasts, quarantined, version) + "\n\n## Attention\n\n" + attention_summary,
        key="nightly-summary",
        description=f"nightcast nightly as of {asof}",
    )
    return NightlyResult(
        asof,
        forecasts,
        table,
        paths,
        quarantined,
        report.stale,
        version,
        checkpoint,
        splits.test_start.astype(object),
        splits.test_end.astype(object),
        attention_summary,
        timings,
    )
