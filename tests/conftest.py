"""Shared fixtures. Prefect gets nightcast's environment and a throw-away home before anything imports it."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from flows import prefect_env

os.environ.pop("PREFECT_HOME", None)  # a developer's own Prefect home must not receive the tests' runs
prefect_env.configure(Path(tempfile.mkdtemp(prefix="nightcast-test-")))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from features.prices.schema import conform  # noqa: E402
from features.prices.sources import load_sample  # noqa: E402

# One torch thread per test process. On two shared cores, a process's two spinning OpenMP threads stall whenever
# another process is busy (a 0.7 s model test took 240 s beside another test run); fits choose their own count
# through train.threads (the flow tests pin 1, since runs are compared bit for bit).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sample() -> pl.DataFrame:
    return load_sample()


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def business_days(start: date, n: int) -> list[date]:
    days, d = [], start
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def synthetic_prices(tickers: list[str], n_days: int, seed: int = 0, start: date = date(2010, 1, 4)) -> pl.DataFrame:
    """Geometric random walks with consistent OHLCV, in the lake schema."""
    rng = np.random.default_rng(seed)
    days = business_days(start, n_days)
    frames = []
    for ticker in tickers:
        close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n_days)))
        open_ = close * np.exp(rng.normal(0, 0.005, n_days))
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, n_days)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, n_days)))
        frames.append(
            pl.DataFrame(
                {
                    "ticker": ticker,
                    "date": days,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "adj_close": close,
                    "volume": rng.integers(1_000, 100_000, n_days).astype(float),
                    "source": "synthetic",
                    "ingested_at": datetime(2020, 1, 1, tzinfo=UTC),
                }
            )
        )
    return conform(pl.concat(frames))
