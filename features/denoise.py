"""Causal denoisers: the value at t uses data <= t only.

Each filter maps a log-price series to a denoised log-price series. They feed
features only; targets are always built from raw prices (`features.build`).

- `hampel_returns`: clip outlying daily returns against a trailing median/MAD.
- `ewma`: exponentially weighted mean, started at the first value.
- `kalman_local_level`: the filtered (never smoothed) local-level Kalman filter.
- `wavelet_trailing`: at every t, wavelet-shrink the last W points and keep the last.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pywt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from features import kernels
from features.settings import DenoiseSettings

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample times this estimates its standard deviation
WAVELET_CHUNK = 16_384  # windows transformed per call: bounds memory at chunk x window floats


def hampel_returns(log_price: np.ndarray, window: int, n_sigmas: float) -> np.ndarray:
    """Clip outlying daily log returns with a trailing Hampel filter; return the rebuilt log price.

    The return at t is compared with the median and MAD of the `window` returns
    ending at t (t included) and clipped to median +- n_sigmas * robust sigma.
    The first window-1 returns, and windows with zero MAD (flat stretches), are
    left as they are: there is nothing trustworthy to compare them with.
    """
    lp = np.asarray(log_price, dtype=np.float64)
    if lp.size < 2:
        return lp.copy()
    r = np.diff(lp)
    clipped = r.copy()
    if r.size >= window:
        w = sliding_window_view(r, window)  # (n - window + 1, window); row j ends at return j + window - 1
        med = np.median(w, axis=1)
        sigma = MAD_TO_SIGMA * np.median(np.abs(w - med[:, None]), axis=1)
        tail = r[window - 1 :]
        bounded = np.clip(tail, med - n_sigmas * sigma, med + n_sigmas * sigma)
        clipped[window - 1 :] = np.where(sigma > 0, bounded, tail)
    return np.concatenate(([lp[0]], lp[0] + np.cumsum(clipped)))


def ewma(log_price: np.ndarray, span: float) -> np.ndarray:
    """Causal exponentially weighted mean, alpha = 2 / (span + 1), started at the first value."""
    x = np.asarray(log_price, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    alpha = 2.0 / (span + 1.0)
    out, _ = lfilter([alpha], [1.0, alpha - 1.0], x[1:], zi=[(1.0 - alpha) * x[0]])
    return np.concatenate(([x[0]], out))


def kalman_gains(q: float, r: float, tol: float = 1e-14, max_steps: int = 100_000) -> np.ndarray:
    """Kalman gains K_1, K_2, ... of the local-level model started at P_0 = r, up to convergence.

    They do not depend on the data, so they are computed once; after the last
    one the filter runs at the steady-state gain.
    """
    gains, p = [], r
    for _ in range(max_steps):
        p_pred = p + q
        k = p_pred / (p_pred + r)
        gains.append(k)
        p = (1.0 - k) * p_pred
        if len(gains) > 1 and abs(gains[-1] - gains[-2]) < tol:
            break
    return np.asarray(gains)


def kalman_local_level(log_price: np.ndarray, q: float, r: float) -> np.ndarray:
    """Filtered level of y_t = x_t + v_t, x_t = x_{t-1} + w_t (var v = r, var w = q); x_0 = y_0.

    x_t = x_{t-1} + K_t (y_t - x_{t-1}) with the data-independent gains of
    `kalman_gains`; the steady-state tail is one `lfilter` call.
    """
    y = np.asarray(log_price, dtype=np.float64)
    out = np.empty_like(y)
    if y.size == 0:
        return out
    gains = kalman_gains(q, r)
    out[0] = y[0]
    head = min(y.size - 1, gains.size)
    for t in range(1, head + 1):
        out[t] = out[t - 1] + gains[t - 1] * (y[t] - out[t - 1])
    if y.size - 1 > head:
        k = gains[-1]
        out[head + 1 :], _ = lfilter([k], [1.0, k - 1.0], y[head + 1 :], zi=[(1.0 - k) * out[head]])
    return out


def wavelet_trailing(log_price: np.ndarray, window: int, wavelet: str = "db4", level: int = 2) -> np.ndarray:
    """Trailing-window wavelet shrinkage: for each t, decompose y[t-W+1..t], soft-threshold, keep the last value.

    Details are soft-thresholded at the universal threshold sigma * sqrt(2 log W),
    sigma from the MAD of the finest details of that window only. The first W-1
    values are left as they are. Vectorised: all windows of a chunk go through
    PyWavelets at once along the last axis.
    """
    y = np.asarray(log_price, dtype=np.float64)
    out = y.copy()
    if y.size < window:
        return out
    views = sliding_window_view(y, window)  # (n - W + 1, W), row j ends at t = j + W - 1
    level = min(level, pywt.dwt_max_level(window, pywt.Wavelet(wavelet).dec_len)) or 1
    universal = math.sqrt(2.0 * math.log(window))
    for start in range(0, views.shape[0], WAVELET_CHUNK):
        block = views[start : start + WAVELET_CHUNK]
        coeffs = pywt.wavedec(block, wavelet, level=level, axis=-1, mode="symmetric")
        sigma = np.median(np.abs(coeffs[-1]), axis=-1, keepdims=True) / 0.6745
        threshold = sigma * universal
        coeffs[1:] = [np.sign(c) * np.maximum(np.abs(c) - threshold, 0.0) for c in coeffs[1:]]
        rebuilt = pywt.waverec(coeffs, wavelet, axis=-1, mode="symmetric")[:, :window]
        out[start + window - 1 : start + window - 1 + block.shape[0]] = rebuilt[:, -1]
    return out


def denoise_series(log_price: np.ndarray, settings: DenoiseSettings) -> np.ndarray:
    """Apply the configured filter to one ticker's log prices."""
    s = settings
    if s.method == "hampel":
        return hampel_returns(log_price, s.hampel_window, s.hampel_sigmas)
    if s.method == "ewma":
        return ewma(log_price, s.ewma_span)
    if s.method == "kalman":
        return kalman_local_level(log_price, s.kalman_q, s.kalman_r)
    if s.method == "wavelet":
        return wavelet_trailing(log_price, s.wavelet_window, s.wavelet, s.wavelet_level)
    return np.asarray(log_price, dtype=np.float64).copy()


def denoise(frame: pl.DataFrame, settings: DenoiseSettings) -> pl.DataFrame:
    """Add `log_price_dn`, the causally denoised log adj_close, per ticker.

    `frame` must be sorted by (ticker, date).
    """
    lp = pl.col("adj_close").log()
    if settings.method == "none":
        return frame.with_columns(lp.alias("log_price_dn"))
    if settings.method == "ewma":  # the same recursion as `ewma`, in polars
        return frame.with_columns(
            lp.ewm_mean(span=settings.ewma_span, adjust=False).over("ticker").alias("log_price_dn")
        )
    values = np.log(frame["adj_close"].to_numpy())
    lengths = frame["ticker"].rle().struct.field("len").to_numpy()
    starts = (np.cumsum(lengths) - lengths).astype(np.int64)  # each ticker's first row
    if settings.method == "hampel" and np.isfinite(values).all():
        # the compiled kernel: the same values as `hampel_returns` per ticker (2.1 s -> 0.1 s on 3.1M rows)
        out = kernels.hampel(values, starts, settings.hampel_window, settings.hampel_sigmas, MAD_TO_SIGMA)
        return frame.with_columns(pl.Series("log_price_dn", out, dtype=pl.Float64))
    out = np.empty_like(values)
    for a, b in zip(starts, np.append(starts[1:], len(values)), strict=True):
        out[a:b] = denoise_series(values[a:b], settings)
    return frame.with_columns(pl.Series("log_price_dn", out, dtype=pl.Float64))
