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

# glibc gives each thread that allocates its own heap ("arena"; up to 8 per core), and pages freed in one are
# reused by that arena alone: Prefect runs each task in a worker thread, so every stage left its freed arrays
# resident in a heap the next stage's thread never reuses. Two arenas: the nightly at 500 tickers x 25 years
# (training cut short, the same run with and without) peaked 2.32 -> 2.20 GiB, its training as fast.
ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def configure_allocator(environ=os.environ) -> None:
    """Set `ALLOCATOR` where the environment does not set it. Read once, when polars loads: call it before.

    And at most `ARENAS` glibc heaps, unless the environment sets them (`MALLOC_ARENA_MAX`, or
    `glibc.malloc.arena_max` in `GLIBC_TUNABLES`): for this process (`mallopt`, when `environ` is the process's
    own; heaps already made stay, so call it before threads allocate) and, through the environment, for the
    processes it starts (a Prefect flow-run process, a Dask worker, the Prefect server), from their first
    allocation. Not glibc (macOS, musl): nothing.
    """
    for key, value in ALLOCATOR.items():
        environ.setdefault(key, value)
    if "MALLOC_ARENA_MAX" in environ or "glibc.malloc.arena_max" in environ.get("GLIBC_TUNABLES", ""):
        return
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return
    if environ is os.environ:
        mallopt(_M_ARENA_MAX, ARENAS)
    environ["MALLOC_ARENA_MAX"] = str(ARENAS)


@functools.cache
def _libc_function(name: str):
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
    trim_heap()


def trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc's `malloc_trim`; elsewhere nothing): 1-5 ms.

    Arrays under glibc's mmap threshold (up to 32 MiB: a 3.1M-row column of the panel is 24 MiB) are freed into
    the heap, where their pages stay resident; 0.1-0.25 GB of them at a time through the nightly at 500 tickers
    x 25 years. Polars (its own allocator) and large arrays (mapped afresh) cannot reuse them, so a step that
    builds big frames or arrays adds its peak on top of them: called before such a step, it starts without them.
    Nothing changes any value.
    """
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
