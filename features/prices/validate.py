"""One validation pass over price data: repair what is repairable, quarantine the rest.

Rules (the README lists the same catalogue), each finding naming ticker, first
date, rule and how many rows it touched:

| rule            | problem                                    | action                                   |
|-----------------|--------------------------------------------|------------------------------------------|
| ticker_symbol   | not a plausible symbol / unsafe as a path  | quarantine ticker                        |
| missing_date    | row without a date                         | drop row                                 |
| bad_date        | date not YYYY-MM-DD (read from a file)     | drop row; a ticker in another date       |
|                 |                                            | format: quarantine (`sources._parse_dates`) |
| future_date     | date after today                           | drop row                                 |
| duplicate_day   | same (ticker, date) twice, same values     | keep one                                 |
| conflicting_day | same (ticker, date) twice, other values    | drop the day (a stored day: kept stored) |
| bad_price       | close/adj_close null, NaN, inf or <= 0     | leading rows: drop; a run of at most     |
|                 |                                            | max_fill: carry forward; longer: quarantine |
| bad_ohlc        | open/high/low null, NaN, inf or <= 0       | set to the day's close                   |
| ohlc_basis      | no close column and > 5% of bars apart     | drop the source's bars (at ingest,       |
|                 | from the adjusted close standing for it    | `ingest._bars_beside_adjusted`)          |
| ohlc_bounds     | high < max(open, close) or low > min(...)  | widen high/low to contain the bar        |
| bad_volume      | volume < 0, NaN or inf                     | set to null                              |
| long_gap        | > 14 days between prices, new rows end it  | warn once (at ingest, `long_gaps`)       |
| too_short       | fewer than min_rows rows left              | quarantine ticker                        |

Close-only data (open/high/low/volume entirely null for a ticker) is valid.
All rules are vectorised polars expressions over the whole frame, per ticker
with `.over("ticker")`. A quarantined ticker never sinks the run; the run
fails only when nothing valid is left.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date

import polars as pl

from features.prices.schema import VALUE_COLUMNS, conform, is_valid_ticker, not_a_symbol
from features.settings import ValidationSettings
from nightcast.errors import ValidationError
from nightcast.words import count

log = logging.getLogger("nightcast.features.prices.validate")

TICKER = pl.col("ticker")


@dataclass(frozen=True)
class Finding:
    ticker: str
    date: date | None  # first date affected, when rows are involved
    rule: str
    action: str  # "repaired", "dropped", "quarantined"; "read as missing" (a cell), "kept stored" (over a bad one)
    detail: str
    count: int = 1
    warn: bool = False  # a repair a reader of the forecasts must hear of (logged as a warning, as a quarantine is)

    def __str__(self) -> str:
        when = f" {self.date}" if self.date else ""
        name = self.ticker if is_valid_ticker(self.ticker) else repr(self.ticker)  # no raw control characters in logs
        return f"{name}{when} [{self.rule}] {self.action}: {self.detail}"


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


REPAIRS = ("repaired", "dropped")  # what `rows_repaired` counts


def rows_repaired(findings: list[Finding]) -> dict[str, int]:
    """Rows repaired or dropped per ticker. Quarantines are not counted (the ticker is gone), nor a cell read as
    missing (the rule that repairs it counts it) or a stored value kept over a bad one (nothing was changed)."""
    out: dict[str, int] = {}
    for f in findings:
        if f.action in REPAIRS:
            out[f.ticker] = out.get(f.ticker, 0) + f.count
    return out


def _bad(col: str) -> pl.Expr:
    c = pl.col(col)
    return c.is_null() | c.is_nan() | c.is_infinite() | (c <= 0)


def _collect(rows: pl.DataFrame, rule: str, action: str, detail: str) -> list[Finding]:
    """One finding per ticker in `rows`: first date and row count; `detail` may use {n}."""
    if rows.is_empty():
        return []
    agg = rows.group_by("ticker").agg(pl.col("date").min().alias("first"), pl.len().alias("n")).sort("ticker")
    return [Finding(t, d, rule, action, detail.format(n=n), n) for t, d, n in agg.iter_rows()]


# What a rule returns: the frame with its rows repaired, dropped or quarantined, and what it found.
Checked = tuple[pl.DataFrame, list[Finding]]


def _quarantine(f: pl.DataFrame, rows: pl.DataFrame, rule: str, detail: str) -> Checked:
    """`f` without the tickers of `rows`, with one finding per ticker."""
    found = _collect(rows, rule, "quarantined", detail)
    return f.filter(~TICKER.is_in([x.ticker for x in found])), found


def check_symbols(f: pl.DataFrame) -> Checked:
    """ticker_symbol: a symbol unsafe as a file name or implausible as a ticker quarantines it."""
    symbols = f["ticker"].unique().to_list()
    found = [
        Finding("" if bad is None else str(bad), None, "ticker_symbol", "quarantined", not_a_symbol(bad))
        for bad in sorted((t for t in symbols if not is_valid_ticker(t)), key=str)
    ]
    return f.filter(TICKER.is_in([t for t in symbols if is_valid_ticker(t)])), found


def check_dates(f: pl.DataFrame, today: date) -> Checked:
    """missing_date, future_date: rows without a date or dated after `today` are dropped."""
    # a row that cannot be placed in time is a row of the source lost: said as a warning, as a dropped typo is
    found = [
        replace(x, warn=True)
        for x in _collect(f.filter(pl.col("date").is_null()), "missing_date", "dropped", "{n} rows without a date")
    ]
    found += _collect(
        f.filter(pl.col("date") > today), "future_date", "dropped", f"{{n}} rows dated after today ({today})"
    )
    return f.filter(pl.col("date") <= today), found


def check_duplicates(f: pl.DataFrame) -> Checked:
    """duplicate_day, conflicting_day: one row per (ticker, date), sorted by both."""
    key = pl.struct("ticker", "date")
    found: list[Finding] = []
    dups = f.filter(key.is_duplicated())
    if not dups.is_empty():
        distinct = dups.unique(subset=["ticker", "date", *VALUE_COLUMNS]).filter(key.is_duplicated())
        conflicted = distinct.unique(subset=["ticker", "date"])
        # which of two different prices is right cannot be told: that day is dropped (a value stored for it
        # earlier is kept), never the ticker's whole history
        found += _collect(
            conflicted, "conflicting_day", "dropped", "{n} dates appear twice with different values: dropped"
        )
        f = f.join(conflicted.select("ticker", "date"), on=["ticker", "date"], how="anti")
        same = f.filter(key.is_duplicated() & key.is_first_distinct().not_())
        found += _collect(same, "duplicate_day", "repaired", "{n} identical duplicate rows removed")
        f = f.unique(subset=["ticker", "date"], keep="first")
    return f.sort("ticker", "date"), found


def check_prices(f: pl.DataFrame, max_fill: int) -> Checked:
    """bad_price on close / adj_close (rows sorted): leading invalid rows dropped, runs of at most `max_fill`
    carried forward, longer runs quarantine the ticker."""
    bad = _bad("close") | _bad("adj_close")
    f = f.with_columns(
        bad.alias("_bad"),
        ((~bad).cum_sum().over("ticker") == 0).alias("_leading"),
        (bad != bad.shift(1)).fill_null(True).cum_sum().over("ticker").alias("_run"),
    ).with_columns(pl.len().over("ticker", "_run").alias("_run_len"))
    inner = pl.col("_bad") & ~pl.col("_leading")
    found = _collect(
        f.filter(pl.col("_bad") & pl.col("_leading")), "bad_price", "dropped", "{n} leading rows without a valid close"
    )
    f, quarantined = _quarantine(
        f,
        f.filter(inner & (pl.col("_run_len") > max_fill)),
        "bad_price",
        f"{{n}} invalid closes in runs longer than max_fill={max_fill}",
    )
    found += quarantined
    found += _carried(f, f.filter(inner))
    f = f.filter(~(pl.col("_bad") & pl.col("_leading"))).with_columns(
        pl.when(_bad(c)).then(None).otherwise(pl.col(c)).forward_fill().over("ticker").alias(c)
        for c in ("close", "adj_close")
    )
    return f.drop("_bad", "_leading", "_run", "_run_len"), found


def _carried(f: pl.DataFrame, carried: pl.DataFrame) -> list[Finding]:
    """Findings of the invalid closes `check_prices` carries forward. A run that reaches its ticker's last row is a
    warning: the latest price, the one that ticker's forecasts start from, is then an earlier day's."""
    if carried.is_empty():
        return []
    last_run = (
        f.filter(pl.col("ticker").is_in(carried["ticker"].unique().implode()))
        .group_by("ticker")
        .agg(pl.col("_run").max().alias("_last_run"))
    )
    carried = carried.join(last_run, on="ticker", how="left")
    trailing = pl.col("_run") == pl.col("_last_run")
    found = _collect(carried.filter(~trailing), "bad_price", "repaired", "{n} invalid closes carried forward")
    at_end = (
        "{n} invalid closes at the end carried forward: forecasts start from the last valid close, an earlier day's"
    )
    return found + [replace(x, warn=True) for x in _collect(carried.filter(trailing), "bad_price", "repaired", at_end)]


def check_ohlc(f: pl.DataFrame) -> Checked:
    """bad_ohlc: an invalid open/high/low is set to the day's close (an all-null column is close-only data)."""
    found: list[Finding] = []
    for col in ("open", "high", "low"):
        present = pl.col(col).is_not_null().any().over("ticker")  # all-null: close-only data, not an error
        broken = _bad(col) & present
        found += _collect(f.filter(broken), "bad_ohlc", "repaired", f"{{n}} invalid {col} values set to close")
        f = f.with_columns(pl.when(broken).then(pl.col("close")).otherwise(pl.col(col)).alias(col))
    return f, found


def check_bounds(f: pl.DataFrame) -> Checked:
    """ohlc_bounds: a high below max(open, close) or a low above min(open, close) is widened to the bar."""
    full_bar = pl.col("open").is_not_null() & pl.col("high").is_not_null() & pl.col("low").is_not_null()
    top, bottom = pl.max_horizontal("open", "high", "close"), pl.min_horizontal("open", "low", "close")
    broken = full_bar & ((pl.col("high") < top) | (pl.col("low") > bottom))
    found = _collect(
        f.filter(broken), "ohlc_bounds", "repaired", "{n} bars whose high/low did not contain open/close widened"
    )
    f = f.with_columns(
        pl.when(broken).then(top).otherwise(pl.col("high")).alias("high"),
        pl.when(broken).then(bottom).otherwise(pl.col("low")).alias("low"),
    )
    return f, found


def check_volume(f: pl.DataFrame) -> Checked:
    """bad_volume: a negative, NaN or infinite volume is set to null."""
    vol = pl.col("volume")
    broken = vol.is_not_null() & (vol.is_nan() | vol.is_infinite() | (vol < 0))
    found = _collect(f.filter(broken), "bad_volume", "repaired", "{n} negative or non-finite volumes set to null")
    return f.with_columns(pl.when(broken).then(None).otherwise(vol).alias("volume")), found


def check_length(f: pl.DataFrame, min_rows: int) -> Checked:
    """too_short: a ticker with fewer than `min_rows` rows left is quarantined."""
    short = f.filter(pl.len().over("ticker") < min_rows)
    return _quarantine(f, short, "too_short", f"{{n}} valid rows, fewer than min_rows={min_rows}")


FINDINGS_LOGGED = 20  # more repairs than this: counted in one line, each at DEBUG (and per ticker in the summary)


def log_findings(findings: list[Finding]) -> None:
    """A quarantine (or a repair marked `warn`) is a warning, always its own line. Repairs are each a line when
    few; when many, one line counts them by rule and action: a line each was ~1,100 lines at 500 tickers x 25
    years of the synthetic universe, and ~0.7 s of the nightly's ingest in Prefect's log handlers."""
    repairs = [f for f in findings if f.action != "quarantined" and not f.warn]
    for finding in findings:
        if finding.action == "quarantined" or finding.warn:
            log.warning("%s", finding)
        else:
            (log.info if len(repairs) <= FINDINGS_LOGGED else log.debug)("%s", finding)
    if len(repairs) > FINDINGS_LOGGED:
        kinds = Counter(f"{f.rule} {f.action}" for f in repairs)
        log.info(
            "validation: %s on %s (%s); each at DEBUG, and counted per ticker in the ingest's summary",
            count(len(repairs), "finding"),
            count(len({f.ticker for f in repairs}), "ticker"),
            ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items())),
        )


def validate_prices(frame: pl.DataFrame, settings: ValidationSettings, today: date | None = None) -> ValidationReport:
    """Check `frame` (lake schema) against every rule; return the repaired frame and all findings.

    The rules run in the order of the module's table, each on what the previous left.
    Raises ValidationError only when no ticker survives.
    """
    today = today or date.today()
    rules = (
        check_symbols,
        lambda f: check_dates(f, today),
        check_duplicates,
        lambda f: check_prices(f, settings.max_fill),
        check_ohlc,
        check_bounds,
        check_volume,
        lambda f: check_length(f, settings.min_rows),
    )
    f, out = conform(frame), []
    for rule in rules:
        f, found = rule(f)
        out += found
    out.sort(key=lambda x: (x.ticker, x.rule))
    log_findings(out)
    if f.is_empty():
        # what emptied it: the quarantines and the rows dropped (a valid symbol whose every day conflicted is gone
        # as surely as a bad symbol), else there were none
        gone = [x for x in out if x.action in ("quarantined", "dropped")]
        shown = "; ".join(map(str, gone[:10])) + (f"; and {len(gone) - 10} more" if len(gone) > 10 else "")
        reasons = shown or "the source had no rows"
        raise ValidationError(f"no valid ticker left after validation: {reasons}")
    return ValidationReport(f, out)


LONG_GAP_DAYS = 14  # calendar days between a ticker's rows: longer than any market closure but a disaster's


def long_gaps(prices: pl.DataFrame, since: pl.DataFrame) -> list[Finding]:
    """A warning per ticker whose rows from `since` (ticker, `_since`: the first day this ingest brought) end a
    gap of more than `LONG_GAP_DAYS` days without a price in `prices` (sorted by ticker and date, as the lake
    gives them): a file that lost weeks of a ticker, or a feed that resumed after a halt. The model reads each
    such gap as one step; the health gate sees only its recent window. Only gaps that new rows end, so a gap is
    said when it arrives, not every night after. Lazy, two columns: the first ingest of 500 tickers x 25 years
    holds no sorted copy of the prices (one was the nightly's peak memory)."""
    if since.is_empty() or prices.is_empty():
        return []
    gaps = (
        prices.lazy()
        .select("ticker", "date", pl.col("date").shift(1).over("ticker").alias("start"))
        .filter((pl.col("date") - pl.col("start")).dt.total_days() > LONG_GAP_DAYS)
        .join(since.lazy(), on="ticker")
        .filter(pl.col("date") >= pl.col("_since"))
        .with_columns(days=(pl.col("date") - pl.col("start")).dt.total_days())
        .sort("ticker", "date")
        .collect()
    )
    out = []
    for (ticker,), g in gaps.group_by("ticker", maintain_order=True):
        worst = g.row(int(g["days"].arg_max()), named=True)
        detail = (
            f"{count(g.height, 'gap')} of more than {LONG_GAP_DAYS} days without a price, the longest "
            f"{worst['days']} days ({worst['start']} .. {worst['date']}): the model reads each as one step"
        )
        out.append(Finding(ticker, g["start"][0], "long_gap", "kept", detail, g.height, warn=True))
    return out


def require_history(frame: pl.DataFrame, min_rows: int) -> tuple[pl.DataFrame, list[Finding]]:
    """Drop tickers with fewer than `min_rows` rows (too short to window and split), with findings."""
    short = frame.filter(pl.len().over("ticker") < min_rows)
    found = _collect(short, "too_short", "quarantined", f"{{n}} rows, fewer than validation.min_rows={min_rows}")
    for finding in found:
        log.warning("%s", finding)
    if not found:  # the frame itself, not a filtered copy of every row (~0.3 GB on 500 tickers x 25 years)
        return frame, found
    return frame.filter(~TICKER.is_in([f.ticker for f in found])), found


def first_night_with_history(frame: pl.DataFrame, min_rows: int, dates: int) -> date | None:
    """The first date by which some ticker has `min_rows` rows (`require_history` keeps it from then on) and
    the tickers together have `dates` distinct dates: a lower bound on the first night a model can be fit and
    evaluated (None when the frame never gets there)."""
    nth = frame.group_by("ticker").agg(pl.col("date").sort().slice(min_rows - 1, 1).first())["date"].min()
    days = frame["date"].unique().sort()
    if nth is None or days.len() < dates:
        return None
    return max(nth, days[dates - 1])
