"""Baselines that every model is judged against, on the same origins."""

from __future__ import annotations

import numpy as np


def random_walk(n_samples: int, n_horizons: int) -> np.ndarray:
    """The random walk: tomorrow's price is today's, i.e. a zero forward log return."""
    return np.zeros((n_samples, n_horizons), dtype=np.float32)
