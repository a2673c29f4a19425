"""An independent oracle for the calendar: ``Timeframe.floor``/``shift`` held against the
standard library's ``datetime`` arithmetic over random instants from 2017 to 2040.

The simulator and the client share ``_timeframes`` and ``_time``, so a wrong window edge
would agree with itself everywhere else; here the expected edges come from ``datetime``
alone (Monday weeks, calendar months and years, all in UTC).
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from marketspine._base.timeframes import TIMEFRAMES, Timeframe

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)

instants = st.datetimes(
    min_value=dt.datetime(2017, 1, 1), max_value=dt.datetime(2040, 12, 31, 23, 59, 59, 999000)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC))
timeframes = st.sampled_from(list(TIMEFRAMES.values()))
shifts = st.integers(min_value=-400, max_value=400)


def ms(moment: dt.datetime) -> int:
    return (moment - EPOCH) // dt.timedelta(milliseconds=1)


def expected_floor(tf: Timeframe, moment: dt.datetime) -> dt.datetime:
    """The start of the window holding ``moment``, by datetime arithmetic only."""
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if tf.unit == "second":
        return moment.replace(microsecond=0)
    if tf.unit == "minute":
        minutes = (moment.hour * 60 + moment.minute) // tf.minutes * tf.minutes
        return day + dt.timedelta(minutes=minutes)
    if tf.unit == "day":
        return day
    if tf.unit == "week":
        return day - dt.timedelta(days=day.weekday())  # Monday is weekday 0
    if tf.unit == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def expected_shift(tf: Timeframe, start: dt.datetime, n: int) -> dt.datetime:
    """The window start ``n`` windows after ``start`` (itself a window start)."""
    if tf.unit in ("month", "year"):
        months = start.year * 12 + start.month - 1 + n * (12 if tf.unit == "year" else 1)
        return start.replace(year=months // 12, month=months % 12 + 1)
    length = {
        "second": dt.timedelta(seconds=1),
        "minute": dt.timedelta(minutes=tf.minutes),
        "day": dt.timedelta(days=1),
        "week": dt.timedelta(weeks=1),
    }[tf.unit]
    return start + n * length


@settings(max_examples=250, deadline=None, derandomize=True, database=None)
@given(tf=timeframes, moment=instants)
def test_floor_matches_datetime_arithmetic(tf: Timeframe, moment: dt.datetime) -> None:
    start = tf.floor(ms(moment))
    assert start == ms(expected_floor(tf, moment)), (tf.name, moment)
    assert start <= ms(moment) < tf.next_start(start)


@settings(max_examples=250, deadline=None, derandomize=True, database=None)
@given(tf=timeframes, moment=instants, n=shifts)
def test_shift_matches_datetime_arithmetic(tf: Timeframe, moment: dt.datetime, n: int) -> None:
    start = expected_floor(tf, moment)
    assert tf.shift(ms(moment), n) == ms(expected_shift(tf, start, n)), (tf.name, moment, n)


@settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(tf=timeframes, moment=instants, n=st.integers(min_value=0, max_value=60))
def test_windows_and_counts_agree_with_shift(tf: Timeframe, moment: dt.datetime, n: int) -> None:
    first = tf.floor(ms(moment))
    end = tf.shift(first, n)
    starts = list(tf.windows(ms(moment), end))
    assert starts == [tf.shift(first, i) for i in range(n)]
    assert tf.count_windows(ms(moment), end) == n
    assert all(tf.is_closed(s, end) for s in starts)


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    # Fixed anchors the properties above rely on, stated plainly.
    week, month, year = TIMEFRAMES["1w"], TIMEFRAMES["1M"], TIMEFRAMES["1y"]
    sunday = dt.datetime(2024, 3, 3, 23, 59, tzinfo=UTC)
    assert week.floor(ms(sunday)) == ms(dt.datetime(2024, 2, 26, tzinfo=UTC))
    leap = dt.datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert month.floor(ms(leap)) == ms(dt.datetime(2024, 2, 1, tzinfo=UTC))
    assert month.shift(ms(leap), 1) == ms(dt.datetime(2024, 3, 1, tzinfo=UTC))
    assert year.shift(ms(leap), -7) == ms(dt.datetime(2017, 1, 1, tzinfo=UTC))
