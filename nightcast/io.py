"""Atomic file writes shared by the lake, checkpoints and published outputs; a run's scratch folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    Readers see either the old file or the complete new one, never a partial
    write; if `write` fails the old file is untouched and the temporary removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique sibling name (not mkstemp, whose 0600 mode would stick to the published file).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _alive(name: str) -> bool:
    """Whether the process a scratch folder is named after (`<pid>-<id>`) still runs here; True when unsure."""
    pid = name.split("-", 1)[0]
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


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
        if left.is_symlink() or not left.is_dir():
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
