"""The lake's column contract (DESIGN.md, step 3) and the ticker-symbol rule."""

from __future__ import annotations

import re

import polars as pl

from nightcast.errors import ValidationError

PRICE_COLUMNS = ("open", "high", "low", "close", "adj_close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")

LAKE_SCHEMA: dict[str, pl.DataType] = {
    "ticker": pl.String(),
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "adj_close": pl.Float64(),
    "volume": pl.Float64(),
    "source": pl.String(),
    "ingested_at": pl.Datetime("us", "UTC"),
}

# Upper-case letters and digits, optionally led by '^' (indices) and with '.', '-', '='
# inside (BRK-B, RDS.A, EURUSD=X). No '/', no leading '.', at most 15 characters:
# a valid symbol can always be used as a file name inside the lake.
_TICKER_RE = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-=]{0,14}$")  # 15 with the '^': is_valid_ticker caps the length


def is_valid_ticker(ticker: object) -> bool:
    return isinstance(ticker, str) and len(ticker) <= 15 and bool(_TICKER_RE.fullmatch(ticker))


def not_a_symbol(ticker: object) -> str:
    """Why `ticker` is quarantined, with the likely fix: a share class written with '/' is Yahoo's dash."""
    if ticker is None or (isinstance(ticker, str) and not ticker.strip()):
        return "rows with an empty ticker cell: which symbol are they?"
    hint = ""
    if isinstance(ticker, str) and "/" in ticker and is_valid_ticker(ticker.replace("/", "-").upper()):
        hint = f" (share classes take a dash, as Yahoo writes them: {ticker.replace('/', '-').upper()})"
    return f"{ticker!r} is not a valid symbol{hint}"


def check_ticker(ticker: object) -> str:
    """Return `ticker` unchanged or raise ValidationError saying why it is not a symbol."""
    if not is_valid_ticker(ticker):
        raise ValidationError(
            f"invalid ticker symbol {ticker!r}: expected 1-15 upper-case letters/digits, "
            "optionally starting with '^' and containing '.', '-' or '='"
        )
    return ticker  # type: ignore[return-value]


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast `frame` to the lake schema, adding missing optional columns as nulls."""
    exprs = []
    for name, dtype in LAKE_SCHEMA.items():
        if name in frame.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(exprs)
