"""How big a training batch is on the device at hand, and the learning rate that goes with it.

On a CPU every sample costs the same whatever the batch, so the batch stays `train.batch_size` (and a CPU fit
stays bit-identical to earlier versions). On a GPU a step at batch 256 is a few hundred microseconds of
kernel launches whatever the batch, so a bigger batch is nearly free throughput: it grows with the training
span (`n_train / min_steps_per_epoch`, so a small universe keeps enough optimiser steps per epoch to learn)
up to `max_batch_size`, in whole multiples of `batch_size`. Adam's effective step scales with the square
root of the batch (the noise of the gradient estimate falls as 1/sqrt(batch)), so the learning rate is
scaled by sqrt(batch / batch_size): the square-root rule of Malladi et al. (2022) for adaptive optimisers.
`benchmarks/train.py --device cuda` measures the validation loss this gives beside the base batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from forecasting.settings import TrainSettings


class BatchPlan(NamedTuple):
    batch_size: int
    learning_rate: float


def batch_plan(n_train: int, settings: TrainSettings, device: torch.device) -> BatchPlan:
    """The batch size and peak learning rate of a fit of `n_train` samples on `device`."""
    base = settings.batch_size
    if device.type != "cuda" or settings.max_batch_size <= base:
        return BatchPlan(base, settings.learning_rate)
    multiple = max(1, min(settings.max_batch_size // base, n_train // (settings.min_steps_per_epoch * base)))
    batch = multiple * base
    return BatchPlan(batch, settings.learning_rate * math.sqrt(batch / base))
