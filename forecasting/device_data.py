"""A panel's arrays on an accelerator: copied there once while the panel lives, scaled there for each model.

A backtest or nightly run fits and predicts many times from one panel, each model with its own scaler (fit
on its own training span). On a GPU, copying the scaled panel to the device on every `fit` and `predict`
call cost more than the forecasts (issue 15: 117-143k samples/s on a 500-ticker universe). Here the raw
arrays travel once and each model standardises them on the device, with `Scaler.transform`'s rule (mean
and std of the training span, missing values to 0), elementwise in float32 and so bit-identical to it.
On the CPU there is nothing to move: `torch.from_numpy` shares the arrays' memory.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from features.windows import Scaler, column_moments

_resident: dict[tuple[int, str], tuple[weakref.ref, torch.Tensor]] = {}
_lock = threading.RLock()  # re-entrant: a collection during a copy may free a cached array, whose callback locks


def resident(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """`array` on `device`, copied the first time it is asked for and kept until the array is freed."""
    key = (id(array), str(device))
    with _lock:
        hit = _resident.get(key)
        if hit is not None and hit[0]() is array:  # the same object, not a new one at a recycled id
            return hit[1]
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
        _resident[key] = (weakref.ref(array, lambda _ref, key=key: _forget(key)), tensor)
        return tensor


def _forget(key: tuple[int, str]) -> None:
    with _lock:
        _resident.pop(key, None)


def resident_count() -> int:
    """How many arrays are held on devices (for tests)."""
    return len(_resident)


def column_moments_at(
    array: np.ndarray, rows: np.ndarray | None, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`features.windows.column_moments(array, rows)` (count, mean, std per column, NaN ignored, float64), on
    `device`. On a GPU from the array resident there, a block of rows at a time: a refit's scaler on the host
    is time the GPU waits, 24 times in a 12-refit walk-forward of two models (issue 15: numpy's took 3.5 s of a
    ~10 s refit at 500 tickers x 25 years in an H200 profile; the host's float64 blocks ~0.4 s on a 2-core
    CPU). The figures agree with the host's to float64 rounding (another summation order), so a fit's scaler
    differs between a GPU and a CPU in its last bits, like everything else the two compute."""
    if device.type == "cpu":
        return column_moments(array, rows)
    raw = resident(array, device)
    index = None if rows is None else torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)).to(device)
    return tuple(v.cpu().numpy() for v in tensor_moments(raw, index))


def tensor_moments(raw: torch.Tensor, index: torch.Tensor | None, block: int = 1 << 20) -> tuple[torch.Tensor, ...]:
    """Count, mean and std of each column of `raw` (of its rows `index`), NaN ignored, in float64 on `raw`'s
    device: two passes over blocks of `block` rows (the sums, then the squared deviations from the mean)."""
    total = len(raw) if index is None else len(index)
    columns = raw.shape[1]
    zeros = lambda: torch.zeros(columns, dtype=torch.float64, device=raw.device)  # noqa: E731
    n, total_sum, squares = zeros(), zeros(), zeros()

    def blocks():
        for start in range(0, total, block):
            part = raw[start : start + block] if index is None else raw[index[start : start + block]]
            part = part.double()
            yield part, ~torch.isnan(part)

    for part, present in blocks():
        n += present.sum(dim=0)
        total_sum += torch.where(present, part, 0.0).sum(dim=0)
    mean = total_sum / n  # NaN where a column has no value, as `column_moments`
    for part, present in blocks():
        deviation = torch.where(present, part - mean, 0.0)
        squares += (deviation * deviation).sum(dim=0)
    return n, mean, torch.sqrt(squares / n)


def scaled_features(X: np.ndarray, scaler: Scaler, device: torch.device) -> torch.Tensor:
    """`scaler.transform(X)` as a tensor on `device`."""
    if device.type == "cpu":
        return torch.from_numpy(scaler.transform(X))
    return standardise(resident(X, device), scaler)


def standardise(raw: torch.Tensor, scaler: Scaler) -> torch.Tensor:
    """`Scaler.transform` on a tensor, on the tensor's device (tested bit-identical to it)."""
    mean, std = (torch.from_numpy(v).to(raw.device) for v in (scaler.mean, scaler.std))
    return torch.nan_to_num((raw - mean) / std, nan=0.0)


def standardise_in_place(values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`standardise` of float32 `values` with the scaler's `mean` and `std` (as tensors), overwriting `values`:
    the same operations in the same order, so the same values, with no temporary of their size."""
    values.sub_(mean).div_(std)
    return torch.nan_to_num_(values, nan=0.0)


def scaled_targets(Y: np.ndarray, scale: np.ndarray, device: torch.device) -> torch.Tensor:
    """Targets divided by the per-horizon scale, unknown ones 0, as a tensor on `device`."""
    if device.type == "cpu":
        return torch.from_numpy(np.nan_to_num(Y / scale, nan=0.0).astype(np.float32))
    return torch.nan_to_num(resident(Y, device) / torch.from_numpy(scale).to(device), nan=0.0)
