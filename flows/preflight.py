"""Checks that need no data and no Prefect: a run that cannot work says so in one line, in a second, before
Prefect's server starts or any training begins."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from flows.lock import check_free
from flows.settings import Settings
from nightcast.errors import ConfigError

READABLE = (".csv", ".txt", ".parquet")


def writable_dir(path: Path, what: str) -> None:
    """`path` is a directory this process can write into, or can create: tried for real (permission bits say
    nothing of read-only or special file systems, nor of root), and whatever the try created is removed."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, not a directory")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".nightcast-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable: {exc.strerror or exc}") from None
    finally:
        for folder in created:  # deepest first: the check leaves nothing behind
            try:
                folder.rmdir()
            except OSError:
                break


def preflight(settings: Settings, command: str, out_dir: Path | None = None) -> None:
    """Everything about a `command` that can be known to fail before it starts."""
    source = settings.source
    if command in ("run", "replay", "train", "backtest", "ingest") and source.kind == "file":
        path = Path(source.path)
        if not path.is_file():
            raise ConfigError(f"price file not found: {path}" if not path.exists() else f"{path} is not a file")
        if path.suffix.lower() not in READABLE:
            raise ConfigError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"price file {path} is not readable")
    if command in ("run", "replay", "train", "backtest", "ingest"):
        check_free(settings.paths.data_dir)  # another run holds it: say so now, not after Prefect starts
        writable_dir(settings.paths.data_dir, "data directory (paths.data_dir)")
        writable_dir(settings.paths.lake, "lake directory (paths.lake_dir)")
    if command in ("run", "replay", "train"):
        writable_dir(settings.paths.models, "models directory (paths.models_dir)")
    if command in ("run", "replay"):
        writable_dir(settings.paths.out_dir, "output directory (--out, paths.out_dir)")
    if command == "backtest" and out_dir is not None:
        writable_dir(out_dir, "backtest output directory (--out)")
    longest = max(settings.features.horizons)
    if command in ("run", "replay", "train", "backtest") and longest >= settings.windows.test_days:
        raise ConfigError(
            f"features.horizons: the longest horizon ({longest} sessions) must be shorter than the evaluation span "
            f"windows.test_days ({settings.windows.test_days}): no forecast of it could ever be scored there"
        )
