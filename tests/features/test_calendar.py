from datetime import date

import pytest

from features.prices.calendar import is_session, next_sessions
from nightcast.errors import ConfigError


def test_next_nyse_sessions_skip_new_year_and_weekend():
    assert next_sessions(date(2014, 12, 31), 5) == [
        date(2015, 1, 2),
        date(2015, 1, 5),
        date(2015, 1, 6),
        date(2015, 1, 7),
        date(2015, 1, 8),
    ]


def test_from_a_holiday_or_weekend():
    assert next_sessions(date(2015, 1, 1), 1) == [date(2015, 1, 2)]
    assert next_sessions(date(2015, 7, 3), 1) == [date(2015, 7, 6)]  # Independence Day observed
    assert not is_session(date(2001, 9, 11)) and is_session(date(1999, 1, 4))


def test_unknown_calendar():
    with pytest.raises(ConfigError, match="XXXX"):
        next_sessions(date(2015, 1, 1), 1, calendar="XXXX")


@pytest.mark.parametrize("name", ["XTKS", "XSHG", "XBOM"])
def test_calendars_kept_from_a_later_year_than_1990_load(name):
    """A reviewer's case: publish.calendar = XTKS crashed every run with a traceback (exchange_calendars keeps
    Tokyo's sessions from 1997 only, and nightcast asked for them from 1990)."""
    days = next_sessions(date(2014, 12, 30), 3, name)
    assert len(days) == 3 and days[0] > date(2014, 12, 30)


def test_rows_on_days_the_calendar_has_no_session_are_set_apart_per_ticker():
    """A reviewer's case: one Saturday row in a US file (or a crypto series' weekends) made Saturday the night's
    as-of date and every other ticker "not current"."""
    import polars as pl

    from features.prices.calendar import on_sessions

    days = [date(2014, 7, 1 + k) for k in range(10)]  # Tuesday 1 .. Thursday 10 July: 4 July and a weekend
    prices = pl.DataFrame({"ticker": ["BTC-USD"] * 10 + ["JPM"] * 3, "date": [*days, *days[1:4]], "v": range(13)})
    kept, off = on_sessions(prices, "XNYS")
    assert off == [("BTC-USD", 3, date(2014, 7, 4)), ("JPM", 1, date(2014, 7, 4))]
    assert kept.height == 9 and date(2014, 7, 5) not in kept["date"].to_list()
    same, none = on_sessions(prices, "24/7")
    assert same is prices and none == []  # nothing to leave out: the frame itself, no copy
    _, tokyo = on_sessions(prices, "XTKS")
    assert tokyo == [("BTC-USD", 2, date(2014, 7, 5))]


@pytest.mark.parametrize(
    "now, calendar, expected",
    [
        ("2014-12-18T18:00+00:00", "XLON", date(2014, 12, 18)),  # closed 16:30: New York's 16:30 said 17 Dec
        ("2014-12-18T16:45+00:00", "XLON", date(2014, 12, 17)),  # 15 minutes after the close: not final yet
        ("2014-11-28T19:00+00:00", "XNYS", date(2014, 11, 28)),  # the day after Thanksgiving closes at 13:00
        ("2014-12-18T23:30+00:00", "XNYS", date(2014, 12, 18)),
        ("2014-12-18T23:30+00:00", "24/7", date(2014, 12, 17)),  # a 24/7 day closes at midnight UTC
        ("2014-12-21T00:45+00:00", "24/7", date(2014, 12, 20)),  # Saturday: a session there
        ("2014-12-18T07:00+00:00", "XTKS", date(2014, 12, 18)),  # Tokyo closed 06:00 UTC, New York's night before
    ],
)
def test_the_latest_closed_session_is_by_each_calendars_own_close(now, calendar, expected):
    from datetime import datetime

    from features.prices.calendar import latest_closed_session

    assert latest_closed_session(datetime.fromisoformat(now), calendar) == expected


def test_a_day_before_a_calendars_first_session_is_one_line_and_an_old_last_bar_is_counted_from_it():
    """A reviewer's case: XTKS (sessions from 1997) crashed with a traceback on a 1996 date."""
    from features.prices.calendar import sessions_behind, sessions_between

    with pytest.raises(
        ConfigError, match=r"1996-03-01 is outside the sessions exchange_calendars knows for XTKS \(1997"
    ):
        is_session(date(1996, 3, 1), "XTKS")
    assert sessions_behind(date(1996, 3, 1), date(1997, 1, 10), "XTKS") == 5  # 6 .. 10 January 1997
    assert sessions_between(date(1997, 1, 8), 21, "XTKS") == [date(1997, 1, 6), date(1997, 1, 7), date(1997, 1, 8)]
