"""Atomic file writes shared by the lake, checkpoints and published outputs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
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
