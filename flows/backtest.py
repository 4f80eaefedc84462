"""The backtest flow: ingest -> features -> walk-forward backtest -> predictions, metrics and a report on disk."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from features.prices import lake
from features.windows import Panel
from flows import artifacts
from flows.ingest import ingest_flow
from flows.lock import exclusive
from flows.prefect_env import no_heartbeat_of_its_own
from flows.settings import Settings, dated_run_name
from flows.tasks import features_by_chunk, require_history, run_backtest
from forecasting import publish
from forecasting.backtest import BacktestResult
from forecasting.backtest_report import write_backtest_report
from forecasting.cross_section import cross_section_table
from forecasting.intervals import (
    QUANTILE_LEVELS,
    band_by_volatility,
    quantile_column,
    quantile_scores,
)
from forecasting.volatility import volatility_qlike


@task(name="write backtest", cache_policy=NO_CACHE)
def write_backtest(result: BacktestResult, settings: Settings, out_dir: Path, panel: Panel | None = None) -> list[Path]:
    """Predictions, metrics, folds and their tables and report into `out_dir`; with the `panel` the backtest ran
    on, the volatility forecasts' QLIKE too."""
    formats = settings.publish.formats
    paths = publish.write_frame(result.predictions, out_dir, "predictions", formats)
    paths += publish.write_frame(result.metrics, out_dir, "metrics", formats)
    paths += publish.write_frame(result.folds, out_dir, "folds", formats)
    bt = settings.backtest
    across = cross_section_table(result.predictions, bt.long_short_k, bt.cost_bps, bt.ic_min_tickers)
    paths += publish.write_frame(across, out_dir, "cross_section", formats)
    coverage = bt.coverage if bt.interval != "none" else None
    deciles = None
    columns = set(result.predictions.columns)
    if (
        coverage is not None and {"sigma", "y_lower", "y_upper"} <= columns
    ):  # (a quantile interval without a head: none)
        deciles = band_by_volatility(result.predictions, coverage)
        paths += publish.write_frame(deciles, out_dir, "coverage_by_volatility", formats)
    quantiles = None
    levels = [quantile_column(q) for q in QUANTILE_LEVELS]
    # quantiles only once min_count residuals were realised: a short backtest may have none
    if set(levels) <= columns and not result.predictions.drop_nulls(levels).is_empty():
        quantiles = quantile_scores(result.predictions, QUANTILE_LEVELS)
        paths += publish.write_frame(quantiles, out_dir, "quantile_scores", formats)
    volatility = None
    if panel is not None and "sigma" in columns:
        volatility = volatility_qlike(panel, result.predictions)
        paths += publish.write_frame(volatility, out_dir, "volatility_qlike", formats)
    title = f"nightcast backtest {result.test_start} .. {result.test_end}"
    return paths + write_backtest_report(result, out_dir, title, coverage, across, deciles, quantiles, volatility)


@flow(name="backtest", flow_run_name=dated_run_name("backtest"))
def backtest_flow(settings: Settings) -> tuple[BacktestResult, list[Path]]:
    """Walk-forward backtest of every configured model on identical origins; files into `paths.backtest`."""
    with exclusive(settings.paths.data_dir, "backtest"):
        return _backtest(settings)


def _backtest(settings: Settings) -> tuple[BacktestResult, list[Path]]:
    out_dir = settings.paths.backtest
    with no_heartbeat_of_its_own():
        report = ingest_flow(settings)
    prices, _ = require_history(report.prices, settings)
    fingerprint = lake.fingerprint(prices)
    _, panel = features_by_chunk(prices, settings, fingerprint)
    result = run_backtest.with_options(timeout_seconds=settings.train.timeout_s * 4)(
        panel, settings, settings.backtest, fingerprint
    )
    paths = write_backtest(result, settings, out_dir, panel)
    summary = artifacts.inline_images((out_dir / "report.md").read_text(), out_dir)
    create_markdown_artifact(
        markdown=summary, key="backtest-report", description="walk-forward backtest: metrics, plots and folds"
    )
    return result, paths
