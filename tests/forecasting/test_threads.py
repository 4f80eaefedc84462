"""The default thread policy: one thread per core that other processes leave free."""

import subprocess
import sys

import pytest

from forecasting import threads


@pytest.mark.parametrize("busy, expected", [(0.0, 4), (0.4, 4), (0.6, 3), (1.0, 3), (2.7, 1), (9.0, 1), (None, 4)])
def test_auto_threads_leave_busy_cores_alone(monkeypatch, busy, expected):
    monkeypatch.setattr(threads, "_cache", None)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "cores_busy_elsewhere", lambda: busy)
    assert threads.auto_threads() == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_process_is_seen():
    quiet = threads.cores_busy_elsewhere(0.2)
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = threads.cores_busy_elsewhere(0.5)
    finally:
        load.kill()
        load.wait()
    assert quiet is not None and busy is not None
    assert busy > 0.6  # at least most of one core: the spinning process, not ours
