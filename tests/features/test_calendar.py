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
