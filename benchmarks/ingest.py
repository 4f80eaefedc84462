"""Ingest benchmark: validate + upsert 500 tickers x 25 years of synthetic daily bars.

nightcast (vectorised polars validation, one atomic Parquet file per ticker)
against the same work written with pandas (groupby validation, per-ticker
atomic `to_parquet`), in the same run on the same data. Prints a table and a
final `RESULT ingest ...` line.

    .venv/bin/python benchmarks/ingest.py [--tickers 500] [--years 25]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._data import synthetic  # noqa: E402
from features import lake  # noqa: E402
from features.prices.validate import validate_prices  # noqa: E402
from features.settings import ValidationSettings  # noqa: E402

TODAY = date(2026, 1, 1)


def pandas_validate(df: pd.DataFrame, max_fill: int, today: date) -> pd.DataFrame:
    """The same rules as features.prices.validate, written as idiomatic pandas."""
    df = df[df["date"].notna() & (df["date"] <= pd.Timestamp(today))]
    df = df.drop_duplicates(subset=["ticker", "date"]).sort_values(["ticker", "date"])
    g = df.groupby("ticker", sort=False)
    bad = ~(np.isfinite(df["close"]) & (df["close"] > 0) & np.isfinite(df["adj_close"]) & (df["adj_close"] > 0))
    leading = (~bad).astype(int).groupby(df["ticker"]).cumsum() == 0
    run_id = (bad != bad.groupby(df["ticker"]).shift(1)).cumsum()
    run_len = bad.groupby([df["ticker"], run_id]).transform("size")
    long_run = df.loc[bad & ~leading & (run_len > max_fill), "ticker"].unique()
    df = df[~(bad & leading) & ~df["ticker"].isin(long_run)].copy()
    for c in ("close", "adj_close"):
        ok = np.isfinite(df[c]) & (df[c] > 0)
        df[c] = df[c].where(ok).groupby(df["ticker"]).ffill()
    for c in ("open", "high", "low"):
        ok = np.isfinite(df[c]) & (df[c] > 0)
        df[c] = df[c].where(ok, df["close"])
    top = df[["open", "high", "close"]].max(axis=1)
    bottom = df[["open", "low", "close"]].min(axis=1)
    df["high"], df["low"] = top, bottom
    df.loc[~(np.isfinite(df["volume"]) & (df["volume"] >= 0)), "volume"] = np.nan
    del g
    return df


def pandas_upsert(df: pd.DataFrame, lake_dir: Path) -> int:
    written = 0
    prices = lake_dir / "prices"
    prices.mkdir(parents=True, exist_ok=True)
    for ticker, group in df.groupby("ticker", sort=True):
        path = prices / f"{ticker}.parquet"
        if path.exists():
            group = pd.concat([pd.read_parquet(path), group]).drop_duplicates(subset=["date"], keep="last")
        group = group.sort_values("date")
        tmp = path.with_name(f".{path.name}.tmp")
        group.to_parquet(tmp, index=False, compression="zstd")
        os.replace(tmp, path)
        written += len(group)
    return written


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--years", type=int, default=25)
    args = parser.parse_args()

    frame = synthetic(args.tickers, args.years)
    rows = frame.height
    settings = ValidationSettings(min_rows=1)
    work = Path(tempfile.mkdtemp(prefix="nightcast-bench-ingest-"))
    try:
        report, t_val = timed(lambda: validate_prices(frame, settings, today=TODAY))
        _, t_up = timed(lambda: lake.upsert(work / "nc", report.frame))
        _, t_again = timed(lambda: lake.upsert(work / "nc", report.frame))  # idempotent rerun: nothing written

        pdf = frame.to_pandas()
        pdf["date"] = pd.to_datetime(pdf["date"])
        clean, p_val = timed(lambda: pandas_validate(pdf, settings.max_fill, TODAY))
        _, p_up = timed(lambda: pandas_upsert(clean, work / "pd"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    nc_total, pd_total = t_val + t_up, p_val + p_up
    repaired = sum(f.count for f in report.findings if f.action != "quarantined")
    print(
        f"validate + upsert {args.tickers} tickers x {args.years} years = {rows:,} rows "
        f"(polars threads: {pl.thread_pool_size()}, {repaired} rows repaired)"
    )
    print(f"{'step':<22}{'nightcast s':>14}{'pandas s':>12}{'ratio':>9}")
    for name, a, b in (("validate", t_val, p_val), ("upsert (write lake)", t_up, p_up), ("total", nc_total, pd_total)):
        print(f"{name:<22}{a:>14.2f}{b:>12.2f}{b / a:>9.2f}")
    print(f"{'idempotent re-upsert':<22}{t_again:>14.2f}{'':>12}{'':>9}")
    print(f"rows/s: nightcast {rows / nc_total:,.0f}, pandas {rows / pd_total:,.0f}")
    print(
        f"RESULT ingest ratio={pd_total / nc_total:.2f} rows_per_s={rows / nc_total:.0f} "
        f"pandas_rows_per_s={rows / pd_total:.0f} rows={rows} validate_ratio={p_val / t_val:.2f} "
        f"upsert_ratio={p_up / t_up:.2f} rerun_s={t_again:.2f}"
    )


if __name__ == "__main__":
    main()
