"""One optimisation step of a fit, launched kernel by kernel (`EagerStep`) or replayed as a CUDA graph
(`GraphStep`), and the loss both minimise.

At nightcast's sizes a GPU step is a few dozen small kernels, each a few microseconds of work behind ~10 us
of Python and launch overhead: the GPU waits on the host (0.04% of an H100's bf16 rate, issue 15). A CUDA
graph records the whole step once (window gather, forward, loss, backward, gradient clipping, AdamW) and
replays it with one launch. A graph has fixed shapes and addresses, so the step reads its batch from a
static index buffer; the last, shorter batch of an epoch is padded with filler rows of weight 0, which
leaves its loss and gradient those of the real rows. The learning rate is a device tensor the host
refills before each replay, and the epoch's loss is summed on the device: nothing inside an epoch waits
for the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from forecasting.model import Forecast, pinball_loss

Inputs = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # batch rows -> (windows, ticker index)


def loss_of(out: Forecast, target: torch.Tensor, levels: torch.Tensor | None, weight: torch.Tensor | None = None):
    """MSE on the scaled targets, or the pinball loss when the model forecasts quantiles.

    `weight` (B,): 1 for a real row, 0 for a filler row of a padded batch; the loss is then the mean over
    the real rows, exactly what the unpadded batch would give.
    """
    if levels is None:
        error = (out.mean.float() - target) ** 2  # (B, K)
        if weight is None:
            return torch.mean(error)
        return (error.mean(dim=1) * weight).sum() / weight.sum()
    return pinball_loss(out.quantiles.float(), target, levels, weight)


def cosine_lr(step: int, total_steps: int, peak: float, floor: float) -> float:
    """The learning rate of step `step` (0-based) of a cosine decay from `peak` to `floor` over `total_steps`
    (torch's CosineAnnealingLR, in closed form: a graph's learning rate is a tensor the host refills)."""
    return floor + (peak - floor) * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)) / 2


class Step(Protocol):
    total: torch.Tensor  # sum over the epoch of loss x rows, on the device

    def __call__(self, rows: torch.Tensor) -> None: ...


class _Body:
    """What both kinds of step do: forward, loss, backward, clip, optimiser step, loss summed on the device."""

    def __init__(self, model, inputs: Inputs, targets: torch.Tensor, optimizer, levels, grad_clip: float, autocast):
        self.model, self.inputs, self.targets, self.optimizer = model, inputs, targets, optimizer
        self.levels, self.grad_clip, self.autocast = levels, grad_clip, autocast
        self.params = list(model.parameters())
        self.total = torch.zeros((), device=targets.device)

    def run(self, rows: torch.Tensor, weight: torch.Tensor | None, count) -> None:
        with self.autocast():
            out = self.model(*self.inputs(rows))
        loss = loss_of(out, self.targets[rows], self.levels, weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.total += loss.detach() * count

    def close(self) -> None:
        """Free what the step holds on the device (a graph's memory) once the fit is done."""


class EagerStep(_Body):
    """Kernel by kernel: the CPU path (and a GPU with `train.cuda_graph = false`); any batch size."""

    def __init__(self, *args, schedule):
        super().__init__(*args)
        self.schedule = schedule

    def __call__(self, rows: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.run(rows, None, rows.numel())
        self.schedule.step()


class GraphStep(_Body):
    """The step captured once as a CUDA graph and replayed; the first `WARMUP` steps run eagerly on a side
    stream (they are real steps) so that cuBLAS/cuDNN workspaces and the optimiser's state exist before
    capture, as torch's documentation asks."""

    WARMUP = 3

    def __init__(self, *args, batch_size: int, lr: torch.Tensor, lr_at: Callable[[int], float]):
        super().__init__(*args)
        device = self.targets.device
        self.rows = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.weight = torch.ones(batch_size, device=device)
        self.count = torch.zeros((), device=device)
        self.lr, self.lr_at, self.done = lr, lr_at, 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, rows: torch.Tensor) -> None:
        n, size = rows.numel(), self.rows.numel()
        self.rows[:n].copy_(rows)
        if n < size:  # the epoch's last batch: filler rows (a real row, weight 0) keep the shapes fixed
            self.rows[n:].copy_(rows[:1].expand(size - n))
            self.weight[n:].zero_()
        self.count.fill_(n)
        self.lr.fill_(self.lr_at(self.done))
        if self.graph is None:
            self._eager_or_capture()  # a warm-up step runs now; a capture only records
        if self.graph is not None:
            self.graph.replay()
        if n < size:
            self.weight.fill_(1.0)
        self.done += 1

    def close(self) -> None:
        if self.graph is not None:
            self.graph.reset()
            self.graph = None

    def _eager_or_capture(self) -> None:
        # warm-up and capture on the caller's stream when it has one of its own (every fit does: `own_stream`
        # in forecasting/train.py), so that no two fits' graphs share a capture stream and its cuBLAS
        # workspace (pytorch/pytorch#193402); on the default stream, which cannot capture, on a side stream
        current = torch.cuda.current_stream()
        own = current if current != torch.cuda.default_stream(current.device) else None
        if self.done < self.WARMUP:
            side = own or torch.cuda.Stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                self.run(self.rows, self.weight, self.count)
            current.wait_stream(side)
            return
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward then writes fresh gradients each replay
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a fit captured in one worker thread does not break CUDA work in the others
        with torch.cuda.graph(self.graph, stream=own, capture_error_mode="thread_local"):
            self.run(self.rows, self.weight, self.count)
