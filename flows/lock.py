"""One run at a time per data directory, and no ghost runs left behind.

Two runs writing the same lake, champion record and outputs could interleave their writes, so every flow
that writes takes `<data>/nightcast.lock` first: a file created exclusively, holding the owner's pid, host,
command and the Prefect flow runs it started. Flows of one process nest (the nightly's ingest subflow, the
replay's nights): the lock is re-entrant within a process. A second process gets a one-line error naming
the holder. A lock whose owner died (kill -9, a power cut) is taken over, and the flow runs it left in
"Running" are marked Crashed, so the Prefect UI never shows a ghost.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from features.errors import NightcastError
from features.io import atomic_write

LOCK = "nightcast.lock"
log = logging.getLogger("nightcast.flows.lock")

_held: dict[Path, int] = {}  # lock path -> nesting depth in this process


class Busy(NightcastError):
    """Another nightcast process is using the data directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # vanished, or half-written by a process that died: no owner to respect


def _create(path: Path, what: str) -> bool:
    """Create the lock exclusively; False when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    body = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": what,
        "argv": " ".join(sys.argv[:6]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "flow_runs": [],
    }
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh)
    return True


def check_free(data_dir: Path) -> dict | None:
    """Raise `Busy` when another live process holds the data directory's lock; return a dead owner's record
    (None when there is no lock, or it is unreadable)."""
    path = (Path(data_dir) / LOCK).resolve()
    owner = _read(path) if path.exists() else None
    if not owner or owner.get("pid") == os.getpid():
        return None if not owner else owner
    if owner.get("host") != socket.gethostname():
        raise Busy(
            f"{data_dir} is in use by nightcast on host {owner.get('host')} (pid {owner.get('pid')}, since "
            f"{owner.get('started')}); if that machine is gone, delete {path}"
        )
    if _alive(int(owner.get("pid", -1))):
        raise Busy(
            f"{data_dir} is in use by another nightcast run (pid {owner['pid']}: {owner.get('argv')}, since "
            f"{owner.get('started')}); wait for it to finish, or use another paths.data_dir"
        )
    return owner


@contextmanager
def data_lock(data_dir: Path, what: str) -> Iterator[list[str]]:
    """Hold `<data_dir>/nightcast.lock` for the block; yields the flow runs a dead owner left behind."""
    path = (Path(data_dir) / LOCK).resolve()
    if _held.get(path):
        _held[path] += 1
        try:
            yield []
        finally:
            _held[path] -= 1
        return
    ghosts: list[str] = []
    while not _create(path, what):
        owner = check_free(data_dir)
        ghosts += (owner or {}).get("flow_runs", [])
        _stop_orphaned_servers((owner or {}).get("servers", []))
        log.warning("taking over the lock of a nightcast run that died (%s)", owner or "unreadable lock file")
        path.unlink(missing_ok=True)
    _held[path] = 1
    try:
        yield ghosts
    except BaseException:
        # Interrupted or failed: if this run's flow runs cannot be closed now (Ctrl-C in a terminal stops
        # Prefect's temporary server too), the lock stays behind for the next run to mend them.
        owner = _read(path) or {}
        if mark_crashed(owner.get("flow_runs", [])):
            path.unlink(missing_ok=True)
        raise
    else:
        path.unlink(missing_ok=True)
    finally:
        _held.pop(path, None)


def note_flow_run(data_dir: Path, flow_run_id: str, server_pid: int | None = None) -> None:
    """Record a flow run (and Prefect's temporary server) in the lock this process holds, so a successor can
    mark the run crashed, and stop the server, if this process is killed."""
    path = (Path(data_dir) / LOCK).resolve()
    owner = _read(path)
    if not owner or owner.get("pid") != os.getpid():
        return
    owner["flow_runs"] = [*owner.get("flow_runs", []), flow_run_id]
    if server_pid and server_pid not in owner.get("servers", []):
        owner["servers"] = [*owner.get("servers", []), server_pid]
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(owner)))


def _stop_orphaned_servers(pids: list[int]) -> None:
    """Prefect's temporary server outlives a process killed with SIGKILL: stop it (only if the pid is still
    that server, never a process that reused the number)."""
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # gone (or no /proc here)
        if b"prefect.server.api.server" in command and b"uvicorn" in command:
            try:
                os.kill(pid, 15)
                log.warning("stopped Prefect's temporary server (pid %d) left by a nightcast run that died", pid)
            except OSError:
                pass


def _ephemeral_server_pid() -> int | None:
    module = sys.modules.get("prefect.server.api.server")
    server = module.SubprocessASGIServer._instances.get(None) if module else None
    process = getattr(server, "server_process", None)
    return process.pid if process is not None else None


def mark_crashed(flow_run_ids: list[str]) -> bool:
    """Flow runs left "Running" (or pending) become Crashed; True when every one is final now.

    Best effort: a run on another server, or one that is gone, is nothing to mend.
    """
    if not flow_run_ids:
        return True
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            for run_id in flow_run_ids:
                run = client.read_flow_run(run_id)
                if run.state is None or run.state.is_final():
                    continue
                message = "its nightcast process stopped before the run could finish"
                client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                log.warning("flow run %s was left %s: marked Crashed", run.name, run.state.name)
    except Exception as exc:  # the server is unreachable (stopped with us), or the run is unknown to it
        log.debug("could not mark flow runs %s crashed: %s", flow_run_ids, exc)
        return False
    return True


@contextmanager
def exclusive(data_dir: Path, what: str) -> Iterator[None]:
    """The lock for a flow body: taken (or re-entered), ghosts mended, this flow run recorded."""
    from prefect.runtime import flow_run

    with data_lock(data_dir, what) as ghosts:
        mark_crashed(ghosts)
        if flow_run.id:
            note_flow_run(data_dir, str(flow_run.id), _ephemeral_server_pid())
        yield
