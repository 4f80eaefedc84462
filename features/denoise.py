"""Causal denoisers: the value at t uses data <= t only.

Each filter maps a log-price series to a denoised log-price series. They feed
features only; targets are always built from raw prices (`features.build`).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from features.settings import DenoiseSettings

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample times this estimates its standard deviation


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
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(x)
    if x.size:
        out[0] = x[0]
        for t in range(1, x.size):
            out[t] = alpha * x[t] + (1 - alpha) * out[t - 1]
    return out


def denoise_expr(settings: DenoiseSettings) -> pl.Expr | None:
    """A per-ticker polars expression for filters expressible in polars (None otherwise)."""
    lp = pl.col("adj_close").log()
    if settings.method == "none":
        return lp
    if settings.method == "ewma":  # same recursion as `ewma`, in polars
        return lp.ewm_mean(span=settings.ewma_span, adjust=False)
    return None


def denoise(frame: pl.DataFrame, settings: DenoiseSettings) -> pl.DataFrame:
    """Add `log_price_dn`, the causally denoised log adj_close, per ticker.

    `frame` must be sorted by (ticker, date).
    """
    expr = denoise_expr(settings)
    if expr is not None:
        return frame.with_columns(expr.over("ticker").alias("log_price_dn"))
    parts = []
    for group in frame.partition_by("ticker", maintain_order=True):
        lp = np.log(group["adj_close"].to_numpy())
        parts.append(hampel_returns(lp, settings.hampel_window, settings.hampel_sigmas))
    return frame.with_columns(pl.Series("log_price_dn", np.concatenate(parts) if parts else [], dtype=pl.Float64))
