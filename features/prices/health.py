"""The data-health gate: recent bars present, moves plausible, tickers current. It blocks training, not publishing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from features.prices.calendar import sessions_between
from features.settings import HealthSettings


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
    stale tickers."""
    report = HealthReport()
    if not settings.enabled or prices.is_empty():
        return report
    newest = prices["date"].max()
    sessions = sessions_between(newest, settings.window_days, calendar)
    for (ticker,), g in prices.sort("date").group_by("ticker", maintain_order=True):
        if ticker in stale:
            continue
        recent = g.filter(pl.col("date") >= sessions[0])
        have = set(recent["date"].to_list())
        missing = [d for d in sessions if d not in have and d >= g["date"].min()]
        if len(missing) > settings.max_missing:
            report.problems.append(
                f"{ticker}: {len(missing)} missing sessions since {sessions[0]} (first {missing[0]})"
            )
        returns = np.diff(np.log(recent["adj_close"].to_numpy()))
        if returns.size and np.abs(returns).max() > settings.max_jump:
            i = int(np.abs(returns).argmax())
            day = recent["date"][i + 1]
            report.problems.append(f"{ticker}: implausible move of {returns[i]:+.1%} (log) on {day}")
    if settings.block_on_stale:
        report.problems += [f"{t}: stale, {n} sessions behind" for t, n in sorted(stale.items())]
    return report
