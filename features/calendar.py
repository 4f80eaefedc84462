"""Exchange trading days (exchange_calendars), for target dates and date checks."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import pandas as pd

from features.errors import ConfigError

FIRST_YEAR = 1990  # exchange_calendars starts 20 years back by default; our data is older


@lru_cache(maxsize=8)
def _calendar(name: str):
    import exchange_calendars as xcals

    try:
        return xcals.get_calendar(name, start=f"{FIRST_YEAR}-01-01")
    except xcals.errors.InvalidCalendarName as exc:
        raise ConfigError(f"unknown exchange calendar {name!r} (e.g. XNYS, XNAS, XLON)") from exc


def next_sessions(asof: date, count: int, calendar: str = "XNYS") -> list[date]:
    """The `count` trading sessions strictly after `asof`."""
    cal = _calendar(calendar)
    ts = pd.Timestamp(asof)
    first = cal.next_session(ts) if cal.is_session(ts) else cal.date_to_session(ts, direction="next")
    return [d.date() for d in cal.sessions_window(first, count)]


def is_session(day: date, calendar: str = "XNYS") -> bool:
    return bool(_calendar(calendar).is_session(pd.Timestamp(day)))
