"""Tasks shared by the flows: thin wrappers over `features` and `forecasting`."""

from __future__ import annotations

import logging
from collections import deque
from datetime import timedelta

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from features import denoise
from features.build import FeatureFrame, build_features, concat_features, ticker_slices
from features.market import context_only, market_inputs
from features.prices import lake, validate
from features.prices.calendar import on_sessions
from features.windows import Panel, in_panel_precision, make_panel
from flows.settings import RunnerSettings, Settings
from forecasting.backtest import BacktestResult, Intervals, Schedule, make_forecasters, walk_forward
from forecasting.registry import settings_hash
from forecasting.settings import BacktestSettings, held_share
from nightcast.errors import InsufficientDataError
from nightcast.memory import release
from nightcast.version import feature_code_version
from nightcast.words import count

log = logging.getLogger("nightcast.flows.tasks")


@task(name="require history", cache_policy=NO_CACHE)
def require_history(prices: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame, dict[str, str]]:
    prices, off = on_sessions(prices, settings.publish.calendar)
    if off:
        log.warning(
            "rows on days %s has no session left out of the model (kept in the lake; publish.calendar decides): %s",
            settings.publish.calendar,
            ", ".join(f"{t} {n} (first {d})" for t, n, d in off[:10])
            + (f" and {len(off) - 10} more" if len(off) > 10 else ""),
        )
    kept, findings = validate.require_history(prices, settings.validation.min_rows)
    if kept.is_empty():
        raise InsufficientDataError(
            f"no ticker has validation.min_rows={settings.validation.min_rows} rows: "
            + ("; ".join(str(f) for f in findings) or "there are no prices at all")
        )
    return kept, {f.ticker: str(f) for f in findings}


def _features_key(context, parameters) -> str:
    """Same lake content, same denoise/feature settings and the same feature code: same features."""
    s = parameters["settings"]
    return (
        "features-"
        + parameters["fingerprint"]
        + "-"
        + settings_hash(
            {
                "denoise": s.denoise.model_dump(mode="json"),
                "features": s.features.model_dump(mode="json"),
                "code": feature_code_version(),
            }
        )
    )


def denoised_features(prices: pl.DataFrame, settings: Settings, market: pl.DataFrame | None = None) -> FeatureFrame:
    return build_features(
        denoise.denoise(prices.sort("ticker", "date"), settings.denoise), settings.features, market=market
    )


def market_frame(prices: pl.DataFrame, context: pl.DataFrame | None, settings: Settings) -> pl.DataFrame | None:
    """The market family's columns for `prices`, computed once over the universe and the context-only series."""
    if "market" not in settings.features.families:
        return None
    return market_inputs(prices, context, settings.features.market)


@task(name="features", cache_key_fn=_features_key, cache_expiration=timedelta(days=7), persist_result=True)
def make_features(
    prices: pl.DataFrame, settings: Settings, fingerprint: str, context: pl.DataFrame | None = None
) -> tuple[FeatureFrame, Panel]:
    """Denoise, build features and the panel; cached on the lake fingerprint, so an unchanged lake skips this.

    `context`: rows of the context-only series (`context_prices`); `fingerprint` must cover them too."""
    ff = in_panel_precision(denoised_features(prices, settings, market_frame(prices, context, settings)))
    return ff, make_panel(ff, settings.features.max_horizon)


@task(name="walk-forward backtest", cache_policy=NO_CACHE)
def run_backtest(panel: Panel, settings: Settings, backtest: BacktestSettings, fingerprint: str) -> BacktestResult:
    w = settings.windows
    return walk_forward(
        panel,
        make_forecasters(backtest, settings.model, settings.train, w.lookback, fingerprint),
        Schedule.from_settings(
            panel,
            backtest,
            w.lookback,
            w.val_days,
            w.test_days,
            held_share=held_share(backtest.models, settings.publish),
        ),
        Intervals.from_settings(backtest),
        progress=settings.train.progress,
    )


def task_runner(settings: Settings):
    """Threads locally, or Dask: an existing scheduler (`runner.dask_address`) or a local cluster of threads.

    A local cluster uses threads, not processes: with Prefect's ephemeral API every worker process would
    start its own temporary server.
    """
    if settings.runner.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if settings.runner.dask_address:
        return DaskTaskRunner(address=settings.runner.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": settings.runner.dask_workers,
            "processes": False,
            "threads_per_worker": 1,
            # its HTTP pages (the scheduler's and each worker's) on loopback and a free port: `None` does not
            # turn them off (distributed's default, every interface on 8787, is what it gives)
            "dashboard_address": "127.0.0.1:0",
            "worker_dashboard_address": "127.0.0.1:0",
        }
    )


def ticker_chunks(prices: pl.DataFrame, size: int) -> list[list[str]]:
    tickers = sorted(prices["ticker"].unique().to_list())
    return [tickers[i : i + size] for i in range(0, len(tickers), size)]


def context_prices(prices: pl.DataFrame, settings: Settings) -> pl.DataFrame | None:
    """Stored rows of the context-only series (`features.market.context_only`: read beside the universe, never
    forecast), up to the last date of `prices`: a replayed night sees no context row after it either.

    They come from the lake, not from `prices`: the ingest stores them but keeps them out of its report, so no
    stage that picks tickers to check, train, forecast or publish ever meets them. Absent series: no rows.
    """
    wanted = [t for t in context_only(settings.features, settings.source) if t not in set(prices["ticker"].unique())]
    if not wanted or prices.is_empty():
        return None
    rows = lake.read_prices(settings.paths.lake, wanted).filter(pl.col("date") <= prices["date"].max())
    return None if rows.is_empty() else rows


def features_by_chunk(prices: pl.DataFrame, settings: Settings, fingerprint: str) -> tuple[FeatureFrame, Panel]:
    """Build features per chunk of tickers as parallel tasks (features never mix tickers), then one panel.

    With a single chunk this is `make_features` itself; `concat_features` joins the chunks as one build would.
    The market family's columns read every ticker of a date: they are computed once, here, and each chunk
    gets its tickers' rows of them.
    """
    context = context_prices(prices, settings)
    if context is not None:  # the cached features depend on the context rows as much as on the universe's
        fingerprint = f"{fingerprint}-{lake.fingerprint(context)}"
    chunks = ticker_chunks(prices, settings.runner.chunk_size)
    whole, part = make_features, make_chunk_features
    if not settings.runner.cache_features:
        # new uncached tasks of the same functions: with_options cannot drop a cache_key_fn
        whole = task(make_features.fn, name="features", cache_policy=NO_CACHE)
        part = task(make_chunk_features.fn, name="features (chunk)", cache_policy=NO_CACHE)
    if len(chunks) == 1:
        if settings.runner.kind == "dask":  # say so: the run would otherwise look as if the cluster had built them
            log.info(
                "features: one chunk (%s, runner.chunk_size=%d): built here, not on the Dask cluster",
                count(prices["ticker"].n_unique(), "ticker"),
                settings.runner.chunk_size,
            )
        return whole(prices, settings, fingerprint, context)
    market = market_frame(prices, context, settings)
    rows = ticker_slices(prices, chunks)
    market_rows = [None] * len(chunks) if market is None else ticker_slices(market, chunks)
    args = [
        (chunk_prices, settings, f"{fingerprint}-{settings_hash({'tickers': chunk})}", chunk_market)
        for chunk, chunk_prices, chunk_market in zip(chunks, rows, market_rows, strict=True)
    ]
    del rows, market_rows
    if chunks_in_parallel(settings.runner):
        parts = _submitted_a_few_at_a_time(part, args, _chunks_at_once(settings.runner))
    else:
        parts = [part(*a) for a in args]
    ff = concat_features(parts, settings.features)
    del parts, args  # the chunks' features and prices: not held while the panel is built (~0.7 GB at 3.1M rows)
    release()  # Prefect's futures hold the chunks in reference cycles: collected now, not after the panel
    return ff, make_panel(ff, settings.features.max_horizon)


def _chunks_at_once(runner: RunnerSettings) -> int:
    """Feature chunks built at the same time: a Dask cluster takes them all and schedules them itself; threads, as
    many as polars has threads, as each chunk keeps them busy on its own. Prefect's thread pool started six at once
    on 2 cores, each holding its working arrays: at 500 tickers x 25 years the nightly's feature stage peaked at
    2.07-2.17 GiB in 2.44-2.63 s (three runs); two at a time, on slices of the prices (`ticker_slices`), 1.80 GiB
    in 2.39 s."""
    return 1_000_000 if runner.kind == "dask" else max(1, pl.thread_pool_size())


def _submitted_a_few_at_a_time(fn, args: list[tuple], width: int) -> list:
    """`fn.submit(*a)` for each of `args` with at most `width` running or waiting at a time: their results in order."""
    running, results = deque(), []
    for a in args:
        if len(running) == width:
            results.append(running.popleft().result())
        running.append(fn.submit(*a))
    results.extend(future.result() for future in running)
    return results


def chunks_in_parallel(runner: RunnerSettings) -> bool:
    """Whether feature chunks may be built at the same time: not while their cached results are saved in the
    process that builds the others. Prefect pickles a cached polars frame holding the GIL while the frame's
    serialisation waits on polars' thread pool, which another chunk's Python kernels (`map_batches`) occupy
    waiting for the GIL: a deadlock, seen with the threads runner and two chunks. Chunks built in other
    processes (a Dask scheduler's workers, started with `--nthreads 1`) or not cached are safe; each chunk is
    multi-threaded on its own. An address with the threads runner is not a Dask run: `task_runner` ignores it."""
    return (runner.kind == "dask" and runner.dask_address is not None) or not runner.cache_features


@task(name="features (chunk)", cache_key_fn=_features_key, cache_expiration=timedelta(days=7), persist_result=True)
def make_chunk_features(
    prices: pl.DataFrame, settings: Settings, fingerprint: str, market: pl.DataFrame | None = None
) -> FeatureFrame:
    """One chunk's features; `market`: its rows of the market family, computed over the whole universe
    (`fingerprint` covers the whole universe's prices). In the panel's precision: the chunks wait for one another
    to be stacked."""
    return in_panel_precision(denoised_features(prices, settings, market))
