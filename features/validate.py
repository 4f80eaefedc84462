"""One validation pass over price data: repair what is repairable, quarantine the rest.

Rules (README, "Validation rules"), each finding naming ticker, date and rule:

| rule             | problem                                   | action                              |
|------------------|-------------------------------------------|-------------------------------------|
| ticker_symbol    | not a plausible symbol / unsafe as a path | quarantine ticker                   |
| missing_date     | row without a date                        | drop row                            |
| future_date      | date after today                          | drop row                            |
| duplicate_day    | same (ticker, date) twice, same values    | keep one                            |
| conflicting_day  | same (ticker, date) twice, other values   | quarantine ticker                   |
| bad_price        | close/adj_close null, NaN, inf or <= 0    | short run: carry forward; leading: drop; |
|                  |                                           | longer than max_fill: quarantine        |
| bad_ohlc         | open/high/low null, NaN, inf or <= 0      | set to the day's close              |
| ohlc_bounds      | high < max(open, close) or low > min(...) | widen high/low to contain the bar   |
| bad_volume       | volume < 0, NaN or inf                    | set to null                         |
| too_short        | fewer than min_rows rows left             | quarantine ticker                   |

A quarantined ticker never sinks the run; the run fails only when nothing valid is left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from features.errors import ValidationError
from features.schema import conform, is_valid_ticker
from features.settings import ValidationSettings

log = logging.getLogger("nightcast.features.validate")


@dataclass(frozen=True)
class Finding:
    ticker: str
    date: date | None
    rule: str
    action: str  # "repaired", "dropped" or "quarantined"
    detail: str

    def __str__(self) -> str:
        when = f" {self.date}" if self.date else ""
        return f"{self.ticker}{when} [{self.rule}] {self.action}: {self.detail}"


@dataclass
class ValidationReport:
    frame: pl.DataFrame
    findings: list[Finding] = field(default_factory=list)

    @property
    def quarantined(self) -> dict[str, str]:
        return {f.ticker: str(f) for f in self.findings if f.action == "quarantined"}

    @property
    def tickers(self) -> list[str]:
        return sorted(self.frame["ticker"].unique().to_list())

    def summary(self) -> pl.DataFrame:
        """Counts per (ticker, rule, action)."""
        rows = [{"ticker": f.ticker, "rule": f.rule, "action": f.action} for f in self.findings]
        if not rows:
            return pl.DataFrame(
                schema={"ticker": pl.String, "rule": pl.String, "action": pl.String, "count": pl.UInt32}
            )
        return (
            pl.DataFrame(rows).group_by("ticker", "rule", "action").agg(pl.len().alias("count")).sort("ticker", "rule")
        )


def _bad(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | c.is_nan() | c.is_infinite() | (c <= 0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of consecutive True runs in `mask`."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def validate_prices(frame: pl.DataFrame, settings: ValidationSettings, today: date | None = None) -> ValidationReport:
    """Check `frame` (lake schema) against every rule; return the repaired frame and all findings.

    Raises ValidationError only when no ticker survives.
    """
    today = today or date.today()
    frame = conform(frame)
    findings: list[Finding] = []
    kept: list[pl.DataFrame] = []
    for ticker, group in sorted(frame.group_by("ticker", maintain_order=True), key=lambda kv: str(kv[0][0])):
        name = ticker[0]
        if not is_valid_ticker(name):
            findings.append(Finding(str(name), None, "ticker_symbol", "quarantined", f"{name!r} is not a valid symbol"))
            continue
        checked, ticker_findings = _validate_ticker(name, group, settings, today)
        findings.extend(ticker_findings)
        if checked is not None:
            kept.append(checked)
    for finding in findings:
        (log.warning if finding.action == "quarantined" else log.info)("%s", finding)
    if not kept:
        reasons = "; ".join(str(f) for f in findings if f.action == "quarantined") or "the source had no rows"
        raise ValidationError(f"no valid ticker left after validation: {reasons}")
    return ValidationReport(pl.concat(kept).sort("ticker", "date"), findings)


def _validate_ticker(
    ticker: str, g: pl.DataFrame, settings: ValidationSettings, today: date
) -> tuple[pl.DataFrame | None, list[Finding]]:
    out: list[Finding] = []

    def quarantine(rule: str, when: date | None, detail: str) -> tuple[None, list[Finding]]:
        out.append(Finding(ticker, when, rule, "quarantined", detail))
        return None, out

    if (n := g["date"].null_count()) > 0:
        out.append(Finding(ticker, None, "missing_date", "dropped", f"{n} rows without a date"))
        g = g.filter(pl.col("date").is_not_null())
    for row in g.filter(pl.col("date") > today).iter_rows(named=True):
        out.append(Finding(ticker, row["date"], "future_date", "dropped", f"date is after today ({today})"))
    g = g.filter(pl.col("date") <= today).sort("date")

    dup_dates = g.filter(pl.col("date").is_duplicated())
    if dup_dates.height:
        values = [c for c in ("open", "high", "low", "close", "adj_close", "volume")]
        distinct = dup_dates.unique(subset=["date", *values]).group_by("date").len().filter(pl.col("len") > 1)
        if distinct.height:
            first = distinct["date"].min()
            return quarantine("conflicting_day", first, f"{distinct.height} dates appear twice with different values")
        for d in dup_dates["date"].unique().sort():
            out.append(Finding(ticker, d, "duplicate_day", "repaired", "identical duplicate row removed"))
        g = g.unique(subset=["date"], keep="first", maintain_order=True)

    # close / adj_close: short gaps carried forward, leading gaps dropped, long gaps quarantine.
    bad = g.select(_bad("close") | _bad("adj_close")).to_series().to_numpy()
    drop_leading = 0
    dates = g["date"]
    for start, end in _runs(bad):
        if start == 0:
            drop_leading = end
            out.append(Finding(ticker, dates[0], "bad_price", "dropped", f"{end} leading rows without a valid close"))
        elif end - start > settings.max_fill:
            return quarantine(
                "bad_price", dates[start], f"{end - start} consecutive invalid closes (max_fill={settings.max_fill})"
            )
        else:
            out.append(
                Finding(
                    ticker, dates[start], "bad_price", "repaired", f"{end - start} invalid close(s) carried forward"
                )
            )
    if bad.any():
        g = g.with_columns(
            pl.when(_bad(c)).then(None).otherwise(pl.col(c)).forward_fill().alias(c) for c in ("close", "adj_close")
        ).slice(drop_leading)

    for col in ("open", "high", "low"):
        mask = g.select(_bad(col)).to_series()
        if mask.any() and g[col].is_not_null().any():  # all-null columns are close-only data, not errors
            out.append(
                Finding(
                    ticker,
                    g.filter(mask)["date"][0],
                    "bad_ohlc",
                    "repaired",
                    f"{mask.sum()} invalid {col} set to close",
                )
            )
            g = g.with_columns(pl.when(_bad(col)).then(pl.col("close")).otherwise(pl.col(col)).alias(col))

    has_ohlc = pl.col("open").is_not_null() & pl.col("high").is_not_null() & pl.col("low").is_not_null()
    top = pl.max_horizontal("open", "high", "close")
    bottom = pl.min_horizontal("open", "low", "close")
    broken = g.filter(has_ohlc & ((pl.col("high") < top) | (pl.col("low") > bottom)))
    if broken.height:
        out.append(
            Finding(
                ticker,
                broken["date"][0],
                "ohlc_bounds",
                "repaired",
                f"{broken.height} bars with high/low not containing open/close widened",
            )
        )
        g = g.with_columns(
            pl.when(has_ohlc).then(top).otherwise(pl.col("high")).alias("high"),
            pl.when(has_ohlc).then(bottom).otherwise(pl.col("low")).alias("low"),
        )

    vol = pl.col("volume")
    bad_vol = g.filter(vol.is_not_null() & (vol.is_nan() | vol.is_infinite() | (vol < 0)))
    if bad_vol.height:
        out.append(
            Finding(
                ticker,
                bad_vol["date"][0],
                "bad_volume",
                "repaired",
                f"{bad_vol.height} negative or non-finite volumes set to null",
            )
        )
        g = g.with_columns(
            pl.when(vol.is_nan() | vol.is_infinite() | (vol < 0)).then(None).otherwise(vol).alias("volume")
        )

    if g.height < settings.min_rows:
        return quarantine("too_short", None, f"{g.height} valid rows, need at least {settings.min_rows}")
    return g, out
