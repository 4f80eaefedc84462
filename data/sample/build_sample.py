"""Rebuild data/sample/prices.parquet from Yahoo CSV exports.

    python data/sample/build_sample.py ../shared/data/sample_raw

Converts each file to the lake schema, trims every series to end on
2014-12-31 (one as-of date for the whole sample) and writes one compact,
sorted Parquet file. Deterministic: rerunning it gives the same bytes.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from features.prices.sources import read_yahoo_csv  # noqa: E402

FILES = {
    "gspc-1999-2018.csv": "^GSPC",
    "ixic-1999-2018.csv": "^IXIC",
    "nvda-1999-2014.csv": "NVDA",
    "orcl-1995-2014.csv": "ORCL",
    "yhoo-1996-2015.csv": "YHOO",
}
END = date(2014, 12, 31)
INGESTED_AT = datetime(2026, 11, 24, tzinfo=UTC)  # fixed, so the file is reproducible


def main(raw_dir: Path) -> None:
    frames = [read_yahoo_csv(raw_dir / name, ticker) for name, ticker in FILES.items()]
    sample = (
        pl.concat(frames)
        .filter(pl.col("date") <= END)
        .with_columns(pl.lit("sample").alias("source"), pl.lit(INGESTED_AT).alias("ingested_at"))
        .sort("ticker", "date")
    )
    out = Path(__file__).resolve().parent / "prices.parquet"
    sample.write_parquet(out, compression="zstd", compression_level=19, statistics=True)
    summary = (
        sample.group_by("ticker")
        .agg(pl.len().alias("rows"), pl.col("date").min().alias("first"), pl.col("date").max().alias("last"))
        .sort("ticker")
    )
    print(summary)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {sample.height} rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/sample_raw"))
