"""Atomic file writes shared by the lake, checkpoints and published outputs; a run's scratch folder."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

_TEMP = re.compile(r"\..+\.(\d+)\.[0-9a-f]{12}\.tmp")  # `atomic_write`'s temporary names: .<name>.<pid>.<hex>.tmp
_swept: set[Path] = set()  # folders this process has cleared of dead writers' temporary files


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    Readers see either the old file or the complete new one, never a partial
    write; if `write` fails the old file is untouched and the temporary removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent not in _swept:  # once per folder and process: a directory listing, not one per file
        remove_leftovers(path.parent)
        _swept.add(path.parent)
    # A unique sibling name (not mkstemp, whose 0600 mode would stick to the published file).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of `atomic_write` that a killed writer left in `folder` (it cleans up after an
    exception, not after SIGKILL); one whose writer still runs is left alone: it may be mid-write."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = _TEMP.fullmatch(entry.name)
        if match and not pid_alive(int(match.group(1))):
            entry.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (this process counts: another thread may be writing); True
    when unsure. A pid can be reused: alive is "maybe", dead is certain."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (PermissionError), or cannot tell
        return True
    return True


def _alive(name: str) -> bool:
    """Whether the process a scratch folder is named after (`<pid>-<id>`) still runs here; True when unsure."""
    pid = name.split("-", 1)[0]
    return pid_alive(int(pid)) if pid.isdigit() else True


_SCRATCH_NAME = re.compile(r"\d+-[0-9a-f]{12}")  # `scratch_folder`'s own: "<pid>-<12 hex digits>"


@contextlib.contextmanager
def scratch_folder(root: Path, stale_after_s: float = 86_400.0) -> Iterator[Path]:
    """A new empty folder under `root` for the files one run sets aside while it runs, removed with them when the
    run ends, whether it succeeds or fails, with `root` and its parent if that leaves them empty. Folders under
    `root` that a killed run left are removed first: those named after a process no longer running on this
    machine, and any untouched for `stale_after_s` (a live pid may be a number reused since); a younger one of a
    live process may be another run's, and is left alone."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for left in root.iterdir():
        # only folders this function makes: `root` may be a link to a folder holding other things
        if left.is_symlink() or not left.is_dir() or not _SCRATCH_NAME.fullmatch(left.name):
            continue
        if not _alive(left.name) or time.time() - left.stat().st_mtime > stale_after_s:
            shutil.rmtree(left, ignore_errors=True)
    path = root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)  # parents: another run's end may have just removed an empty root
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        for folder in (root, root.parent):  # left empty: gone too, as the README says (another run's keeps it)
            try:
                folder.rmdir()
            except OSError:
                break
