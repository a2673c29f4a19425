"""Time inside marketspine: UTC epoch milliseconds, always.

KST is only a label (UTC + 9 h). Naive inputs mean UTC, as on Upbit.
"""

from __future__ import annotations

import datetime as dt

from ..errors import InvalidRequestError

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "KST_OFFSET_MS",
    "MINUTE_MS",
    "SECOND_MS",
    "days_from_civil",
    "format_kst",
    "format_utc",
    "from_ms",
    "now_ms",
    "parse_naive_utc",
    "parse_time",
    "to_ms",
]

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
KST_OFFSET_MS = 9 * HOUR_MS

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def now_ms() -> int:
    """The wall clock as UTC epoch milliseconds."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def to_ms(moment: dt.datetime) -> int:
    """Epoch milliseconds of ``moment``; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> dt.datetime:
    """An aware UTC datetime for epoch milliseconds ``ms``."""
    return _EPOCH + dt.timedelta(milliseconds=ms)


def parse_time(text: str) -> int:
    """Parse an ISO 8601 time (``2024-01-01``, ``2024-01-01T09:00:00+09:00``, ``... Z``,
    space instead of ``T``, fractional seconds) into UTC epoch ms. Naive means UTC.

    Raises InvalidRequestError naming what was wrong and what is accepted.
    """
    value = text.strip()
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(
            f"invalid time {text!r}: expected ISO 8601 such as 2024-01-01, "
            "2024-01-01T00:00:00 (UTC), 2024-01-01T09:00:00+09:00 or 2024-01-01T00:00:00Z"
        ) from None
    return to_ms(moment)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def parse_naive_utc(text: str) -> int:
    """Fast parse of Upbit's naive ``yyyy-MM-ddTHH:mm:ss`` (UTC) into epoch ms.

    This sits on the decoding hot path, so it slices instead of calling strptime.
    """
    try:
        days = days_from_civil(int(text[0:4]), int(text[5:7]), int(text[8:10]))
        seconds = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
    except (ValueError, IndexError):
        raise InvalidRequestError(
            f"invalid Upbit time {text!r}: expected yyyy-MM-ddTHH:mm:ss"
        ) from None
    return (days * 86_400 + seconds) * 1000


def format_utc(ms: int) -> str:
    """``yyyy-MM-ddTHH:mm:ss`` (naive, UTC), the way Upbit labels candles."""
    return from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S")


def format_kst(ms: int) -> str:
    """``yyyy-MM-ddTHH:mm:ss`` in KST (UTC + 9 h), a pure relabel."""
    return format_utc(ms + KST_OFFSET_MS)
