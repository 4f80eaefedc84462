"""The data-health gate: recent bars present, moves plausible, tickers current. It blocks training, not publishing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from features.prices.calendar import sessions_between
from features.settings import HealthSettings
from nightcast.words import count


@dataclass
class HealthReport:
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_health(
    prices: pl.DataFrame, stale: dict[str, int], settings: HealthSettings, calendar: str = "XNYS"
) -> HealthReport:
    """Problems in the last `window_days` sessions up to the newest bar: missing sessions, implausible jumps,
    stale tickers. Each names the setting that decides it.

    A stale ticker (`stale`: sessions behind, beyond `ingest.stale_after`) blocks training while its gap is
    recent, at most `window_days` sessions: a fetch that failed or a feed that stopped is worth a look before
    the model trains on the rest. One that stopped longer ago is delisted or halted: its history still trains
    the model, publishing skips it (with a warning), and it blocks nothing."""
    report = HealthReport()
    if not settings.enabled or prices.is_empty():
        return report
    newest = prices["date"].max()
    sessions = sessions_between(newest, settings.window_days, calendar)
    # only two columns grouped, and only the window's rows sorted and split by ticker: the whole history, sorted
    # and split, held two copies of every price (+0.6 GiB at 500 tickers x 25 years, the nightly's peak then;
    # an eager group_by on the whole frame +0.37 GiB), now +0.01 GiB
    first_days = prices.lazy().select("ticker", "date").group_by("ticker").agg(pl.col("date").min())
    first_days = first_days.sort("ticker", nulls_last=True).collect()  # problems listed by ticker
    window = prices.lazy().filter(pl.col("date") >= sessions[0]).select("ticker", "date", "adj_close")
    window = window.sort("ticker", "date", maintain_order=True).collect()  # a duplicated day: its first row first
    recent_rows = {ticker: g for (ticker,), g in window.group_by("ticker")}
    none_recent = window.clear()
    for ticker, first_day in first_days.iter_rows():
        if ticker in stale:
            continue
        recent = recent_rows.get(ticker, none_recent)
        have = set(recent["date"].to_list())
        missing = [d for d in sessions if d not in have and d >= first_day]
        if len(missing) > settings.max_missing:
            report.problems.append(
                f"{ticker}: {len(missing)} missing sessions since {sessions[0]} (first {missing[0]}; "
                f"health.max_missing = {settings.max_missing})"
            )
        returns = np.diff(np.log(recent["adj_close"].to_numpy()))
        if returns.size and np.abs(returns).max() > settings.max_jump:
            i = int(np.abs(returns).argmax())
            day = recent["date"][i + 1]
            report.problems.append(
                f"{ticker}: implausible move of {returns[i]:+.1%} (log) on {day} "
                f"(health.max_jump = {settings.max_jump})"
            )
    if settings.block_on_stale:
        report.problems += [
            f"{t}: stale, {count(n, 'session')} behind, within health.window_days = {settings.window_days} "
            "(health.block_on_stale = false trains anyway)"
            for t, n in sorted(stale.items())
            if n <= settings.window_days
        ]
    return report
