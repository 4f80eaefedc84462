"""Exchange trading days (exchange_calendars), for target dates and date checks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache

import pandas as pd
import polars as pl

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


def _day(cal, name: str, day: date) -> pd.Timestamp:
    """`day` as exchange_calendars takes it, or a one-line ConfigError when the calendar has no sessions there
    (XTKS keeps Tokyo's from 1997 only, every calendar a year or so ahead): its own error was a traceback."""
    ts = pd.Timestamp(day)
    if not cal.first_session <= ts <= cal.last_session:
        raise ConfigError(
            f"{day} is outside the sessions exchange_calendars knows for {name} "
            f"({cal.first_session.date()} .. {cal.last_session.date()}): publish.calendar"
        )
    return ts


def next_sessions(asof: date, count: int, calendar: str = "XNYS") -> list[date]:
    """The `count` trading sessions strictly after `asof`."""
    cal = _calendar(calendar)
    ts = _day(cal, calendar, asof)
    first = cal.next_session(ts) if cal.is_session(ts) else cal.date_to_session(ts, direction="next")
    return [d.date() for d in cal.sessions_window(first, count)]


def is_session(day: date, calendar: str = "XNYS") -> bool:
    cal = _calendar(calendar)
    return bool(cal.is_session(_day(cal, calendar, day)))


BARS_FINAL_AFTER = pd.Timedelta(minutes=30)  # a session's daily bar is final about half an hour after its close


def latest_closed_session(now: datetime | None = None, calendar: str = "XNYS") -> date:
    """The most recent session of `calendar` whose daily bar should be final at `now`: closed, by its own close
    time (London's 16:30, Tokyo's 15:00, a half-day's 13:00, a 24/7 day's midnight UTC) and half an hour more.
    A fixed 16:30 New York time took a London bar of that day for unfinished and a NYSE half-day's late."""
    cal = _calendar(calendar)
    now = pd.Timestamp(now or datetime.now(UTC))
    now = now.tz_localize(UTC) if now.tzinfo is None else now.tz_convert(UTC)
    today = pd.Timestamp(now.tz_convert(cal.tz).date())
    session = today if cal.is_session(today) else cal.date_to_session(today, direction="previous")
    while cal.session_close(session) + BARS_FINAL_AFTER > now:
        session = cal.previous_session(session)
    return session.date()


def sessions_behind(last: date, reference: date, calendar: str = "XNYS") -> int:
    """Trading sessions after `last` up to and including `reference` (0 when up to date)."""
    if last >= reference:
        return 0
    cal = _calendar(calendar)
    # a ticker last seen before the calendar's first session (delisted long ago) counts from that session
    start = max(pd.Timestamp(last) + pd.Timedelta(days=1), cal.first_session)
    return len(cal.sessions_in_range(start, _day(cal, calendar, reference)))


def sessions_between(last: date, count: int, calendar: str = "XNYS") -> list[date]:
    """The `count` sessions ending on `last` (or on the session before it, if `last` is not one)."""
    cal = _calendar(calendar)
    end = _day(cal, calendar, last)
    if not cal.is_session(end):
        end = cal.date_to_session(end, direction="previous")
    return [d.date() for d in cal.sessions_in_range(cal.first_session, end)[-count:]]  # fewer near the first


def check_calendar(name: str) -> None:
    """`name` is a calendar exchange_calendars knows: a ConfigError now, not after the ingest and the features."""
    _calendar(name)


def on_sessions(prices: pl.DataFrame, calendar: str) -> tuple[pl.DataFrame, list[tuple[str, int, date]]]:
    """The rows of `prices` dated on sessions of `calendar`, and per ticker how many were not (and the first).

    A universe is modelled on one calendar (`publish.calendar`): targets are a ticker's next rows and target dates
    its sessions, so a row on another day (a weekend's crypto bar, a London session on a US holiday, a bad
    Saturday row in a US file) made the newest such row the night's as-of date, every other ticker "not
    current" and its targets span other days than the dates published. Those rows stay in the lake; only the
    model leaves them out. Days outside what the calendar can evaluate are kept. The frame itself (no copy)
    when every row is on a session, the common case."""
    if prices.is_empty():
        return prices, []
    cal = _calendar(calendar)
    days = prices["date"].unique()
    first, last = max(days.min(), cal.first_session.date()), min(days.max(), cal.last_session.date())
    if first > last:
        return prices, []
    sessions = pl.Series([d.date() for d in cal.sessions_in_range(pd.Timestamp(first), pd.Timestamp(last))])
    off_days = days.filter(days.is_between(first, last) & ~days.is_in(sessions.implode()))
    if off_days.is_empty():
        return prices, []
    off = pl.col("date").is_in(off_days.implode())
    counts = prices.filter(off).group_by("ticker").agg(pl.len(), pl.col("date").min()).sort("ticker")
    return prices.filter(~off), [(t, n, d) for t, n, d in counts.iter_rows()]
