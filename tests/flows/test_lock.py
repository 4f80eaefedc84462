"""One run at a time per data directory; what a dead owner left is handed to the next run."""

import contextlib
import json
import os
import subprocess
import sys

import pytest

from flows.lock import LOCK, PUBLISH_LOCK, Busy, check_free, data_lock, note

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


def test_of_two_cli_runs_the_second_is_refused_before_its_prefect_server_starts(tmp_path, monkeypatch, capsys):
    import flows.deploy
    import flows.preflight
    from flows.cli import main

    data = tmp_path / "data"
    config = tmp_path / "nightcast.toml"
    config.write_text(f"[paths]\ndata_dir = {str(data)!r}\n")
    proc = holder(data, "    print('held', flush=True)\n    import time; time.sleep(60)")
    try:
        assert proc.stdout.readline().strip() == "held"
        # both runs started at the same instant: both passed the preflight's check before either held the lock
        monkeypatch.setattr(flows.preflight, "check_free", lambda data_dir: None)
        monkeypatch.setattr(flows.deploy, "start_ephemeral_server", lambda: pytest.fail("Prefect was started"))
        assert main(["ingest", "--config", str(config)]) == 2
        assert f"in use by another nightcast run (pid {proc.pid}:" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()


def test_a_run_publishing_into_a_folder_another_run_publishes_into_waits_for_it(tmp_path, caplog):
    """A hostile user's race: two data directories' nightlies publishing into one `outputs/` at once (the default
    does not follow `paths.data_dir`) lost one run's ledger rows. The publish holds the output folder's lock;
    the second waits for the first, with a warning naming it."""
    import logging

    from flows.lock import publishing_into

    out = tmp_path / "outputs"
    code = (
        f"from flows.lock import publishing_into\nimport time\nwith publishing_into({str(out)!r}, 'nightly'):\n"
        "    print('held', flush=True)\n    time.sleep(1.5)\n    print('released', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert proc.stdout.readline().strip() == "held"
        with caplog.at_level(logging.WARNING, logger="nightcast.flows.lock"):
            with publishing_into(out, "nightly"):
                assert proc.stdout.readline().strip() == "released"  # it had finished before this one went on
                assert json.loads((out / PUBLISH_LOCK).read_text())["pid"] == os.getpid()
        assert f"another nightcast run (pid {proc.pid}:" in caplog.text and "waiting for it to finish" in caplog.text
    finally:
        proc.kill()
        proc.wait()
    assert (out / PUBLISH_LOCK).read_text() == ""  # released
    # the data directory as the output folder: another file than the data lock this run holds (no wait on itself)
    with data_lock(tmp_path, "nightly"), publishing_into(tmp_path, "nightly"):
        assert json.loads((tmp_path / LOCK).read_text())["command"] == "nightly"
    # a folder that is another live run's data directory: no wait for that run's training (a reviewer's deadlock:
    # two runs each publishing into the other's data directory, with one lock file, waited on each other for good)
    other = tmp_path / "other"
    proc = holder(other, "    print('held', flush=True)\n    import time; time.sleep(60)")
    try:
        assert proc.stdout.readline().strip() == "held"
        with publishing_into(other, "nightly"):
            assert json.loads((other / LOCK).read_text())["pid"] == proc.pid  # its data lock, untouched
    finally:
        proc.kill()
        proc.wait()


def test_what_a_killed_owner_left_is_handed_on(tmp_path):
    body = f"    note({str(tmp_path)!r}, ['run-of-the-dead'])\n    print('noted', flush=True)\n"
    body += "    import time; time.sleep(60)"
    proc = holder(tmp_path, body)
    assert proc.stdout.readline().strip() == "noted"
    proc.kill()
    proc.wait()
    with pytest.raises(KeyboardInterrupt):  # the CLI's hold, stopped before any flow could mark them Crashed
        with data_lock(tmp_path, "nightly") as ghosts:
            assert ghosts == ["run-of-the-dead"]
            assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
            raise KeyboardInterrupt
    # handed on, not lost (a review found them dropped by the release), and no longer taken for a death
    assert json.loads((tmp_path / LOCK).read_text()) == {"flow_runs": ["run-of-the-dead"]}
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == ["run-of-the-dead"]


def test_an_unreadable_lock_file_is_no_obstacle(tmp_path):
    (tmp_path / LOCK).write_text("{half a json")
    with data_lock(tmp_path, "nightly") as ghosts:
        assert ghosts == []


# What the killed-run subprocess test used to prove end to end (30 s), piece by piece at unit level: the dead
# owner's runs are marked Crashed, its orphaned server is stopped, and a server dies with its parent.


@pytest.mark.parametrize("under_the_cli", [False, True], ids=["flow-takes-the-lock", "cli-took-it-first"])
def test_a_dead_owners_running_flow_runs_are_marked_crashed(prefect_harness, tmp_path, under_the_cli):
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Crashed, Running

    from flows.lock import exclusive, mark_crashed

    @flow
    def ghost():
        pass

    @task
    def step():
        pass

    with get_client(sync_client=True) as client:
        running = str(client.create_flow_run(ghost, state=Running()).id)
        done = str(client.create_flow_run(ghost, state=Completed()).id)
        # its task runs: one left running (an operator saw "walk-forward backtest" Running for good), one done
        stuck, finished = (
            client.create_task_run(step, flow_run_id=running, dynamic_key=key, state=state).id
            for key, state in (("0", Running()), ("1", Completed()))
        )
        # a run a work pool's worker already marked Crashed, its task run still running (a verifier's kill -9)
        marked = str(client.create_flow_run(ghost, state=Crashed()).id)
        orphaned = client.create_task_run(step, flow_run_id=marked, dynamic_key="2", state=Running()).id
    unknown = "00000000-0000-0000-0000-000000000000"
    assert mark_crashed([done, unknown]) == [unknown]  # unknown to this server: handed on, not lost

    # a holder that dies (SIGKILL) with the running flow run noted in the lock: the next run marks it Crashed
    body = (
        f"    note({str(tmp_path)!r}, [{running!r}, {marked!r}, {unknown!r}])\n    print('noted', flush=True)\n"
        "    import time; time.sleep(60)"
    )
    proc = holder(tmp_path, body)
    assert proc.stdout.readline().strip() == "noted"
    proc.kill()
    proc.wait()
    with data_lock(tmp_path, "ingest") if under_the_cli else contextlib.nullcontext():
        # the CLI takes the lock before Prefect starts: the flow inside, a nested holder, marks the runs
        with exclusive(tmp_path, "ingest"):
            pass
        with exclusive(tmp_path, "ingest"):
            pass  # marked once, not again
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(running).state.type.value == "CRASHED"
        assert client.read_flow_run(done).state.type.value == "COMPLETED"  # a finished run is left alone
        assert client.read_task_run(stuck).state.type.value == "CRASHED"
        assert client.read_task_run(finished).state.type.value == "COMPLETED"
        assert client.read_task_run(orphaned).state.type.value == "CRASHED"
    # released normally, but for the run this server does not know: handed on to the next holder, not lost
    assert json.loads((tmp_path / LOCK).read_text()) == {"flow_runs": [unknown]}


def orphan(argv_tag: str) -> int:
    """A process that is not our child (its parent shell exits at once), whose command line names `argv_tag`."""
    out = subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "import time; time.sleep(60)" {argv_tag} >/dev/null 2>&1 & echo $!'],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def gone(pid: int, timeout: float = 10) -> bool:
    import time
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or b"zombie" in status.read_bytes().lower():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_orphaned_prefect_server_is_stopped_but_a_reused_pid_is_not(tmp_path):
    from flows.lock import _start_time, _stop_orphaned_servers

    server, stranger = orphan("prefect.server.api.server"), orphan("not-a-server")
    try:
        started = _start_time(server)
        _stop_orphaned_servers([{"pid": server, "started": str(int(started) + 1)}])  # same pid, another process
        assert not gone(server, timeout=0.3)
        _stop_orphaned_servers([{"pid": stranger, "started": _start_time(stranger)}])  # not a Prefect server
        assert not gone(stranger, timeout=0.3)
        _stop_orphaned_servers([{"pid": server, "started": started}])
        assert gone(server)
    finally:
        for pid in (server, stranger):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_temporary_server_dies_with_its_parent_even_on_kill_9():
    """The parent (standing in for nightcast) starts a child the way Prefect's server is started, then is
    SIGKILLed: the kernel sends the child SIGTERM."""
    code = (
        "import subprocess, sys, time\n"
        "from flows.deploy import _die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True,"
        " preexec_fn=_die_with_parent)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    child = int(parent.stdout.readline())
    try:
        assert not gone(child, timeout=0.2)
        parent.kill()
        parent.wait()
        assert gone(child)
    finally:
        try:
            os.kill(child, 9)
        except OSError:
            pass


def test_a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_left_alone(tmp_path):
    """A security review: the lock opened through a link planted at its path and truncated the link's target."""
    from nightcast.errors import NightcastError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / LOCK).symlink_to(victim)
    with pytest.raises(NightcastError, match="is a symbolic link"), data_lock(tmp_path, "nightly"):
        pass
    assert victim.read_text() == "precious"
