"""How many CPU threads torch uses: by default, as many as there are cores other processes leave free.

An LSTM step is a chain of small matrix products; torch's OpenMP threads spin while they wait for each
other, so a thread whose core another process is using stalls every step of its team (measured here: two
threads on 2 cores with one core busy train at half the speed of one thread; reported elsewhere 10-50x).
With every core free, every core helps (1.7x on 2 cores). So the default measures what other processes use
over a short interval and takes the rest, again at every epoch, since load comes and goes
(`benchmarks/threads.py` has the figures).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_cache: tuple[float, int] | None = None  # (when, threads) of the last measurement
REMEASURE_S = 5.0  # predict calls come in bursts: one measurement serves them


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _busy_jiffies(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks so far of the CPUs this process may use (their /proc/stat lines)."""
    busy = total = 0
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                ticks = [int(v) for v in values]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
                busy, total = busy + sum(ticks) - idle, total + sum(ticks)
    except (OSError, ValueError):
        return None
    return (busy, total) if total else None


def cores_busy_elsewhere(interval: float = 0.1) -> float | None:
    """Cores' worth of CPU that other processes used, over `interval` seconds, on the CPUs this process may
    use (Linux; None elsewhere). A 0.1 s sample is 10 clock ticks per core: enough to tell a busy core."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = os.sched_getaffinity(0)
    before, own_before = _busy_jiffies(cpus), os.times()
    if before is None:
        return None
    time.sleep(interval)
    after, own_after = _busy_jiffies(cpus), os.times()
    if after is None or after[1] == before[1]:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    elapsed = (after[1] - before[1]) / hz / len(cpus)  # wall seconds, on the kernel's own clock
    own = (own_after.user - own_before.user) + (own_after.system - own_before.system)
    busy = (after[0] - before[0]) / hz - own
    return max(0.0, busy / max(elapsed, 1e-3))


def auto_threads() -> int:
    """One thread per core not busy with other processes (at least one)."""
    global _cache
    now = time.monotonic()
    if _cache is not None and now - _cache[0] < REMEASURE_S:
        return _cache[1]
    cores = usable_cores()
    busy = cores_busy_elsewhere()
    threads = cores if busy is None else max(1, min(cores, cores - math.floor(busy + 0.5)))
    _cache = (now, threads)
    return threads


def set_threads(threads: int) -> int:
    """Fix torch's CPU thread count (0 = `auto_threads`) and return it."""
    torch.set_num_threads(threads or auto_threads())
    return torch.get_num_threads()


@contextmanager
def thread_scope(threads: int) -> Iterator[int]:
    """torch's CPU thread count for one training or prediction call, restored when it returns.

    torch has one process-wide count: scoping keeps a fit from changing what the rest of the process (another
    library, a later call with other settings) runs with. Two fits in threads of one process still share the
    count while both run; the thread and Dask runners run tasks that each set it the same way.
    """
    before = torch.get_num_threads()
    chosen = set_threads(threads)
    try:
        yield chosen
    finally:
        if torch.get_num_threads() == chosen:  # another call changed it meanwhile: that call restores its own
            torch.set_num_threads(before)
