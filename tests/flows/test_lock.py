"""One run at a time per data directory; a dead owner's lock is taken over and its runs reported."""

import json
import os
import subprocess
import sys
import time

import pytest

from flows.lock import LOCK, Busy, check_free, data_lock, note_flow_run


def test_the_lock_is_reentrant_in_a_process_and_released_after(tmp_path):
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == [] and (tmp_path / LOCK).exists()
        with data_lock(tmp_path, "ingest"):  # the nightly's ingest subflow
            note_flow_run(tmp_path, "run-1", server_pid=4242)
        held = json.loads((tmp_path / LOCK).read_text())
        assert held["pid"] == os.getpid() and held["flow_runs"] == ["run-1"] and held["servers"] == [4242]
    assert not (tmp_path / LOCK).exists()


def test_a_second_process_is_refused_with_the_holders_name(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from flows.lock import data_lock\nwith data_lock({str(tmp_path)!r}, 'nightly'):\n"
            "    print('held', flush=True)\n    import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=rf"in use by another nightcast run \(pid {holder.pid}: .*wait for it"):
            with data_lock(tmp_path, "nightly"):
                pass
        with pytest.raises(Busy):  # what the CLI checks before Prefect starts
            check_free(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # its owner was killed (SIGKILL: no cleanup): the lock is stale and is taken over, its runs handed on
    note = json.loads((tmp_path / LOCK).read_text())
    note["flow_runs"] = ["run-of-the-dead"]
    (tmp_path / LOCK).write_text(json.dumps(note))
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == ["run-of-the-dead"]
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_an_unreadable_lock_file_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_text("{half a json")
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == []
    assert not (tmp_path / LOCK).exists()


def test_a_lock_from_another_host_is_respected(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "2026-01-01"}))
    started = time.perf_counter()
    with pytest.raises(Busy, match="on host elsewhere .* if that machine is gone, delete"):
        with data_lock(tmp_path, "nightly"):
            pass
    assert time.perf_counter() - started < 1
