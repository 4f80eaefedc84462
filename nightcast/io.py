"""Atomic file writes shared by the lake, checkpoints and published outputs; a run's scratch folder."""

from __future__ import annotations

import contextlib
import os
import shutil
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


@contextlib.contextmanager
def scratch_folder(path: Path) -> Iterator[Path]:
    """`path` as an empty folder for files a run sets aside while it runs, removed with them when the run ends
    (whether it succeeds or fails); whatever an earlier run that was killed left there is removed first. Only
    for a folder no other process uses meanwhile (the caller holds its lock)."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
