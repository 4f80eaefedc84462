"""Ingest: source -> validate -> lake, incrementally and without losing anything.

One function, `ingest`, used by the `ingest` flow and the CLI. New rows are
validated together with the stored rows of the same tickers (so incremental
fetches of a few days are judged in context), upserted atomically, and the
stored rows are read back. yfinance failures never lose the lake: the run goes
on with what is stored and says loudly how far behind it is.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from features.prices import lake, sources, yahoo
from features.prices.calendar import latest_closed_session, sessions_behind
from features.prices.schema import conform, is_valid_ticker, not_a_symbol
from features.prices.validate import Finding, log_findings, long_gaps, rows_repaired, validate_prices
from features.settings import IngestSettings, SourceSettings, ValidationSettings
from nightcast.errors import SourceError, ValidationError
from nightcast.words import count

log = logging.getLogger("nightcast.features.prices.ingest")

SUMMARY_SCHEMA = {
    "ticker": pl.String,
    "rows_added": pl.Int64,
    "rows_revised": pl.Int64,
    "rows_filled": pl.Int64,
    "first_date": pl.Date,
    "last_date": pl.Date,
    "behind": pl.Int64,
    "repaired": pl.Int64,
    "status": pl.String,
    "reason": pl.String,
}


@dataclass
class IngestReport:
    prices: pl.DataFrame  # stored rows of every usable (ok or stale) ticker, sorted by (ticker, date)
    summary: pl.DataFrame  # one row per requested ticker (SUMMARY_SCHEMA)
    findings: list[Finding] = field(default_factory=list)
    reference: date | None = None  # the date tickers are judged against
    fetch_failed: dict[str, str] = field(default_factory=dict)
    stored: list[str] = field(default_factory=list)  # tickers written to (or confirmed in) the lake
    # summary rows (SUMMARY_SCHEMA) of the context-only series held apart by `set_apart`: stored, never forecast
    context: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SUMMARY_SCHEMA))
    # `lake.fingerprint(prices)` when the ingest computed it on its way (with the manifest); None: not known
    fingerprint: str | None = None

    @classmethod
    def merge(cls, parts: list[IngestReport]) -> IngestReport:
        """One report from the reports of disjoint ticker chunks ingested in parallel."""
        findings = [f for p in parts for f in p.findings]
        failed = {t: why for p in parts for t, why in p.fetch_failed.items()}
        references = [p.reference for p in parts if p.reference is not None]
        return cls(
            pl.concat([p.prices for p in parts]).sort("ticker", "date"),
            pl.concat([p.summary for p in parts]).sort("ticker"),
            findings,
            max(references) if references else None,
            failed,
            sorted(t for p in parts for t in p.stored),
        )

    def set_apart(self, context: Collection[str]) -> IngestReport:
        """The report of the universe alone: the rows and summary of the context-only series `context` move to
        `context`, so no stage that checks, trains on, forecasts or publishes tickers ever meets them."""
        if not context:
            return self
        theirs = pl.col("ticker").is_in(list(context))
        held = self.prices.filter(theirs).height  # rows of context series: the fingerprint covered them
        return dataclasses.replace(
            self,
            prices=self.prices.filter(~theirs) if held else self.prices,
            fingerprint=None if held else self.fingerprint,
            summary=self.summary.filter(~theirs),
            context=pl.concat([self.context, self.summary.filter(theirs)]),
        )

    @property
    def quarantined(self) -> dict[str, str]:
        rows = self.summary.filter(pl.col("status") == "quarantined")
        return dict(zip(rows["ticker"].to_list(), rows["reason"].to_list(), strict=True))

    @property
    def stale(self) -> dict[str, int]:
        rows = self.summary.filter(pl.col("status") == "stale")
        return dict(zip(rows["ticker"].to_list(), rows["behind"].to_list(), strict=True))

    def as_of(
        self, asof: date, stale_after: int, reference: date | None = None, calendar: str = "XNYS"
    ) -> IngestReport:
        """The report as it would have read on `asof`: stored rows after it are invisible, and freshness is
        judged against `reference` (default: the newest bar on or before `asof`, as for a file source) in sessions
        of `calendar`.

        Tickers with no bar by then are reported `failed`; quarantined and failed tickers stay as they were.
        """
        prices = self.prices.filter(pl.col("date") <= asof)
        reference = reference or (prices["date"].max() if not prices.is_empty() else None)
        first, last = _date_range(prices)
        rows = []
        for r in self.summary.iter_rows(named=True):
            t = r["ticker"]
            if r["status"] in ("ok", "stale"):
                behind = sessions_behind(last[t], reference, calendar) if t in last and reference else None
                status, reason = _freshness(t in last, behind, stale_after, f"no stored bar on or before {asof}")
                r = r | {"first_date": first.get(t), "last_date": last.get(t), "behind": behind}
                r |= {"status": status, "reason": reason}
            rows.append(r)
        summary = pl.DataFrame(rows, schema=SUMMARY_SCHEMA)
        usable = summary.filter(pl.col("status").is_in(["ok", "stale"]))["ticker"].to_list()
        return IngestReport(
            prices.filter(pl.col("ticker").is_in(usable)),
            summary,
            self.findings,
            reference,
            {},
            self.stored,
            self.context,
        )


def _date_range(prices: pl.DataFrame) -> tuple[dict[str, date], dict[str, date]]:
    """First and last stored date per ticker."""
    spans = prices.group_by("ticker").agg(pl.col("date").min().alias("first"), pl.col("date").max().alias("last"))
    return dict(spans.select("ticker", "first").iter_rows()), dict(spans.select("ticker", "last").iter_rows())


def _freshness(has_rows: bool, behind: int | None, stale_after: int, missing: str) -> tuple[str, str]:
    """Status and reason of a ticker that was not quarantined, from how far behind the reference it is."""
    if not has_rows:
        return "failed", missing
    if behind is not None and behind > stale_after:
        return "stale", f"no new bar for {count(behind, 'session')} (delisted or halted?)"
    return "ok", ""


def stored_report(lake_dir: Path, tickers: list[str]) -> IngestReport:
    """What the lake holds for `tickers` (default: every ticker it holds), as a report; no source is read."""
    tickers = tickers or sorted(lake.read_manifest(lake_dir))
    prices = lake.read_prices(lake_dir, tickers)
    first, last = _date_range(prices)
    rows = []
    for t in tickers:
        status, reason = _freshness(t in last, None, 0, "not in the lake")
        rows.append(
            {"ticker": t, "rows_added": 0, "rows_revised": 0, "rows_filled": 0}
            | {"first_date": first.get(t), "last_date": last.get(t)}
            | {"behind": None, "repaired": 0, "status": status, "reason": reason}
        )
    summary = pl.DataFrame(rows, schema=SUMMARY_SCHEMA)
    return IngestReport(prices, summary, [], max(last.values()) if last else None, {}, sorted(last))


def incremental_start(entry: dict | None, overlap_days: int, default: date) -> date:
    """First date to request: a few trading days before the last stored bar (to catch revisions)."""
    if not entry:
        return default
    # calendar days covering `overlap_days` trading days, weekends and a holiday included
    return date.fromisoformat(entry["last_date"]) - timedelta(days=overlap_days * 7 // 5 + 3)


@dataclass
class Incoming:
    """What a source gave: new rows, the tickers asked for (`safe`: those valid as symbols), findings so far."""

    new: pl.DataFrame
    requested: list[str]
    safe: list[str]
    findings: list[Finding]
    failed: dict[str, str] = field(default_factory=dict)  # ticker -> why yfinance gave nothing
    reference: date | None = None  # the latest closed session, for a live source


def fetch_yahoo(
    source: SourceSettings,
    settings: IngestSettings,
    lake_dir: Path,
    *,
    cache_dir: Path | None,
    now: datetime | None,
    sleep: Callable[[float], None],
    calendar: str = "XNYS",
) -> Incoming:
    """New rows from yfinance for the valid symbols of `source`, each from a little before its last stored bar."""
    requested = list(source.tickers)
    safe = [t for t in requested if is_valid_ticker(t)]
    findings = [Finding(t, None, "ticker_symbol", "quarantined", not_a_symbol(t)) for t in requested if t not in safe]
    manifest = lake.read_manifest(lake_dir)
    default = date.fromisoformat(source.start)
    starts = {t: incremental_start(manifest.get(t), settings.overlap_days, default) for t in safe}
    if cache_dir is not None:
        yahoo.configure_cache(cache_dir)
    fetched = yahoo.fetch(starts, settings, sleep=sleep)
    if fetched.failed:
        log.warning(
            "yfinance failed for %d of %d tickers after %d attempts: %s",
            len(fetched.failed),
            len(safe),
            fetched.attempts,
            "; ".join(f"{t}: {why[:100]}" for t, why in sorted(fetched.failed.items())[:10]),
        )
    reference = latest_closed_session(now, calendar)
    return Incoming(closed_bars(fetched.frame, reference), requested, safe, findings, fetched.failed, reference)


def closed_bars(frame: pl.DataFrame, reference: date) -> pl.DataFrame:
    """The rows of sessions closed by `reference`: yfinance fetches up to now, and during a session Yahoo serves
    that day's bar as it stands (its close the latest trade), which stored as the day's close would be a price
    the day never closed at and a forecast made from it. The bar is fetched again once the session has closed
    (the next run's overlap asks for it)."""
    later = frame.filter(pl.col("date") > reference)
    if later.is_empty():
        return frame
    log.info(
        "%s of sessions not closed by %s left out (an unfinished bar is no close; a later run fetches it)",
        count(later.height, "bar"),
        reference,
    )
    return frame.filter(pl.col("date") <= reference)


REBASE_TOLERANCE = 1e-5  # relative: Yahoo's floats repeat exactly, while the smallest dividend moves more than this


def rebased(new: pl.DataFrame, stored: pl.DataFrame) -> dict[str, str]:
    """Tickers whose source rows differ from the stored ones on the first day both hold, each with how.

    Yahoo's close is split-adjusted and its adjusted close split- and dividend-adjusted, both rewritten backwards
    over the whole history on the event: an incremental fetch then brings days on the new basis beside stored
    days on the old one, a false jump where they meet (a 2:1 split: -69% in one day; a dividend: its yield). A
    revision of a recent bar leaves the earliest re-fetched day as it was; an event before it changes that day,
    and every day before it too."""
    shared = new.select("ticker", "date", "close", "adj_close").join(
        stored.select("ticker", "date", "close", "adj_close"), on=["ticker", "date"], suffix="_stored"
    )
    first = shared.sort("ticker", "date").group_by("ticker", maintain_order=True).first()
    ratio = first.with_columns(
        close_ratio=pl.col("close") / pl.col("close_stored"), adj_ratio=pl.col("adj_close") / pl.col("adj_close_stored")
    ).filter(
        ((pl.col("close_ratio") - 1).abs() > REBASE_TOLERANCE) | ((pl.col("adj_ratio") - 1).abs() > REBASE_TOLERANCE)
    )
    return {
        t: f"on {day}, the first day both hold, its close is {c:.4f}x the stored one and its adjusted close {a:.4f}x"
        for t, day, c, a in ratio.select("ticker", "date", "close_ratio", "adj_ratio").iter_rows()
    }


def refetch_rebased(
    got: Incoming, stored: pl.DataFrame, settings: IngestSettings, default: date, sleep
) -> tuple[Incoming, pl.DataFrame]:
    """`got` with the whole history of every ticker Yahoo has rebased (`rebased`) in place of its few new days,
    and `stored` with that ticker's days on the new basis (`on_new_basis`), so the lake moves to it at once: the
    upsert's revisions replace every stored day, a stored day Yahoo no longer serves is rescaled rather than left
    on the old basis, and no missing value of a re-fetched day is filled from the old one. A ticker whose re-fetch
    fails brings nothing this run: its stored days stay as they were, on one basis."""
    changed = rebased(got.new, stored)
    if not changed:
        return got, stored
    first, _ = _date_range(stored.filter(pl.col("ticker").is_in(list(changed))))
    starts = {t: min(default, first[t]) for t in changed}
    fetched = yahoo.fetch(starts, settings, sleep=sleep)
    again = closed_bars(fetched.frame, got.reference) if got.reference else fetched.frame
    new = pl.concat([got.new.filter(~pl.col("ticker").is_in(list(changed))), again], how="diagonal_relaxed")
    failed = dict(got.failed)
    for t, how in sorted(changed.items()):
        if t in fetched.failed:
            failed[t] = f"Yahoo rebased its history ({how}) and its re-fetch failed: {fetched.failed[t]}"
            log.warning("%s: %s; its stored prices are kept as they were, and no new bar is taken", t, failed[t])
            continue
        log.warning("%s: Yahoo rebased its history (a split or dividend): %s; re-fetched from %s", t, how, starts[t])
        mine = pl.col("ticker") == t
        moved, outside = on_new_basis(stored.filter(mine), again.filter(mine))
        if outside:
            log.warning(
                "%s: %s Yahoo no longer serves put on the new basis by the factors of the nearest day it does",
                t,
                count(outside, "stored day"),
            )
        stored = pl.concat([stored.filter(~mine), moved]).sort("ticker", "date")
    return dataclasses.replace(got, new=conform(new), failed=failed), stored


def on_new_basis(stored: pl.DataFrame, fetched: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """One ticker's stored rows times the factors that take them to `fetched`'s basis, and how many stored days
    `fetched` lacks. A day both hold gets its own ratio (the close's for the bar, the adjusted close's for
    itself); any other day the ratio of the nearest later day both hold, else the nearest earlier one: the
    factors are constant between events, so the nearest later day shares its day's factor unless an event falls
    between them."""
    ratios = (
        fetched.select("date", "close", "adj_close")
        .join(stored.select("date", pl.col("close").alias("c0"), pl.col("adj_close").alias("a0")), on="date")
        .select("date", (pl.col("close") / pl.col("c0")).alias("_f"), (pl.col("adj_close") / pl.col("a0")).alias("_g"))
        .filter(pl.col("_f").is_finite() & pl.col("_g").is_finite())
        .sort("date")
    )
    if ratios.is_empty():
        return stored, 0
    rows = stored.sort("date")
    later = rows.join_asof(ratios, on="date", strategy="forward")
    earlier = rows.select("date").join_asof(ratios, on="date", strategy="backward")
    factors = later.select(pl.coalesce("_f", earlier["_f"]).alias("_f"), pl.coalesce("_g", earlier["_g"]).alias("_g"))
    bar = [c for c in ("open", "high", "low", "close") if c in rows.columns]
    moved = rows.with_columns(
        *(pl.col(c) * factors["_f"] for c in bar), (pl.col("adj_close") * factors["_g"]).alias("adj_close")
    )
    outside = rows.join(fetched.select("date"), on="date", how="anti").height
    return moved, outside


def read_source(source: SourceSettings, context: Sequence[str] = ()) -> Incoming:
    """The rows of a file or the bundled sample; every ticker in it (or named by a finding) is requested.

    `context`: series read beside `source.tickers` when the source holds them (no error when it does not)."""
    new, findings = sources.load(source, context)
    log_findings(findings)  # what reading found (a cell that is not a number, an unreadable column)
    # rows without a ticker are the ticker "" of validation's finding (str(None) showed a ticker "None", failed)
    names = new["ticker"].fill_null("").unique().to_list()
    requested = sorted({str(t) for t in names} | {f.ticker for f in findings})
    return Incoming(new, requested, [t for t in requested if is_valid_ticker(t)], list(findings))


def merge_stored(new: pl.DataFrame, stored: pl.DataFrame) -> tuple[pl.DataFrame, list[Finding]]:
    """Stored rows with `new` rows in place of the stored rows of their (ticker, date), gaps filled from the lake,
    and a finding per ticker whose source held an unusable value (NaN, infinite, <= 0) for a day the lake holds.

    Values the source lacks or holds unusable come from the lake before validation, so a close-only file is
    judged (and stored) with the bars the lake already holds instead of having them "repaired" away, and a bad
    cell never overwrites a good stored price. A source that lacks a price column for a ticker altogether (a
    close-only file, a wide adjusted-only file) then stands for it with the other one; a single missing cell
    in a column the source does carry, on a day the lake does not hold, stays missing, for validation to
    repair or reject and report.
    """
    lacks = conform(new).with_columns(
        pl.col("adj_close").is_null().all().over("ticker").alias("_no_adj"),
        pl.col("close").is_null().all().over("ticker").alias("_no_close"),
    )
    lacks, apart = _bars_beside_adjusted(lacks)  # before the fill: bars the lake holds for those days stay
    filled, kept = lake.fill_and_keep(_on_stored_factor(lacks, stored), stored)
    incoming = filled.with_columns(
        adj_close=pl.when(pl.col("_no_adj")).then(pl.coalesce("adj_close", "close")).otherwise("adj_close"),
        close=pl.when(pl.col("_no_close")).then(pl.coalesce("close", "adj_close")).otherwise("close"),
    ).drop("_no_adj", "_no_close")
    detail = "rows with a price or volume that is NaN, infinite or <= 0 in the source: the lake's stored values kept"
    findings = [
        Finding(t, first, "bad_price", "kept stored", f"{n} {detail}", n)
        for t, first, n in kept.group_by("ticker").agg(pl.col("date").min(), pl.len()).sort("ticker").iter_rows()
    ]
    findings += apart
    for finding in findings:
        log.warning("%s", finding)
    return pl.concat([stored.join(new.select("ticker", "date"), on=["ticker", "date"], how="anti"), incoming]), findings


def _on_stored_factor(lacks: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """The adjusted close a close-only file lacks, as the file's close times a stored ratio of the two: the same
    day's on a day the lake holds (a revised close then moves the adjusted close the model reads with it, where
    taking the stored adjusted close kept the old value while the run reported the revision; an unchanged close
    keeps the stored value exactly: no float noise that would rewrite the lake every night), else the ticker's
    nearest stored day's. A new day's close as its adjusted close (ratio 1) put a false return between the
    stored history, adjusted for every dividend since, and the new day: +5.5% for ORCL on a -0.6% day of the
    sample. A ticker new to the lake is left for the coalesce (its close is its adjusted close). The close an
    adjusted-only (wide) file lacks is the stored one on a stored day (its adjusted close moves on a dividend or
    split while the traded close stays what it was), and on a new day its adjusted close over the nearest stored
    day's ratio."""
    if stored.is_empty() or not (lacks["_no_adj"].any() or lacks["_no_close"].any()):
        return lacks
    keys = ["ticker", "date"]
    held = stored.select(*keys, pl.col("close").alias("_close"), pl.col("adj_close").alias("_adj"))
    joined = _nearest_stored_ratio(lacks.join(held, on=keys, how="left", maintain_order="left"), held)
    on_stored_ratio = pl.col("close") * pl.col("_adj") / pl.col("_close")
    return joined.with_columns(
        adj_close=pl.when(~pl.col("_no_adj"))
        .then("adj_close")
        .when(pl.col("close") == pl.col("_close"))
        .then("_adj")
        .when(pl.col("_close").is_not_null())
        .then(on_stored_ratio)
        .otherwise(pl.col("close") * pl.col("_ratio")),  # null for a ticker new to the lake: the coalesce's
        # the mirror: an adjusted-only (wide) file's new day, its close by the same ratio (its adjusted close as
        # the close put a -6.5% traded move on ORCL's -0.6% day, and published last_price 6% low)
        close=pl.when(pl.col("_no_close") & pl.col("_close").is_null())
        .then(pl.col("adj_close") / pl.col("_ratio"))
        .otherwise("close"),
    ).drop("_close", "_adj", "_ratio")


def _nearest_stored_ratio(joined: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """`_ratio`: for a row lacking its adjusted close or its close on a day the lake does not hold, the ratio of
    adjusted close to close of its ticker's nearest stored day (the latest before it for a new day after the
    history); else null. Only those rows' tickers are read from the lake."""
    new_day = (pl.col("_no_adj") | pl.col("_no_close")) & pl.col("_close").is_null()
    need = joined.with_row_index("_row").filter(new_day).select("_row", "ticker", "date")
    if need.is_empty():
        return joined.with_columns(pl.lit(None, dtype=pl.Float64).alias("_ratio"))
    ratio = pl.col("_adj") / pl.col("_close")
    ratios = (
        held.filter(pl.col("ticker").is_in(need["ticker"].unique().to_list()))
        .select("ticker", "date", ratio.alias("_ratio"))
        .filter(pl.col("_ratio").is_finite() & (pl.col("_ratio") > 0))
        .sort("date")
    )
    # both sides sorted by date just above (polars cannot check it within `by` groups, and warned on every call)
    found = need.sort("date").join_asof(ratios, on="date", by="ticker", strategy="nearest", check_sortedness=False)
    return (
        joined.with_row_index("_row")
        .join(found.select("_row", "_ratio"), on="_row", how="left", maintain_order="left")
        .drop("_row")
    )


BASIS_TOLERANCE = 1e-4  # relative: a bar that misses the adjusted close by rounding still contains it
BASIS_SHARE = 0.05  # of a ticker's bars outside the adjusted close: another basis, not a few bad bars


def _bars_beside_adjusted(lacks: pl.DataFrame) -> tuple[pl.DataFrame, list[Finding]]:
    """A source with open/high/low but no close for a ticker stands for its close with the adjusted close. If
    many of its bars (`BASIS_SHARE`) do not contain that close they are unadjusted, on another basis than it:
    validation would widen each down to the adjusted close (a range that never traded), so the source's bars
    of the ticker are dropped, and said so. Validation then treats them as any missing bar: none at all for a ticker
    whose bars are all missing (close-only data, which is valid), the day's close where the lake holds bars for
    it. A few bars outside it are bad bars, left to `ohlc_bounds`; bars that contain it are adjusted like it."""
    if not lacks["_no_close"].any():  # every ticker has its close: the common case, at no cost
        return lacks, []
    full_bar = pl.col("open").is_not_null() & pl.col("high").is_not_null() & pl.col("low").is_not_null()
    adjusted = pl.col("adj_close")
    outside = (pl.col("high") < adjusted * (1 - BASIS_TOLERANCE)) | (pl.col("low") > adjusted * (1 + BASIS_TOLERANCE))
    shares = (
        lacks.filter(pl.col("_no_close") & full_bar)
        .group_by("ticker")
        .agg(outside.fill_null(False).sum().alias("outside"), pl.len().alias("bars"), pl.col("date").min())
        .filter(pl.col("outside") > BASIS_SHARE * pl.col("bars"))
        .sort("ticker")
    )
    if shares.is_empty():
        return lacks, []
    detail = (
        "bars do not contain the adjusted close, which stands for the missing close column (unadjusted bars "
        "beside an adjusted close): the source's open/high/low of the ticker are dropped (bars the lake holds kept)"
    )
    findings = [
        Finding(t, first, "ohlc_basis", "repaired", f"{n} of {bars} {detail}", n)
        for t, n, bars, first in shares.iter_rows()
    ]
    apart = pl.col("ticker").is_in(shares["ticker"].to_list())
    bars = [pl.when(apart).then(None).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low")]
    return lacks.with_columns(bars), findings


def _first_new_day(new: pl.DataFrame, stored: pl.DataFrame) -> pl.DataFrame:
    """Per ticker, the first day of the `new` rows after its last stored day (a new ticker's first): where what
    this ingest brings starts, when a file source's rows are the whole file every night. Lazy: a first ingest's
    3.1M new rows are not copied to find 500 dates."""
    last = stored.lazy().group_by("ticker").agg(pl.col("date").max().alias("_last"))
    rows = new.lazy().select("ticker", "date").join(last, on="ticker", how="left")
    later = rows.filter(pl.col("_last").is_null() | (pl.col("date") > pl.col("_last")))
    return later.group_by("ticker").agg(pl.col("date").min().alias("_since")).collect()


def _no_data(requested: list[str], failed: dict[str, str], lake_dir: Path) -> SourceError:
    """The error for a run with no row at all, grouping the tickers by why they failed."""
    if not requested:  # a file with a header and no rows names no ticker: say what was empty, not "for :"
        return SourceError(f"no data at all: the source holds no price rows and names no ticker ({lake_dir} unchanged)")
    by_reason: dict[str, list[str]] = {}
    for t, why in sorted(failed.items()):
        by_reason.setdefault(why, []).append(t)
    reasons = "; ".join(f"{', '.join(ts)}: {why}" for why, ts in by_reason.items()) or "the source returned no rows"
    return SourceError(f"no data at all for {', '.join(requested)}: nothing stored in {lake_dir} and {reasons}")


def ticker_status(
    quarantine: str | None, has_rows: bool, behind: int | None, stale_after: int, failed: str | None
) -> tuple[str, str]:
    """Status and reason of one requested ticker: quarantined, else by freshness; `failed`: why its fetch failed."""
    if quarantine is not None:
        return "quarantined", quarantine
    status, reason = _freshness(has_rows, behind, stale_after, "no rows" if failed is None else failed)
    if status == "ok" and failed is not None:
        reason = f"fetch failed, using stored rows: {failed[:120]}"
    elif status == "stale" and failed is not None:  # not "delisted?": nothing came to say so (offline, say)
        reason = f"no new bar for {count(behind, 'session')}: its fetch failed ({failed[:120]})"
    return status, reason


def summarize(
    got: Incoming,
    results: dict[str, lake.UpsertResult],
    prices: pl.DataFrame,
    reference: date | None,
    stale_after: int,
    calendar: str = "XNYS",
) -> pl.DataFrame:
    """One row per requested ticker (SUMMARY_SCHEMA): what was stored, how far behind, status and reason."""
    first, last = _date_range(prices)
    repaired = rows_repaired(got.findings)
    quarantined = {f.ticker: str(f) for f in got.findings if f.action == "quarantined"}
    rows = []
    for t in got.requested:
        r = results.get(t)
        behind = sessions_behind(last[t], reference, calendar) if t in last and reference else None
        status, reason = ticker_status(quarantined.get(t), t in last, behind, stale_after, got.failed.get(t))
        rows.append(
            {
                "ticker": t,
                "rows_added": r.rows_added if r else 0,
                "rows_revised": r.rows_revised if r else 0,
                "rows_filled": r.rows_filled if r else 0,
                "first_date": first.get(t),
                "last_date": last.get(t),
                "behind": behind,
                "repaired": repaired.get(t, 0),
                "status": status,
                "reason": reason,
            }
        )
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def _warn_behind(summary: pl.DataFrame, failed: dict[str, str], reference: date | None, stale_after: int) -> None:
    lagging = summary.filter(pl.col("behind") > 0)
    if failed and not lagging.is_empty():
        log.warning(
            "STALE DATA: yfinance could not update %d tickers; continuing on the stored lake, up to %d sessions "
            "behind %s: %s",
            lagging.height,
            lagging["behind"].max(),
            reference,
            ", ".join(f"{t} ({b})" for t, b in lagging.select("ticker", "behind").iter_rows()),
        )
    for t in summary.filter(pl.col("status") == "stale")["ticker"]:
        why = "its fetch failed" if t in failed else "delisted or halted?"
        log.warning(
            "stale ticker %s: no new bar for more than %s (%s); no forecast of it is published (its history still "
            "trains the model and is scored)",
            t,
            count(stale_after, "session"),
            why,
        )


def ingest(
    source: SourceSettings,
    settings: IngestSettings,
    validation: ValidationSettings,
    lake_dir: Path,
    *,
    cache_dir: Path | None = None,
    today: date | None = None,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    write_manifest: bool = True,
    context: Sequence[str] = (),
    calendar: str = "XNYS",
) -> IngestReport:
    """Bring the lake up to date for the tickers of `source` and return what is usable.

    `context`: series stored beside them (the market family's context-only series): fetched from yfinance like
    a ticker, read from a file only when it holds them. They are in the report like any ticker; the flows hold
    them apart (`IngestReport.set_apart`). `calendar`: the exchange calendar (`publish.calendar`) whose sessions
    say which bars are closed and how far behind a ticker is."""
    today = today or date.today()
    if source.kind == "yfinance":
        extra = [t for t in context if t not in source.tickers]
        fetching = source.model_copy(update={"tickers": [*source.tickers, *extra]}) if extra else source
        got = fetch_yahoo(fetching, settings, lake_dir, cache_dir=cache_dir, now=now, sleep=sleep, calendar=calendar)
    else:
        got = read_source(source, context)
    stored = lake.read_prices(lake_dir, got.safe)
    basis = stored  # the stored rows the new ones are judged with: a rebased ticker's on Yahoo's new basis
    if source.kind == "yfinance":
        got, basis = refetch_rebased(got, stored, settings, date.fromisoformat(source.start), sleep)
    combined, kept = merge_stored(got.new, basis)
    del basis
    got.findings += kept
    if combined.is_empty():
        raise _no_data(got.requested, got.failed, lake_dir)
    try:
        report = validate_prices(combined, validation.model_copy(update={"min_rows": 1}), today=today)
    except ValidationError as exc:
        raise SourceError(f"no usable data for {got.requested}: {exc}") from exc
    got.findings += report.findings
    arrived = _first_new_day(got.new, stored)
    upserted = lake.upsert(lake_dir, report.frame, stored, got.safe)  # judged with these rows: merged onto them
    del stored
    prices = lake.stored_rows(upserted)  # what `lake.read_prices` would read back, without reading every file
    gaps = long_gaps(prices, arrived)
    log_findings(gaps)
    got.findings += gaps
    results = {r.ticker: dataclasses.replace(r, stored=None) for r in upserted}  # the rows live on in `prices`
    del upserted
    reference = got.reference or (prices["date"].max() if not prices.is_empty() else None)
    summary = summarize(got, results, prices, reference, settings.stale_after, calendar)
    _warn_behind(summary, got.failed, reference, settings.stale_after)
    # stale tickers stay in `prices` (their history is valid training data); publishing skips them
    usable = summary.filter(pl.col("status").is_in(["ok", "stale"]))["ticker"].to_list()
    fingerprint = None
    if write_manifest:
        # from the rows just read back, and the usable rows' fingerprint from the same text (which the nightly
        # needs anyway); reconciled every time, changes or not: a run killed between its last file and the
        # manifest left entries that disagreed with their files, and a new ticker out of it, for good
        written = [t for t, r in results.items() if r.rows_added or r.rows_revised or r.rows_filled]
        fingerprint = lake.manifest_and_fingerprint(lake_dir, sorted(results), prices, usable, written)[1]
    if set(usable) != set(results):
        prices = prices.filter(pl.col("ticker").is_in(usable))
    return IngestReport(prices, summary, got.findings, reference, got.failed, sorted(results), fingerprint=fingerprint)
