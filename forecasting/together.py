"""Several independent fits at once on one GPU: a walk-forward's models, an ensemble's seeds, the refits of a
cold-start backtest.

At nightcast's sizes one fit leaves most of a GPU idle even as a CUDA graph (a step of a few hundred
microseconds is mostly waiting on small kernels in sequence). Independent fits can share the device: each
gets a CUDA stream of its own, captures its training step as a graph on it, and the host replays the fits'
steps in turn, so that the GPU works on several while the host queues the next. Every fit keeps its own
batch order, learning-rate schedule, validation passes and early stopping (`train._Loop.steps`, the loop
`fit` runs) and its own random state (`_OwnRandom`), so a fit trained here is the fit `fit` would train,
dropout masks included: bit-identical, tested on a GPU and on a CPU. (Not for dropout between stacked LSTM
layers, whose cuDNN state is one per device: such fits train one after another, `width`.) Each fit keeps its
own scaled copy of the panel on the device, so device memory grows with the fits at once.

A CPU has no idle device to fill (a fit already uses every core), so there the fits run one after another
through `fit_job` (what `fit` runs): the same results, never slower than before.

A stream comes from torch's pool of 32 per device; at most `train.concurrent_fits` (<= 32) are in use, and a
stream is handed to the next fit only after the previous fit on it has dropped its graph (also when a fit
fails: `_Loop.steps` closes its graph in a `finally`), so that no two live graphs of one `fit_many` share a
capture stream (pytorch/pytorch#193402, issue 15's crash). The pool's streams are reused round-robin by
later calls too, which is safe because every fit drops its graph before it returns.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from forecasting.threads import thread_scope
from forecasting.train import FitJob, TrainedModel, fit_job, own_stream, prepared, resolve_device
from nightcast.errors import NightcastError

log = logging.getLogger("nightcast.forecasting.together")


@dataclass
class _Running:
    index: int
    trained: TrainedModel
    steps: Iterator[None]
    stream: torch.cuda.Stream | None
    random: object  # the fit's own random state (`_OwnRandom`)


class _OwnRandom:
    """Each fit draws its dropout masks from a random state of its own, as it would alone.

    A CUDA graph replays its random ops from the generator state that was current when it was captured, and
    refills that state's seed and offset on the device at each replay: graphs of one shared state replayed on
    several streams race for it (seen on an H200: two runs of the same fits in turns gave different weights).
    So each fit gets a clone of the default CUDA generator's state, seeded by its own `manual_seed`, current
    whenever it takes its turn (`graphsafe_set_state` swaps a pointer: no copy, graph-safe). A CPU (whose
    turns only serve the tests) saves and restores the CPU generator's state around each turn instead."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        index = device.index if device.index is not None else torch.cuda.current_device() if self.cuda else 0
        self.generator = torch.cuda.default_generators[index] if self.cuda else None
        self.home = self.generator.graphsafe_get_state() if self.cuda else None

    def start(self):
        """Call right after a fit's `manual_seed` (which seeded the home state): its own state, from that seed."""
        return self.generator.clone_state() if self.cuda else torch.get_rng_state()

    @contextlib.contextmanager
    def turn(self, fit_: _Running) -> Iterator[None]:
        if self.cuda:
            self.generator.graphsafe_set_state(fit_.random)
            try:
                yield
            finally:
                self.generator.graphsafe_set_state(self.home)  # a new fit's manual_seed must not reseed this one
            return
        torch.set_rng_state(fit_.random)
        try:
            yield
        finally:
            fit_.random = torch.get_rng_state()


def width(jobs: Sequence[FitJob], device: torch.device) -> int:
    """How many of `jobs` train at once on `device`: 1 on a CPU, else `train.concurrent_fits` of the first.

    Also 1 when a job drops out between stacked LSTM layers: cuDNN keeps one dropout-state buffer per device
    for every LSTM, rebuilt after any `manual_seed`, so fits in turns would share it (their graphs racing on
    it, and a new fit's seed freeing it under the running fits' graphs)."""
    if device.type != "cuda" or not jobs:
        return 1
    if any(j.model_settings.num_layers > 1 and j.model_settings.dropout > 0 for j in jobs):
        return 1
    return max(1, min(jobs[0].train_settings.concurrent_fits, len(jobs)))


def fit_many(jobs: Sequence[FitJob], at_once: int | None = None) -> list[TrainedModel]:
    """`fit` of every job, in order; on a GPU up to `train.concurrent_fits` of them at once (module doc).
    `at_once`: override that choice (a test takes turns on a CPU too, to check the turns against `fit`)."""
    if not jobs:
        return []
    devices = {resolve_device(job.train_settings.device) for job in jobs}
    if len(devices) > 1:
        raise NightcastError(f"fit_many trains on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    at_once = width(jobs, device) if at_once is None else max(1, min(at_once, len(jobs)))
    if at_once == 1:
        return [fit_job(job) for job in jobs]
    started = time.perf_counter()
    results = _in_turns(jobs, device, at_once)
    seconds = time.perf_counter() - started
    log.info("trained %d fits, %d at a time on %s, in %.1f s", len(jobs), at_once, device, seconds)
    return results


def _in_turns(jobs: Sequence[FitJob], device: torch.device, at_once: int) -> list[TrainedModel]:
    results: list[TrainedModel | None] = [None] * len(jobs)
    cuda = device.type == "cuda"
    # consecutive: distinct streams of the pool; a CPU has none (its turns only serve the tests)
    free = [torch.cuda.Stream(device) if cuda else None for _ in range(at_once)]
    waiting = deque(enumerate(jobs))
    running: list[_Running] = []
    rng_devices = [device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=rng_devices), thread_scope(jobs[0].train_settings.threads) as threads:
        random = _OwnRandom(device)
        try:
            while waiting or running:
                while waiting and free:
                    index, job = waiting.popleft()
                    stream = free.pop()
                    with own_stream(device, stream):
                        trained, loop = prepared(job, device, threads)  # seeds: weights and its random state
                        steps = loop.steps(job.stop_after, warm=job.init is not None, progress=False)
                    running.append(_Running(index, trained, steps, stream, random.start()))
                for turn in list(running):
                    with _on(turn.stream), random.turn(turn):
                        done = next(turn.steps, StopIteration) is StopIteration
                    if done:  # its graph is gone (`_Loop.steps` closes it): the stream may capture another
                        running.remove(turn)
                        free.append(turn.stream)
                        results[turn.index] = turn.trained
        finally:  # one fit failed (or Ctrl-C): the others end now too, each closing its graph on its own stream
            for turn in running:
                with _on(turn.stream):
                    turn.steps.close()
    if cuda:
        torch.cuda.synchronize(device)
    assert all(r is not None for r in results), "a fit in turns ended without its model"
    return results


def _on(stream: torch.cuda.Stream | None):
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
