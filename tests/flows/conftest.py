"""Fixtures of the flow tests."""

import polars as pl
import pytest

from flows.settings import load_settings


@pytest.fixture
def settings(tmp_path, sample):
    slice_path = tmp_path / "slice.parquet"
    (
        sample.filter(pl.col("ticker").is_in(["NVDA", "ORCL", "^GSPC"]))
        .group_by("ticker", maintain_order=True)
        .tail(700)
        .write_parquet(slice_path)
    )
    return load_settings(
        None,
        environ={},
        overrides={
            "source": {"kind": "file", "path": slice_path},
            "windows": {"lookback": 20, "test_days": 60, "val_days": 60},
            "model": {"hidden_size": 16, "attention_size": 8},
            # one thread: the default follows the machine's load, and float sums differ with the thread count,
            # while these tests compare whole runs bit for bit
            "train": {"epochs": 3, "batch_size": 128, "progress": False, "threads": 1},
            "paths": {"data_dir": tmp_path / "data", "out_dir": tmp_path / "outputs"},
        },
    )
