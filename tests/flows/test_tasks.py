"""Feature building is cached on the lake fingerprint: an unchanged lake skips it."""

import numpy as np
import pytest
from prefect import flow

from features.prices.sources import load_sample
from flows.settings import load_settings
from flows.tasks import make_features

pytestmark = pytest.mark.slow


def test_unchanged_lake_skips_feature_building(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prices = load_sample().filter(ticker="NVDA").tail(400)
    settings = load_settings(None, environ={})
    other = load_settings(None, environ={"NIGHTCAST_FEATURES__RSI_WINDOW": "10"})

    @flow
    def build_three_times():
        first = make_features(prices, settings, "lake-a", return_state=True)
        again = make_features(prices, settings, "lake-a", return_state=True)
        changed_lake = make_features(prices, settings, "lake-b", return_state=True)
        changed_settings = make_features(prices, other, "lake-a", return_state=True)
        panels = [s.result()[1] for s in (first, again, changed_settings)]
        return [s.name for s in (first, again, changed_lake, changed_settings)], panels

    names, (built, cached, rsi10) = build_three_times()
    assert names == ["Completed", "Cached", "Completed", "Completed"]
    # the cached result is the build itself, and the changed settings really built other features
    assert cached.features == built.features and np.array_equal(cached.X, built.X, equal_nan=True)
    assert not np.array_equal(rsi10.X, built.X, equal_nan=True)

    # an upgrade that changes the feature code: the same lake and settings are built again, not served stale
    import flows.tasks

    monkeypatch.setattr(flows.tasks, "feature_code_version", lambda: "9.9.9+0123456789ab")

    @flow
    def after_upgrade():
        return make_features(prices, settings, "lake-a", return_state=True).name

    assert after_upgrade() == "Completed"


def test_feature_code_version_names_the_package_and_hashes_the_code(tmp_path):
    import shutil

    from nightcast import version

    first = version.feature_code_version()
    assert first.startswith(version.package_version() + "+") and len(version.code_hash()) == 12
    copy = tmp_path / "features"
    shutil.copytree(version.FEATURE_CODE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert version.code_hash(copy) == version.code_hash()  # content, not place or time
    edited = tmp_path / "edited"
    shutil.copytree(copy, edited)
    (edited / "build.py").write_text((edited / "build.py").read_text() + "\n# a changed feature\n")
    assert version.code_hash(edited) != version.code_hash()


def test_the_feature_cache_key_follows_the_market_setting():
    from flows.tasks import _features_key

    def key(environ: dict) -> str:
        return _features_key(None, {"settings": load_settings(None, environ=environ), "fingerprint": "lake-a"})

    on = {"NIGHTCAST_FEATURES__FAMILIES": '["returns", "market"]'}
    keys = [key({}), key(on), key(on | {"NIGHTCAST_FEATURES__MARKET": '["SPY"]'})]
    keys.append(key(on | {"NIGHTCAST_FEATURES__MARKET": "[]"}))
    assert len(set(keys)) == 4


def test_cached_feature_chunks_are_built_one_after_another_in_one_process():
    """A cached chunk's result is pickled holding the GIL while another chunk's kernels wait for it: deadlock
    (seen with the threads runner). In parallel only where that cannot happen."""
    from flows.settings import RunnerSettings
    from flows.tasks import chunks_in_parallel

    cached = {"cache_features": True}
    assert not chunks_in_parallel(RunnerSettings(**cached))  # threads, cached: one after another
    assert not chunks_in_parallel(RunnerSettings(kind="dask", **cached))  # a local cluster's workers are threads here
    assert chunks_in_parallel(RunnerSettings(cache_features=False))
    assert chunks_in_parallel(RunnerSettings())  # the default builds features afresh: no cache to save
    assert chunks_in_parallel(RunnerSettings(kind="dask", dask_address="tcp://127.0.0.1:8786", **cached))
    assert not chunks_in_parallel(RunnerSettings(dask_address="tcp://127.0.0.1:8786", **cached))  # threads: ignored


def test_feature_chunks_run_a_few_at_a_time_and_come_back_in_order(prefect_harness):
    """With threads, at most `width` chunks are submitted at once (six at once held six working sets on 2 cores);
    the results keep the order of the arguments whichever finishes first."""
    import threading
    import time

    from prefect import task
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.settings import RunnerSettings
    from flows.tasks import _chunks_at_once, _submitted_a_few_at_a_time

    lock, now, most = threading.Lock(), [0], [0]

    @task
    def work(i: int, pause: float) -> int:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(pause)
        with lock:
            now[0] -= 1
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
    def run(width: int) -> list[int]:
        return _submitted_a_few_at_a_time(work, [(i, 0.05 * (7 - i)) for i in range(7)], width)

    assert run(2) == list(range(7)) and most[0] == 2
    most[0] = 0
    assert run(8) == list(range(7)) and most[0] > 2  # as wide as the pool: more than two at once
    assert _chunks_at_once(RunnerSettings(kind="threads")) >= 1
    assert _chunks_at_once(RunnerSettings(kind="dask")) > 1000


def test_the_local_dask_cluster_listens_on_loopback_only(tmp_path):
    """A security review: `dashboard_address=None` left the scheduler's pages on every interface at :8787, and
    each worker's too; a local cluster must not be reachable from the network."""
    import psutil
    from distributed import LocalCluster

    from flows.tasks import task_runner

    settings = load_settings(None, environ={}, overrides={"runner": {"kind": "dask"}, "paths": {"data_dir": tmp_path}})

    def listening() -> set[tuple[str, int]]:
        connections = psutil.Process().net_connections(kind="inet")
        return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}

    before = listening()
    with LocalCluster(**task_runner(settings).cluster_kwargs):
        opened = listening() - before
    assert opened and {ip for ip, _ in opened} == {"127.0.0.1"}


def test_a_row_on_a_day_without_a_session_never_becomes_the_nights_as_of_date():
    """A reviewer's case: one Saturday row for one ticker made Saturday the as-of date and every other ticker 'not
    current': the whole universe dropped for a bad row. It stays in the lake; the model leaves it out, said."""
    import logging
    from datetime import date

    import polars as pl

    from flows.tasks import require_history

    sample = load_sample()
    saturday = sample.filter(ticker="ORCL").tail(1).with_columns(date=pl.lit(date(2015, 1, 3)))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("nightcast.flows.tasks")
    logger.addHandler(handler)
    try:
        kept, _ = require_history.fn(pl.concat([sample, saturday]), load_settings(None, environ={}))
    finally:
        logger.removeHandler(handler)
    assert kept["date"].max() == date(2014, 12, 31) and kept.height == sample.height
    [record] = [r for r in records if r.levelno == logging.WARNING]
    assert "days XNYS has no session left out of the model" in record.getMessage()
    assert "ORCL 1 (first 2015-01-03)" in record.getMessage()
