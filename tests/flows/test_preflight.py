"""Runs that cannot work fail in a second, with one line and exit 2, before Prefect starts."""

import subprocess
import sys
import time

import pytest

from flows.preflight import preflight
from flows.settings import load_settings
from nightcast.errors import ConfigError


def test_sources_outputs_and_horizons_that_cannot_work(tmp_path):
    def settings(**sections):
        return load_settings(None, environ={}, overrides={"paths": {"data_dir": tmp_path / "data"}} | sections)

    with pytest.raises(ConfigError, match="price file not found: .*missing.csv"):
        preflight(settings(source={"kind": "file", "path": tmp_path / "missing.csv"}), "run")
    (tmp_path / "prices.xlsx").write_text("x")
    with pytest.raises(ConfigError, match="unsupported file type '.xlsx'"):
        preflight(settings(source={"kind": "file", "path": tmp_path / "prices.xlsx"}), "ingest")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="output directory .*a-file/out: .*a-file is a file, not a directory"):
        preflight(settings(paths={"data_dir": tmp_path / "data", "out_dir": tmp_path / "a-file" / "out"}), "run")
    with pytest.raises(
        ConfigError, match=r"longest horizon \(300 sessions\) must be shorter than .*windows.test_days \(250\)"
    ):
        preflight(settings(features={"horizons": [1, 300]}), "run")
    preflight(settings(paths={"data_dir": tmp_path / "d", "out_dir": tmp_path / "new" / "out"}), "run")
    assert not (tmp_path / "new").exists() and not (tmp_path / "d").exists()  # checking leaves nothing
    if sys.platform.startswith("linux"):  # a place even root cannot write
        with pytest.raises(ConfigError, match="output directory .*/proc/nightcast-out is not writable"):
            preflight(settings(paths={"data_dir": tmp_path / "d", "out_dir": "/proc/nightcast-out"}), "run")


def test_the_cli_fails_fast_and_literally(tmp_path):
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--path", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2 and time.perf_counter() - started < 20  # ~0.3 s: no Prefect server started
    assert proc.stderr.strip() == f"error: price file not found: {tmp_path / 'missing.csv'}"
    assert proc.stdout == ""  # no settings dump unless --verbose


def test_messages_are_printed_literally_not_as_markup(capsys):
    from flows.cli import main

    assert main(["record", "--asof", "[too_short]"]) == 2
    assert "got '[too_short]'" in capsys.readouterr().err
