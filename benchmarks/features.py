"""Feature benchmark: the full feature set for 500 tickers x 25 years of synthetic daily bars (~3.1M rows).

Side by side in one run: nightcast's lazy-polars build and the same features
written with pandas groupby/rolling/ewm. Denoisers are timed apart, each on the
same data. Finally the peak extra memory of building the training windows
(panel + splits + strided window view), relative to the feature matrix.

    .venv/bin/python benchmarks/features.py [--tickers 500] [--years 25]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import synthetic  # noqa: E402
from features.build import build_features  # noqa: E402
from features.denoise import denoise  # noqa: E402
from features.settings import DenoiseSettings, FeatureSettings, WindowSettings  # noqa: E402
from features.windows import date_splits, make_panel  # noqa: E402


def pandas_features(df: pd.DataFrame, s: FeatureSettings) -> pd.DataFrame:
    """The same features and targets as features.build, with pandas groupby."""
    df = df.sort_values(["ticker", "date"]).reset_index(drop=True)
    key = df["ticker"]
    lp = df["log_price_dn"]
    g = lp.groupby(key)
    out = pd.DataFrame({"ticker": key, "date": df["date"]})
    ret = g.diff()
    for w in s.return_windows:
        out[f"ret_{w}"] = lp - g.shift(w)
    for k in s.return_lags:
        out[f"ret_1_lag{k}"] = ret.groupby(key).shift(k)
    for w in s.vol_windows:
        out[f"vol_{w}"] = ret.groupby(key).rolling(w).std().reset_index(level=0, drop=True)
    a = 1 / s.rsi_window
    gain = ret.clip(lower=0).groupby(key).ewm(alpha=a, adjust=False).mean().reset_index(level=0, drop=True)
    loss = (-ret).clip(lower=0).groupby(key).ewm(alpha=a, adjust=False).mean().reset_index(level=0, drop=True)
    out[f"rsi_{s.rsi_window}"] = gain / (gain + loss) - 0.5
    fast, slow, signal = s.macd
    line = (g.ewm(span=fast, adjust=False).mean() - g.ewm(span=slow, adjust=False).mean()).reset_index(
        level=0, drop=True
    )
    out["macd"] = line
    out["macd_hist"] = line - line.groupby(key).ewm(span=signal, adjust=False).mean().reset_index(level=0, drop=True)
    w = s.bollinger_window
    mean = g.rolling(w).mean().reset_index(level=0, drop=True)
    std = g.rolling(w).std().reset_index(level=0, drop=True)
    out[f"bb_pctb_{w}"] = ((lp - (mean - 2 * std)) / (4 * std)).clip(-1, 2)
    la = np.log(df["adj_close"])
    out["denoise_gap"] = lp - la
    out["dow"] = (df["date"].dt.dayofweek + 1 - 3.0) / 2.0
    month = df["date"].dt.month
    out["month_sin"] = np.sin(2 * np.pi * month / 12)
    out["month_cos"] = np.cos(2 * np.pi * month / 12)
    out["hl_range"] = np.log(df["high"] / df["low"])
    out["co_return"] = np.log(df["close"] / df["open"])
    lv = np.log1p(df["volume"])
    gv = lv.groupby(key)
    vw = s.volume_window
    vmean = gv.rolling(vw).mean().reset_index(level=0, drop=True)
    vstd = gv.rolling(vw).std().reset_index(level=0, drop=True)
    out[f"volume_z_{vw}"] = ((lv - vmean) / vstd).clip(-5, 5)
    gl = la.groupby(key)
    for h in s.horizons:
        out[f"y_h{h}"] = gl.shift(-h) - la
    core = [
        c
        for c in out.columns
        if c not in ("ticker", "date", "hl_range", "co_return", f"volume_z_{vw}") and not c.startswith("y_h")
    ]
    return out.replace([np.inf, -np.inf], np.nan).dropna(subset=core)


class PeakRSS:
    """Samples this process's resident memory every millisecond; `peak` minus `base` is the extra memory."""

    def __enter__(self) -> PeakRSS:
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=25)
    args = parser.parse_args()

    raw = synthetic(args.tickers, args.years, faults=False).sort("ticker", "date")
    rows = raw.height
    settings = FeatureSettings()

    denoisers = {}
    for method in ("none", "ewma", "hampel", "kalman", "wavelet"):
        out, seconds = timed(lambda m=method: denoise(raw, DenoiseSettings(method=m)))
        denoisers[method] = seconds
    prices = denoise(raw, DenoiseSettings(method="none"))  # features timed on a fixed denoised column

    ff, t_nc = timed(lambda: build_features(prices, settings), repeat=3)
    pdf = prices.to_pandas()
    reference, t_pd = timed(lambda: pandas_features(pdf, settings))
    same = np.allclose(
        ff.frame.select(ff.features).to_numpy(), reference[ff.features].to_numpy(), rtol=1e-6, atol=1e-9, equal_nan=True
    )

    with PeakRSS() as mem:
        panel = make_panel(ff, settings.max_horizon)
        splits = date_splits(panel, WindowSettings())
        view = panel.windows(WindowSettings().lookback)
    feature_bytes = panel.X.nbytes
    extra = mem.peak - mem.base
    materialised = len(splits.train) * WindowSettings().lookback * panel.X.shape[1] * 4

    print(
        f"{args.tickers} tickers x {args.years} years = {rows:,} rows, {len(ff.features)} features, "
        f"polars threads {pl.thread_pool_size()}"
    )
    print(f"{'features':<28}{'seconds':>10}{'rows/s':>14}")
    print(f"{'nightcast (polars, best of 3)':<28}{t_nc:>10.2f}{rows / t_nc:>14,.0f}")
    print(f"{'pandas groupby/rolling':<28}{t_pd:>10.2f}{rows / t_pd:>14,.0f}")
    print(f"ratio pandas/nightcast: {t_pd / t_nc:.1f}x   same values: {same}")
    print(f"\n{'denoiser':<28}{'seconds':>10}{'rows/s':>14}")
    for method, seconds in denoisers.items():
        print(f"{method:<28}{seconds:>10.2f}{rows / seconds:>14,.0f}")
    print(
        f"\nwindows: feature matrix {feature_bytes / 2**20:,.0f} MiB (float32); peak extra memory while building "
        f"panel + splits + window view {extra / 2**20:,.0f} MiB = {extra / feature_bytes:.2f}x; "
        f"view shape {view.shape} shares memory with X: {np.shares_memory(view, panel.X)}"
    )
    print(f"(materialising the {len(splits.train):,} training windows would take {materialised / 2**30:,.1f} GiB)")
    print(
        f"RESULT features ratio={t_pd / t_nc:.1f} rows_per_s={rows / t_nc:.0f} seconds={t_nc:.2f} "
        f"pandas_seconds={t_pd:.2f} same={same} window_mem_ratio={extra / feature_bytes:.2f} "
        + " ".join(f"{m}_s={s:.2f}" for m, s in denoisers.items())
    )


if __name__ == "__main__":
    main()
