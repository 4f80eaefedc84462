"""Exchange trading days (exchange_calendars), for target dates and date checks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache

import pandas as pd

from nightcast.errors import ConfigError

FIRST_YEAR = 1990  # exchange_calendars starts 20 years back by default; our data is older


@lru_cache(maxsize=8)
def _calendar(name: str):
    import exchange_calendars as xcals

    try:
        return xcals.get_calendar(name, start=f"{FIRST_YEAR}-01-01")
    except xcals.errors.InvalidCalendarName:
        raise ConfigError(f"unknown exchange calendar {name!r} (e.g. XNYS, XNAS, XLON, XTKS, 24/7)") from None
    except ValueError:  # a calendar kept from a later year on (XTKS from 1997, XSHG from 1999): from there
        first = xcals.get_calendar(name).bound_min()
        return xcals.get_calendar(name, start=first)


def next_sessions(asof: date, count: int, calendar: str = "XNYS") -> list[date]:
    """The `count` trading sessions strictly after `asof`."""
    cal = _calendar(calendar)
    ts = pd.Timestamp(asof)
    first = cal.next_session(ts) if cal.is_session(ts) else cal.date_to_session(ts, direction="next")
    return [d.date() for d in cal.sessions_window(first, count)]


def is_session(day: date, calendar: str = "XNYS") -> bool:
    return bool(_calendar(calendar).is_session(pd.Timestamp(day)))


MARKET_CLOSE_DELAY_HOURS = 16.5  # bars of a session are final about half an hour after the 16:00 close


def latest_closed_session(now: datetime | None = None, calendar: str = "XNYS") -> date:
    """The most recent session whose daily bar should be available at `now`."""
    cal = _calendar(calendar)
    local = pd.Timestamp(now or datetime.now(UTC)).tz_convert(cal.tz)
    today = pd.Timestamp(local.date())
    if cal.is_session(today) and local.hour + local.minute / 60 >= MARKET_CLOSE_DELAY_HOURS:
        return today.date()
    return cal.date_to_session(today - pd.Timedelta(days=1), direction="previous").date()


def sessions_behind(last: date, reference: date, calendar: str = "XNYS") -> int:
    """Trading sessions after `last` up to and including `reference` (0 when up to date)."""
    if last >= reference:
        return 0
    cal = _calendar(calendar)
    return len(cal.sessions_in_range(pd.Timestamp(last) + pd.Timedelta(days=1), pd.Timestamp(reference)))


def sessions_between(last: date, count: int, calendar: str = "XNYS") -> list[date]:
    """The `count` sessions ending on `last` (or on the session before it, if `last` is not one)."""
    cal = _calendar(calendar)
    end = pd.Timestamp(last)
    if not cal.is_session(end):
        end = cal.date_to_session(end, direction="previous")
    return [d.date() for d in cal.sessions_window(end, -count)]


def check_calendar(name: str) -> None:
    """`name` is a calendar exchange_calendars knows: a ConfigError now, not after the ingest and the features."""
    _calendar(name)
