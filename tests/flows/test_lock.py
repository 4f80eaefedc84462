"""One run at a time per data directory; what a dead owner left is handed to the next run."""

import json
import os
import subprocess
import sys

import pytest

from flows.lock import LOCK, Busy, check_free, data_lock, note

HOLD = "from flows.lock import data_lock, note\nwith data_lock({path!r}, 'nightly'):\n{body}"


def holder(tmp_path, body: str) -> subprocess.Popen:
    code = HOLD.format(path=str(tmp_path), body=body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())


def test_the_lock_is_reentrant_in_a_process_and_released_after(tmp_path):
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == []
        with data_lock(tmp_path, "ingest"):  # the nightly's ingest subflow
            note(tmp_path, ["run-1"], server_pid=os.getpid())
        held = json.loads((tmp_path / LOCK).read_text())
        assert held["pid"] == os.getpid() and held["flow_runs"] == ["run-1"]
        assert held["servers"][0]["pid"] == os.getpid() and held["servers"][0]["started"]
        check_free(tmp_path)  # this process holds it: not busy for itself
    assert (tmp_path / LOCK).read_text() == ""  # released normally: nothing for a successor to mend


def test_a_second_process_is_refused_with_the_holders_name(tmp_path):
    proc = holder(tmp_path, "    print('held', flush=True)\n    import time; time.sleep(60)")
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=rf"in use by another nightcast run \(pid {proc.pid}: .*wait for it"):
            with data_lock(tmp_path, "nightly"):
                pass
        with pytest.raises(Busy):  # what the CLI checks before Prefect starts
            check_free(tmp_path)
    finally:
        proc.kill()  # SIGKILL: no cleanup at all; the kernel releases the lock with the process
        proc.wait()
    check_free(tmp_path)


def test_what_a_killed_owner_left_is_handed_on(tmp_path):
    body = f"    note({str(tmp_path)!r}, ['run-of-the-dead'])\n    print('noted', flush=True)\n"
    body += "    import time; time.sleep(60)"
    proc = holder(tmp_path, body)
    assert proc.stdout.readline().strip() == "noted"
    proc.kill()
    proc.wait()
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == ["run-of-the-dead"]
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == []  # mended once, not again


def test_an_unreadable_lock_file_is_no_obstacle(tmp_path):
    (tmp_path / LOCK).write_text("{half a json")
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == []
