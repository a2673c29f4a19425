"""Timeframe grid: every timeframe, across month and year boundaries, 1m vs 1M kept apart."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketspine import InvalidRequestError, parse_timeframe
from marketspine._base.time import format_kst, format_utc, parse_naive_utc, parse_time, to_ms
from marketspine._base.timeframes import MINUTE_UNITS, REST_CANDLE_KINDS, TIMEFRAMES


def ms(text: str) -> int:
    return parse_time(text)


def test_minute_and_month_are_different_and_survive_case_folding() -> None:
    minute, month = parse_timeframe("1m"), parse_timeframe("1M")
    assert minute.unit == "minute" and month.unit == "month"
    keys = [tf.key for tf in TIMEFRAMES.values()]
    assert len({k.casefold() for k in keys}) == len(keys)


def test_aliases_and_unknown_names() -> None:
    assert parse_timeframe("60m") is parse_timeframe("1h")
    assert parse_timeframe("240m") is parse_timeframe("4h")
    with pytest.raises(InvalidRequestError, match="accepted are 1s 1m"):
        parse_timeframe("2m")


@pytest.mark.parametrize(
    ("name", "moment", "start"),
    [
        ("1s", "2024-03-01T10:00:07.900", "2024-03-01T10:00:07"),
        ("1m", "2024-03-01T10:07:59", "2024-03-01T10:07:00"),
        ("3m", "2024-03-01T10:07:59", "2024-03-01T10:06:00"),
        ("5m", "2024-03-01T10:07:59", "2024-03-01T10:05:00"),
        ("10m", "2024-03-01T10:07:59", "2024-03-01T10:00:00"),
        ("15m", "2024-03-01T10:17:59", "2024-03-01T10:15:00"),
        ("30m", "2024-03-01T10:47:59", "2024-03-01T10:30:00"),
        ("1h", "2024-03-01T10:47:59", "2024-03-01T10:00:00"),
        ("4h", "2024-03-01T10:47:59", "2024-03-01T08:00:00"),
        ("1d", "2024-03-01T23:59:59", "2024-03-01T00:00:00"),
        ("1w", "2024-03-03T23:59:59", "2024-02-26T00:00:00"),  # Sunday -> Monday before
        ("1w", "2024-03-04T00:00:00", "2024-03-04T00:00:00"),  # Monday itself
        ("1M", "2024-02-29T12:00:00", "2024-02-01T00:00:00"),
        ("1y", "2024-12-31T23:59:59", "2024-01-01T00:00:00"),
        ("1d", "1969-12-31T12:00:00", "1969-12-31T00:00:00"),
    ],
)
def test_floor(name: str, moment: str, start: str) -> None:
    assert parse_timeframe(name).floor(ms(moment)) == ms(start)


@pytest.mark.parametrize(
    ("name", "start", "following"),
    [
        ("1M", "2024-01-01", "2024-02-01"),
        ("1M", "2024-02-01", "2024-03-01"),  # leap February, 29 days
        ("1M", "2023-02-01", "2023-03-01"),  # 28 days
        ("1M", "2024-12-01", "2025-01-01"),  # year boundary
        ("1y", "2024-01-01", "2025-01-01"),
        ("1w", "2024-12-30", "2025-01-06"),  # week across the new year
        ("1d", "2024-12-31", "2025-01-01"),
    ],
)
def test_next_start_across_boundaries(name: str, start: str, following: str) -> None:
    assert parse_timeframe(name).next_start(ms(start)) == ms(following)


@given(
    name=st.sampled_from(sorted(TIMEFRAMES)),
    moment=st.integers(min_value=ms("2000-01-01"), max_value=ms("2040-01-01")),
    steps=st.integers(min_value=-30, max_value=30),
)
def test_grid_is_consistent(name: str, moment: int, steps: int) -> None:
    tf = parse_timeframe(name)
    start = tf.floor(moment)
    assert start <= moment < tf.next_start(start)
    assert tf.floor(start) == start
    assert tf.shift(tf.shift(start, steps), -steps) == start
    assert tf.is_closed(start, tf.next_start(start)) and not tf.is_closed(start, moment)
    if tf.unit == "week":
        assert dt.datetime.fromtimestamp(start / 1000, dt.UTC).weekday() == 0
    later = tf.shift(start, abs(steps))
    assert tf.count_windows(start, later) == abs(steps)
    assert len(list(tf.windows(start, later))) == abs(steps)


def test_times_naive_is_utc_and_kst_is_a_label() -> None:
    assert ms("2026-09-01T00:00:00") == ms("2026-09-01 00:00:00") == ms("2026-09-01T00:00:00Z")
    assert ms("2026-09-01T09:00:00+09:00") == ms("2026-09-01T00:00:00")
    assert ms("2024-03-13T11:00:00.000Z") == to_ms(dt.datetime(2024, 3, 13, 11))
    assert format_utc(ms("2026-08-03")) == "2026-08-03T00:00:00"
    assert format_kst(ms("2026-08-03")) == "2026-08-03T09:00:00"
    assert parse_naive_utc("2026-08-03T10:45:00") == ms("2026-08-03T10:45:00")
    with pytest.raises(InvalidRequestError, match="ISO 8601"):
        parse_time("yesterday")
    with pytest.raises(InvalidRequestError):
        parse_naive_utc("not a time")


def test_rest_paths_and_ws_types() -> None:
    assert parse_timeframe("4h").rest_path == "/v1/candles/minutes/240"
    assert parse_timeframe("1s").rest_path == "/v1/candles/seconds"
    assert parse_timeframe("1M").rest_path == "/v1/candles/months"
    assert parse_timeframe("1h").ws_type == "candle.60m"
    assert parse_timeframe("1d").ws_type is None


def test_rest_kinds_and_minute_units_come_from_the_one_table() -> None:
    assert {kind: tf.name for kind, tf in REST_CANDLE_KINDS.items()} == {
        "seconds": "1s", "days": "1d", "weeks": "1w", "months": "1M", "years": "1y",
    }  # fmt: skip
    assert {unit: tf.name for unit, tf in MINUTE_UNITS.items()} == {
        1: "1m", 3: "3m", 5: "5m", 10: "10m", 15: "15m", 30: "30m", 60: "1h", 240: "4h",
    }  # fmt: skip
    for tf in TIMEFRAMES.values():
        assert tf.rest_path.startswith(f"/v1/candles/{tf.rest_kind}"), tf
        held = (
            MINUTE_UNITS[tf.minutes]
            if tf.rest_kind == "minutes"
            else REST_CANDLE_KINDS[tf.rest_kind]
        )
        assert held is tf
