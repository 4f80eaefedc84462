"""The nightly flow's tasks: forecast, publish, ledger, live record, attention report, run metadata.

Thin wrappers: the rules are `forecasting.compose` (what publishes at each horizon, and its interval),
`forecasting.publish`, `forecasting.ledger` and `forecasting.live`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from features.build import FeatureFrame, sorted_by_ticker
from features.windows import Panel, known_ends, refit_split
from flows.model_choice import ModelChoice, evaluation_settings
from flows.settings import Settings
from forecasting import attention, compose, ledger, live, plots, policy, publish, train
from forecasting.combine import Publishing
from forecasting.names import Model
from forecasting.volatility import panel_sigma

log = logging.getLogger("nightcast.flows.nightly")


@task(name="forecast", cache_policy=NO_CACHE)
def forecast(
    choice: ModelChoice,
    panel: Panel,
    ff: FeatureFrame,
    settings: Settings,
    sources: dict[int, policy.Source],
    stale: dict[str, int],
) -> pl.DataFrame:
    """Forecasts from every current ticker's last row: the published model (alone or combined), or a baseline
    refit on every realised label where the guardrail says so."""
    asof, rows, left_out = publish.current_rows(panel, stale)
    for ticker in left_out:
        log.warning("%s is not current on %s (stale or lagging): not forecast", ticker, asof)
    horizons, publishing = panel.horizons, choice.publishing
    by_horizon = [sources[h].model for h in horizons]
    published = train.predict(choice.published, panel, rows)  # the mean and, with a quantile head, its band
    needed = set(by_horizon) - {publishing.name} | set(publishing.baselines)
    predictions = _baselines(panel, rows, sorted(needed), asof, settings)
    # The refit trains on every realised label: no held-out span is left to fit weights on, so the evaluation
    # fit's weights (chosen on its validation span, vouched for out of sample) combine the refit with the
    # historical mean of the refit's own split, as its best epoch count sets the refit's epochs.
    predictions[publishing.name] = publishing.forecast(published.mean, predictions.get(Model.HIST_MEAN))
    y = compose.by_source(predictions, by_horizon)
    _warn_sources(sources, horizons, publishing)
    # the panel's row order (make_panel's): the frame is sorted already, so nothing is copied (a sort of the whole
    # feature frame for 500 closes copied ~0.5 GB on 3.15M rows)
    close = sorted_by_ticker(ff.frame.select("ticker", "date", "close"))[0]["close"].to_numpy()[rows]
    ev = choice.evaluation
    meta = {
        "run_id": str(flow_run.id or "local"),
        "model_version": choice.version,
        "trained_through": date.fromisoformat(choice.published.trained_through),
        "eval_version": choice.evaluation_version,
        "eval_start": ev.test_start.astype(object),
        "eval_end": ev.test_end.astype(object),
    }
    bt = settings.backtest
    sigma = panel_sigma(panel, bt.vol_fast_weight, rows=rows)  # each forecast's volatility: scales its band
    band = compose.bounds(ev.predictions, y, by_horizon, horizons, published.quantiles, asof, bt, sigma)
    quantiles = compose.quantiles(ev.predictions, y, by_horizon, horizons, asof, bt, sigma)
    return publish.forecast_frame(
        panel,
        rows,
        y,
        band,
        close,
        asof,
        settings.publish.calendar,
        publishing.labels(by_horizon),
        [sources[h].skill and sources[h].model == publishing.name for h in horizons],
        meta,
        sigma,
        quantiles,
    )


def _baselines(panel: Panel, rows: np.ndarray, names: list[str], asof: date, settings: Settings) -> dict:
    """Forecasts of the baselines `names` from `rows`, each refit on every label realised by `asof`."""
    if not names:
        return {}
    split = refit_split(panel, settings.windows.lookback, np.datetime64(asof, "D"))
    bt, w = evaluation_settings(settings), settings.windows
    return compose.baseline_predictions(panel, rows, names, split, bt, settings.model, settings.train, w.lookback)


def _warn_sources(sources: dict[int, policy.Source], horizons: list[int], publishing: Publishing) -> None:
    """One warning per distinct finding, naming its horizons: five identical lines a night (one per horizon) made
    an alert on warnings fire five times for one fact."""
    found: dict[str, list[int]] = {}
    for h in horizons:
        s = sources[h]
        why = "is significantly worse than the random walk" if s.worse else "has no skill"
        if s.model != publishing.name:
            found.setdefault(f"the model {why} on the evaluation span; publishing {s.model} instead", []).append(h)
        elif not s.skill:
            found.setdefault(f"NO SKILL: the model {why}; published with skill=false", []).append(h)
    for message, at in found.items():
        log.warning("%s %s: %s", "horizon" if len(at) == 1 else "horizons", ", ".join(map(str, at)), message)


def _png(draw: Callable[[Path], Path], path: Path, with_plots: bool) -> list[Path]:
    """The plot at `path`, or none: a night rerun without plots removes the one an earlier run left there,
    which would show another run's numbers."""
    if with_plots:
        return [draw(path)]
    path.unlink(missing_ok=True)
    return []


@task(name="inspect attention", cache_policy=NO_CACHE)
def inspect_attention(
    trained: train.TrainedModel,
    panel: Panel,
    test_start: np.datetime64,
    asof: date,
    settings: Settings,
    with_plots: bool,
) -> tuple[str, list[Path]]:
    """Mean attention of the published model per lag / input variable over the evaluation span: tables, a
    heatmap PNG (`with_plots`) and a summary."""
    known = known_ends(panel, settings.windows.lookback)
    span = known[panel.dates[known] >= test_start]
    report = attention.attention_report(trained, panel, attention.spread_sessions(span, panel.dates))
    if report is None:
        return "the model has no attention (plain LSTM)", []
    folder = publish.partition_dir(settings.paths.out_dir, "reports", asof)
    paths = publish.write_frame(report.per_lag, folder, "attention_lags", settings.publish.formats)
    if report.per_feature is not None:
        paths += publish.write_frame(report.per_feature, folder, "attention_features", settings.publish.formats)
    paths += _png(lambda path: plots.plot_attention(report, path), folder / "attention.png", with_plots)
    return report.summary, paths


@task(name="publish", cache_policy=NO_CACHE)
def publish_outputs(
    asof: date,
    forecasts: pl.DataFrame,
    choice: ModelChoice,
    across: pl.DataFrame,
    universe: list[str],
    settings: Settings,
) -> list[Path]:
    """The forecasts (merged by ticker with those of other universes published for the date), the evaluation's
    metrics, its scores across tickers and its out-of-sample predictions."""
    out, formats = settings.paths.out_dir, settings.publish.formats
    folder = publish.partition_dir(out, "forecasts", asof)
    merged = publish.merge_forecasts(folder, "forecasts", forecasts, universe, formats)
    paths = publish.write_frame(merged, folder, "forecasts", formats)
    metrics_dir = publish.partition_dir(out, "metrics", asof)
    paths += publish.write_frame(choice.evaluation.metrics, metrics_dir, "metrics", formats)
    paths += publish.write_frame(across, metrics_dir, "cross_section", formats)
    # Parquet only: every evaluation origin of every model (31k rows, 1.5 MB on the sample), rewritten each night;
    # as CSV it was 3 MB a night (400 MB for a half-year replay)
    paths += publish.write_predictions(choice.evaluation, metrics_dir)
    publish.prune_predictions(out, settings.publish.keep_predictions, asof)
    return paths


@task(name="ledger", cache_policy=NO_CACHE)
def record_in_ledger(forecasts: pl.DataFrame, universe: list[str], settings: Settings) -> Path:
    """Every published forecast into the ledger; a rerun of the date replaces the rows of its `universe` (as the
    forecasts file does), never duplicates, and keeps what it replaced (`ledger.SUPERSEDED`)."""
    return ledger.write_partition(settings.paths.out_dir / "ledger", forecasts, universe)


@task(name="live record", cache_policy=NO_CACHE)
def live_record(asof: date, settings: Settings, with_plots: bool) -> tuple[live.ScoredLedger, pl.DataFrame, list[Path]]:
    """Score every ledger forecast whose target date has passed by `asof` against the lake's adjusted closes;
    the record's files and (`with_plots`) its plot."""
    book = live.score_ledger(settings.paths.out_dir / "ledger", settings.paths.lake, asof)
    record = live.live_record(book.scored)
    folder = publish.partition_dir(settings.paths.out_dir, "record", asof)
    paths = publish.write_frame(record, folder, "record", settings.publish.formats)
    paths += _png(lambda path: plots.plot_live_record(book.scored, path), folder / "live_record.png", with_plots)
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
