"""Handing memory back between the nightly's stages."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os

# Polars' allocator (jemalloc) hands freed pages back lazily (MADV_FREE after 1 s): they stay in the resident
# set until the kernel runs short. Purged at once instead (by a background thread, ~0.5 s after they are
# freed), the nightly at 500 tickers x 25 years peaked ~0.2 GB lower with no measurable slowdown.
ALLOCATOR = {"_RJEM_MALLOC_CONF": "muzzy_decay_ms:0,background_thread:true"}


# glibc's malloc serves numpy's and torch's arrays. Above its mmap threshold (128 KiB) a block is mapped on its
# own and unmapped when freed, but each such free raises the threshold to the block's size (up to 32 MiB): from
# then on blocks that size come from the heap, where freed ones stay resident among live ones. Fixed at 4 MiB
# (`mallopt`, which also stops the raising), the nightly at 500 tickers x 25 years held ~0.2-0.3 GiB less through
# training, evaluation and publishing. Not lower: at 256 KiB each training step's batch (~1 MB) was mapped and
# unmapped anew, and training ran 15-35% slower. An environment that sets MALLOC_MMAP_THRESHOLD_ keeps its own.
MMAP_THRESHOLD = 4 * 2**20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def configure_allocator(environ=os.environ) -> None:
    """Set `ALLOCATOR` where the environment does not set it (read once, when polars loads: call it before), and
    glibc's mmap threshold (`MMAP_THRESHOLD`) unless the environment sets one."""
    for key, value in ALLOCATOR.items():
        environ.setdefault(key, value)
    mallopt = _libc("mallopt")
    if mallopt is not None and "MALLOC_MMAP_THRESHOLD_" not in environ:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


@functools.cache
def _libc(name: str):
    """glibc's function `name` (`malloc_trim`, `mallopt`), or None where the C library has none (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def collections_skip_what_exists():
    """Inside the block, a full collection (`release`) examines only objects made since it began: everything
    alive at its start (the modules of torch, polars and Prefect: ~0.5M objects, 0.36 s per collection at 500
    tickers x 25 years) is set aside until it ends (`gc.freeze`, undone on the way out)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release() -> None:
    """Free now what unreachable reference cycles hold, and return the C heap's free pages to the system.

    Prefect's futures and task machinery leave reference cycles (frames, tracebacks) that hold a stage's
    results (the feature chunks, ~0.5 GB at 500 tickers x 25 years) until Python's next full collection,
    which a run of few, large objects may not reach for minutes; the next stage then allocates on top of them.
    A collection costs ~0.36 s with the whole process's objects, far less inside
    `collections_skip_what_exists`; `malloc_trim` a few ms. Nothing changes any value.
    """
    gc.collect()
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)
