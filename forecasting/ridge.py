"""Ridge regression solved from the rows' centred second moments, summed a block of rows at a time.

The ridge baseline fits ~2.8M rows x 23 features at 500 tickers x 25 years, once per penalty it chooses from:
scikit-learn's `Ridge` needs the rows as one array (and centres them in float32), ~0.25 GiB gathered and
scaled anew for every penalty, the peak of the nightly's evaluation. The normal equations need only the
features' cross-products, (F, F) and (F, K): summed here in float64 over blocks of rows, once, and solved for
every penalty in microseconds. The same minimiser as `Ridge(alpha).fit(X, y)` (intercept unpenalised, the
features centred), with float64 sums instead of float32 ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 1 << 16  # rows gathered at a time: ~6 MB of float32 features at 23 features, ~12 MB as float64


@dataclass(frozen=True)
class Moments:
    """Count, means and centred cross-products of the features `x` (F columns) and targets `y` (K columns)."""

    n: int
    mean_x: np.ndarray  # (F,)
    mean_y: np.ndarray  # (K,)
    sxx: np.ndarray  # (F, F) sum over rows of (x - mean_x)(x - mean_x)'
    sxy: np.ndarray  # (F, K) sum over rows of (x - mean_x)(y - mean_y)'

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> Moments:
        """The moments of one block (float64 from here on)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64).reshape(len(x), -1)
        mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
        xc = x - mean_x
        return cls(len(x), mean_x, mean_y, xc.T @ xc, xc.T @ (y - mean_y))

    def merge(self, other: Moments) -> Moments:
        """The moments of both blocks' rows together (Chan, Golub and LeVeque's pairwise update)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        dx, dy = other.mean_x - self.mean_x, other.mean_y - self.mean_y
        weight = self.n * other.n / n
        return Moments(
            n,
            self.mean_x + dx * (other.n / n),
            self.mean_y + dy * (other.n / n),
            self.sxx + other.sxx + np.outer(dx, dx) * weight,
            self.sxy + other.sxy + np.outer(dx, dy) * weight,
        )


def moments(rows: np.ndarray, features: Callable[[np.ndarray], np.ndarray], targets: np.ndarray) -> Moments:
    """`Moments` of the features of `rows` (`features(block)`: the (B, F) features of a block of row indices)
    against `targets[rows]`, a block of rows at a time: no array of all the rows' features is ever built."""
    if len(rows) == 0:
        raise ValueError("a ridge fit needs at least one row")
    total = None
    for start in range(0, len(rows), BLOCK_ROWS):
        block = rows[start : start + BLOCK_ROWS]
        part = Moments.of(features(block), targets[block])
        total = part if total is None else total.merge(part)
    return total


@dataclass(frozen=True)
class RidgeFit:
    """Coefficients (K, F) and intercepts (K,) of one ridge fit per target column."""

    coef_: np.ndarray
    intercept_: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, K) forecasts of the rows `x` (N, F)."""
        return np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_


def solve(m: Moments, alphas) -> RidgeFit:
    """The ridge fit of each target column k on the features with penalty `alphas[k]` (one penalty: all of them):
    argmin |y - b - X w|^2 + alpha |w|^2, the intercept b unpenalised. An exactly singular system (no penalty and
    a feature with no spread) takes the least-squares solution of minimum norm; a nearly singular one with no
    penalty is as unstable as its least squares are."""
    k = m.sxy.shape[1]
    alphas = np.broadcast_to(np.asarray(alphas, dtype=np.float64), (k,))
    if (alphas < 0).any() or not np.isfinite(alphas).all():
        raise ValueError(f"ridge penalties are finite and >= 0, got {alphas.tolist()}")
    eye = np.eye(len(m.sxx))
    coef = np.empty((k, len(m.sxx)))
    for j, alpha in enumerate(alphas):
        system = m.sxx + alpha * eye
        try:
            coef[j] = np.linalg.solve(system, m.sxy[:, j])
        except np.linalg.LinAlgError:
            coef[j] = np.linalg.lstsq(system, m.sxy[:, j], rcond=None)[0]
    return RidgeFit(coef, m.mean_y - coef @ m.mean_x)
