"""One run at a time per data directory, one publish at a time per output folder, and no ghost runs left behind.

Two runs writing the same lake, champion record and outputs could interleave their writes, so every flow
that writes holds `<data>/nightcast.lock`: an advisory lock (`flock`) taken by the kernel, so it can never be
held twice and is released the moment its owner dies, whatever killed it. The file's content is only
information: the owner's pid, command and the Prefect flow runs it started (and Prefect's temporary server),
emptied on a normal release. Flows of one process nest (the nightly's ingest subflow, the replay's nights):
the lock is re-entrant within a process, and the CLI takes it before Prefect starts. A second process gets
a one-line error naming the holder. Whoever finds the information of an owner that died (kill -9, a power
cut) marks the flow runs it left "Running" as Crashed and stops the temporary server it left, so the Prefect
UI never shows a ghost.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from nightcast.errors import NightcastError

LOCK = "nightcast.lock"
# the publish's own file, never the data lock's: with one file, a run publishing into another run's data
# directory waited for that run's whole training, and two runs each publishing into the other's data directory
# waited on each other for good (a reviewer's deadlock). A run holds at most one publish lock and never waits
# for a data lock while it does, so no two runs can wait on each other.
PUBLISH_LOCK = ".publishing.lock"
log = logging.getLogger("nightcast.flows.lock")

_guard = threading.Lock()
_held: dict[Path, tuple[int, int]] = {}  # lock path -> (file descriptor, nesting depth) in this process
# lock path -> flow runs a dead owner left, until a flow (`exclusive`) can reach Prefect to mark them: the CLI
# takes the lock before Prefect starts, so the flow that mends them is a nested holder
_ghosts: dict[Path, list[str]] = {}


class Busy(NightcastError):
    """Another nightcast process is using the data directory."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (a pid can be reused; a pid with its start time cannot)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _info(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return {}  # half-written by an owner that died while writing it (or not ours: nested past the stack)


def _write(fd: int, info: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(info).encode())


def check_free(data_dir: Path) -> None:
    """Raise `Busy` when another process holds the data directory's lock (a check, nothing is taken)."""
    path = lock_path(data_dir)
    if path in _held or not path.exists() or path.is_symlink():  # a link is refused when the lock is taken
        return
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(data_dir, _info(fd)) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(what: str) -> dict:
    """Who holds a lock, as its file says (for the message of whoever finds it taken)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": what,
        "argv": " ".join(sys.argv[:6]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _busy(data_dir: Path, owner: dict) -> Busy:
    where = "" if owner.get("host", socket.gethostname()) == socket.gethostname() else f" on {owner['host']}"
    return Busy(
        f"{data_dir} is in use by another nightcast run{where} (pid {owner.get('pid', '?')}: "
        f"{owner.get('argv', '?')}, since {owner.get('started', '?')}); wait for it to finish, or use another "
        "paths.data_dir"
    )


@contextmanager
def data_lock(data_dir: Path, what: str) -> Iterator[list[str]]:
    """Hold `<data_dir>/nightcast.lock` for the block; yields the flow runs an owner that died left behind."""
    path = lock_path(data_dir)
    with _guard:
        if path in _held:
            fd, depth = _held[path]
            _held[path] = (fd, depth + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield []
        finally:
            with _guard:
                fd, depth = _held[path]
                _held[path] = (fd, depth - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _info(fd)
        os.close(fd)
        raise _busy(data_dir, owner) from None
    left = _info(fd)  # information that survived its owner: it died, or handed on flow runs it could not mend
    if left.get("pid"):
        log.warning("taking over from a nightcast run that died (pid %s: %s)", left.get("pid"), left.get("argv"))
        _stop_orphaned_servers(left.get("servers", []))
    _write(fd, {**_holder(what), "flow_runs": [], "servers": []})
    with _guard:
        _held[path] = (fd, 1)
        _ghosts[path] = list(left.get("flow_runs", []))
    try:
        yield left.get("flow_runs", [])
    finally:
        with _guard:
            _held.pop(path, None)
            unmended = _ghosts.pop(path, [])
        # a normal release leaves nothing for a successor to mend, but the flow runs of a dead owner that no flow
        # of this process could mark (stopped before its first flow began, or Prefect unreachable)
        if unmended:
            _write(fd, {"flow_runs": unmended})
        else:
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def note(data_dir: Path, flow_runs: list[str] = (), server_pid: int | None = None) -> None:
    """Record flow runs (and Prefect's temporary server) in the lock this process holds, so that a successor
    can mark the runs crashed, and stop the server, if this process is killed."""
    path = lock_path(data_dir)
    with _guard:
        if path not in _held:
            return
        fd = _held[path][0]
        info = _info(fd)
        info["flow_runs"] = list(dict.fromkeys([*info.get("flow_runs", []), *flow_runs]))
        if server_pid and server_pid not in [s.get("pid") for s in info.get("servers", [])]:
            info["servers"] = [*info.get("servers", []), {"pid": server_pid, "started": _start_time(server_pid)}]
        _write(fd, info)


def _stop_orphaned_servers(servers: list[dict]) -> None:
    """Prefect's temporary server outlives a process killed with SIGKILL: stop it, if that pid is still that
    very process (same start time) and not a child of ours."""
    for server in servers:
        pid = server.get("pid")
        if not pid or _start_time(pid) is None or _start_time(pid) != server.get("started"):
            continue  # gone, or the number was reused
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid != os.getpid() and b"prefect.server.api.server" in command:
            try:
                os.kill(pid, 15)
                log.warning("stopped Prefect's temporary server (pid %d) left by a nightcast run that died", pid)
            except OSError:
                pass


def mark_crashed(flow_run_ids: list[str]) -> list[str]:
    """Flow runs left "Running" (or pending) become Crashed; returns those that could not be mended now."""
    if not flow_run_ids:
        return []
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    unmended = []
    with get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            try:
                run = client.read_flow_run(run_id)
                message = "its nightcast process stopped before the run could finish"
                if run.state is not None and not run.state.is_final():
                    client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                    log.warning("flow run %s was left %s: marked Crashed", run.name, run.state.name)
                    _mark_tasks_crashed(client, run_id, message)
                elif run.state is not None and run.state.is_crashed():
                    # crashed already (a work pool's worker marks its killed run Crashed, not the run's task
                    # runs): a task run of a dead process left running is a ghost in the UI. Not under a run
                    # that completed or failed, whose pending task runs were never to run (NotReady)
                    _mark_tasks_crashed(client, run_id, message)
            except Exception as exc:  # unknown to this server (another API), or the server is unreachable
                log.debug("could not mark flow run %s crashed: %s", run_id, exc)
                unmended.append(run_id)
    return unmended


def _mark_tasks_crashed(client, run_id: str, message: str) -> None:
    """The task runs of a crashed flow run that were left running (or pending) become Crashed too: the UI showed
    a Crashed flow run with its walk-forward backtest "Running" for good."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    unfinished = TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
    tasks = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
        task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=unfinished)),
    )
    for task in tasks:
        client.set_task_run_state(task.id, Crashed(message=message), force=True)


def _ephemeral_server_pid() -> int | None:
    module = sys.modules.get("prefect.server.api.server")
    server = module.SubprocessASGIServer._instances.get(None) if module else None
    process = getattr(server, "server_process", None)
    return process.pid if process is not None else None


@contextmanager
def exclusive(data_dir: Path, what: str) -> Iterator[None]:
    """The lock for a flow body: taken (or re-entered), ghosts mended, this flow run recorded."""
    from prefect.runtime import flow_run

    path = lock_path(data_dir)
    with data_lock(data_dir, what):
        with _guard:  # left by whichever holder took the lock (this flow, its parent flow or the CLI)
            ghosts = _ghosts.get(path, [])
        # never this run itself: a flow run retried in Prefect keeps its id, noted by the process that died
        unmended = mark_crashed([g for g in ghosts if g != str(flow_run.id)])
        # those that cannot be mended now are handed on to the next run, by the release, or tried again by a later
        # flow of this run; in the file too, should this one die
        with _guard:
            _ghosts[path] = unmended
        note(data_dir, [*unmended, *([str(flow_run.id)] if flow_run.id else [])], _ephemeral_server_pid())
        yield


def lock_path(data_dir: Path) -> Path:
    """The lock file of `data_dir`: the folder resolved, not the file (a link planted there is refused)."""
    return Path(data_dir).resolve() / LOCK


def _open_lock(path: Path) -> int:
    """The lock file, never through a symbolic link: its holder's note is written into it, and a link planted
    there would have that note (and the truncation before it) land in whatever file it points to."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise NightcastError(
                f"{path} is a symbolic link: the lock file must be a plain file; remove the link"
            ) from exc
        raise


@contextmanager
def publishing_into(out_dir: Path, what: str) -> Iterator[None]:
    """Hold `<out_dir>/.publishing.lock` while publishing there, waiting for another run that is.

    The data directory's lock serialises the runs of one data directory; runs of two (the default `outputs/`
    does not follow `paths.data_dir`) published into one folder at once, and one lost the other's ledger rows
    and took the other's live publish for an interrupted one (a hostile user's race). Held for the publish only
    (seconds), so such a run waits rather than failing after its training, and a run that publishes nothing
    creates no output folder. Re-entrant in a process, as the data lock is (an `out_dir` equal to the data
    directory is another file: no wait on itself)."""
    path = Path(out_dir).resolve() / PUBLISH_LOCK
    with _guard:
        nested = path in _held
    if nested:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _info(fd)
            log.warning(
                "%s: another nightcast run (pid %s: %s) is publishing there; waiting for it to finish",
                out_dir,
                owner.get("pid", "?"),
                owner.get("argv", "?"),
            )
            fcntl.flock(fd, fcntl.LOCK_EX)
        _write(fd, _holder(what))
        with _guard:
            _held[path] = (fd, 1)
        try:
            yield
        finally:
            with _guard:
                _held.pop(path, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
