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
        .tail(450)  # validation.min_rows (300) and the windows' warm-up, with room to spare
        .write_parquet(slice_path)
    )
    return load_settings(
        None,
        environ={},
        overrides={
            "source": {"kind": "file", "path": slice_path},
            "windows": {"lookback": 20, "test_days": 60, "val_days": 60},
            "model": {"hidden_size": 8, "attention_size": 4},  # the flows are wiring: a tiny model suffices
            # one thread: the default follows the machine's load, and float sums differ with the thread count,
            # while these tests compare whole runs bit for bit
            "train": {"epochs": 2, "batch_size": 128, "progress": False, "threads": 1},
            "paths": {"data_dir": tmp_path / "data", "out_dir": tmp_path / "outputs"},
        },
    )
