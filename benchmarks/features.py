"""Feature benchmark: the full feature set for 500 tickers x 25 years of synthetic daily bars (~3.1M rows).

Side by side in one run: nightcast's polars build and the same features
written with pandas groupby/rolling/ewm, alternating, best of --repeat runs
each (this VM's timings swing by +-30%, so both get the same tries). The
first nightcast call is reported apart: it loads the compiled window kernels
(or compiles them, on a fresh install). Denoisers are timed apart, each on
the same data. Finally the peak extra memory of building the training
windows (panel + splits + strided window view), relative to the feature
matrix.

    .venv/bin/python benchmarks/features.py [--tickers 500] [--years 25]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
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
    out["dow"] = (df["date"].dt.day_of_week + 1 - 3.0) / 2.0
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


# Allocators that hand freed memory back at once, so resident memory follows the memory in use: with
# their defaults, new arrays land in pages earlier work freed and the extra memory reads far too low
# (it read 0.00-1.09x while the arrays held afterwards alone were 1.61x). Only the measuring child
# runs so; the timings above run with the defaults.
EXACT_RSS = {
    "_RJEM_MALLOC_CONF": "background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0",
    "MALLOC_TRIM_THRESHOLD_": "0",
}


def window_memory(tickers: int, years: int) -> dict:
    """In this process: build features, then the peak extra resident memory of panel + splits + window view."""
    settings = FeatureSettings()
    prices = denoise(synthetic(tickers, years, faults=False), DenoiseSettings(method="none"))
    ff = build_features(prices, settings)
    del prices
    gc.collect()
    time.sleep(1.0)  # jemalloc's background thread hands back what the feature build freed
    with PeakRSS() as mem:
        panel = make_panel(ff, settings.max_horizon)
        splits = date_splits(panel, WindowSettings())
        view = panel.windows(WindowSettings().lookback)
    held = sum(a.nbytes for a in (panel.X, panel.Y, panel.dates, panel.price, panel.target_end, panel.ticker_id))
    held += sum(a.nbytes for a in (splits.train, splits.val, splits.test))
    return {
        "feature_bytes": panel.X.nbytes,
        "extra": mem.peak - mem.base,
        "held": held,
        "view_shape": list(view.shape),
        "shares": bool(np.shares_memory(view, panel.X)),
        "train": len(splits.train),
        "features": panel.X.shape[1],
    }


def measure_window_memory(tickers: int, years: int) -> dict:
    """`window_memory` in a fresh child process with exact-RSS allocator settings."""
    done = subprocess.run(
        [sys.executable, __file__, "--window-memory", "--tickers", str(tickers), "--years", str(years)],
        env={**os.environ, **EXACT_RSS},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each feature build; the best counts")
    parser.add_argument("--window-memory", action="store_true", help=argparse.SUPPRESS)  # the measuring child
    args = parser.parse_args()
    if args.window_memory:
        print(json.dumps(window_memory(args.tickers, args.years)))
        return

    raw = synthetic(args.tickers, args.years, faults=False).sort("ticker", "date")
    rows = raw.height
    settings = FeatureSettings()

    denoisers = {}
    for method in ("none", "ewma", "hampel", "kalman", "wavelet"):
        out, seconds = timed(lambda m=method: denoise(raw, DenoiseSettings(method=m)))
        denoisers[method] = seconds
    prices = denoise(raw, DenoiseSettings(method="none"))  # features timed on a fixed denoised column

    pdf = prices.to_pandas()
    ff, t_first = timed(lambda: build_features(prices, settings))
    t_nc = t_pd = float("inf")
    for _ in range(args.repeat):  # alternate, so both see the same state of the machine
        ff = None  # free the last result first: both sides build into the same free memory
        ff, seconds = timed(lambda: build_features(prices, settings))
        t_nc = min(t_nc, seconds)
        reference = None
        reference, seconds = timed(lambda: pandas_features(pdf, settings))
        t_pd = min(t_pd, seconds)
    same = np.allclose(
        ff.frame.select(ff.features).to_numpy(), reference[ff.features].to_numpy(), rtol=1e-6, atol=1e-9, equal_nan=True
    )

    mem = measure_window_memory(args.tickers, args.years)
    feature_bytes, extra, held = mem["feature_bytes"], mem["extra"], mem["held"]
    materialised = mem["train"] * WindowSettings().lookback * mem["features"] * 4

    print(
        f"{args.tickers} tickers x {args.years} years = {rows:,} rows, {len(ff.features)} features, "
        f"polars threads {pl.thread_pool_size()}"
    )
    print(f"{'features':<28}{'seconds':>10}{'rows/s':>14}")
    print(f"{f'nightcast, best of {args.repeat}':<28}{t_nc:>10.2f}{rows / t_nc:>14,.0f}")
    print(f"{f'pandas, best of {args.repeat}':<28}{t_pd:>10.2f}{rows / t_pd:>14,.0f}")
    print(f"{'nightcast, first call':<28}{t_first:>10.2f}{rows / t_first:>14,.0f}   (loads or compiles the kernels)")
    print(f"ratio pandas/nightcast: {t_pd / t_nc:.1f}x   same values: {same}")
    print(f"\n{'denoiser':<28}{'seconds':>10}{'rows/s':>14}")
    for method, seconds in denoisers.items():
        print(f"{method:<28}{seconds:>10.2f}{rows / seconds:>14,.0f}")
    print(
        f"\nwindows: feature matrix {feature_bytes / 2**20:,.0f} MiB (float32); peak extra memory while building "
        f"panel + splits + window view {extra / 2**20:,.0f} MiB = {extra / feature_bytes:.2f}x "
        f"(arrays held afterwards: {held / feature_bytes:.2f}x); "
        f"view shape {tuple(mem['view_shape'])} shares memory with X: {mem['shares']}"
    )
    print(f"(materialising the {mem['train']:,} training windows would take {materialised / 2**30:,.1f} GiB)")
    print(
        f"RESULT features ratio={t_pd / t_nc:.1f} rows_per_s={rows / t_nc:.0f} seconds={t_nc:.2f} "
        f"pandas_seconds={t_pd:.2f} first_call_s={t_first:.2f} same={same} "
        f"window_mem_ratio={extra / feature_bytes:.2f} window_held_ratio={held / feature_bytes:.2f} "
        + " ".join(f"{m}_s={s:.2f}" for m, s in denoisers.items())
    )


if __name__ == "__main__":
    main()
