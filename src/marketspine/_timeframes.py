"""Timeframes and their window grid (pure).

Every window starts on a UTC grid: seconds and minutes counted from 00:00 UTC, days at
00:00 UTC, weeks on Monday 00:00 UTC, months on the 1st, years on January 1st.
``1m`` (minute) and ``1M`` (month) are different timeframes; their ``key`` differs even
after case folding, so stores whose names ignore case keep them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ._errors import InvalidRequestError
from ._time import DAY_MS, MINUTE_MS, SECOND_MS, days_from_civil, from_ms

__all__ = ["TIMEFRAMES", "Timeframe", "parse_timeframe"]

Unit = Literal["second", "minute", "day", "week", "month", "year"]

_WEEK_MS = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One candle timeframe. ``name`` is the public spelling (``1m``, ``4h``, ``1M``)."""

    name: str
    unit: Unit
    minutes: int = 0  # the minute unit for minute candles (1..240), else 0

    @property
    def key(self) -> str:
        """An identifier that survives case folding (``1min`` vs ``1month``)."""
        if self.unit == "minute":
            return f"{self.minutes}min"
        return f"1{self.unit}"

    @property
    def fixed_ms(self) -> int | None:
        """Window length in ms, or None for months and years (calendar lengths)."""
        return {
            "second": SECOND_MS,
            "minute": self.minutes * MINUTE_MS,
            "day": DAY_MS,
            "week": _WEEK_MS,
        }.get(self.unit)

    @property
    def rest_path(self) -> str:
        """Upbit REST path of this timeframe's candles."""
        if self.unit == "minute":
            return f"/v1/candles/minutes/{self.minutes}"
        return f"/v1/candles/{self.unit}s"

    @property
    def ws_type(self) -> str | None:
        """Upbit WebSocket candle type (``candle.5m``), or None where Upbit streams none."""
        if self.unit == "second":
            return "candle.1s"
        if self.unit == "minute":
            return f"candle.{self.minutes}m"
        return None

    def floor(self, ms: int) -> int:
        """Start of the window containing ``ms``."""
        fixed = self.fixed_ms
        if self.unit == "week":
            # 1970-01-01 was a Thursday; weeks start on Monday, three days later.
            return (ms - 4 * DAY_MS) // _WEEK_MS * _WEEK_MS + 4 * DAY_MS
        if fixed is not None:
            return ms // fixed * fixed
        moment = from_ms(ms)
        month = moment.month if self.unit == "month" else 1
        return days_from_civil(moment.year, month, 1) * DAY_MS

    def shift(self, start_ms: int, n: int) -> int:
        """The window start ``n`` windows after (negative: before) the one at ``start_ms``."""
        fixed = self.fixed_ms
        if fixed is not None:
            return self.floor(start_ms) + n * fixed
        moment = from_ms(self.floor(start_ms))
        months = n * (12 if self.unit == "year" else 1)
        index = moment.year * 12 + (moment.month - 1) + months
        return days_from_civil(index // 12, index % 12 + 1, 1) * DAY_MS

    def next_start(self, start_ms: int) -> int:
        """Start of the window after the one containing ``start_ms`` (= its exclusive end)."""
        return self.shift(start_ms, 1)

    def is_closed(self, start_ms: int, now_ms: int) -> bool:
        """A window is closed once its end is at or before ``now_ms`` (upstream clock)."""
        return self.next_start(start_ms) <= now_ms

    def windows(self, start_ms: int, end_ms: int) -> Iterator[int]:
        """Starts of the windows that begin in ``[floor(start_ms), end_ms)``, ascending."""
        cursor = self.floor(start_ms)
        while cursor < end_ms:
            yield cursor
            cursor = self.next_start(cursor)

    def count_windows(self, start_ms: int, end_ms: int) -> int:
        """How many windows start in ``[floor(start_ms), end_ms)``."""
        fixed = self.fixed_ms
        first = self.floor(start_ms)
        if end_ms <= first:
            return 0
        if fixed is not None and self.unit != "week":
            return (end_ms - first + fixed - 1) // fixed
        if self.unit == "week":
            return (end_ms - first + _WEEK_MS - 1) // _WEEK_MS
        return sum(1 for _ in self.windows(start_ms, end_ms))

    def __str__(self) -> str:
        return self.name


_ALL = (
    Timeframe("1s", "second"),
    Timeframe("1m", "minute", 1),
    Timeframe("3m", "minute", 3),
    Timeframe("5m", "minute", 5),
    Timeframe("10m", "minute", 10),
    Timeframe("15m", "minute", 15),
    Timeframe("30m", "minute", 30),
    Timeframe("1h", "minute", 60),
    Timeframe("4h", "minute", 240),
    Timeframe("1d", "day"),
    Timeframe("1w", "week"),
    Timeframe("1M", "month"),
    Timeframe("1y", "year"),
)

TIMEFRAMES: dict[str, Timeframe] = {tf.name: tf for tf in _ALL}
_ALIASES = {"60m": "1h", "240m": "4h"}


def parse_timeframe(text: str | Timeframe) -> Timeframe:
    """The timeframe named ``text`` (case matters: ``1m`` is a minute, ``1M`` a month).

    Raises InvalidRequestError listing the accepted names.
    """
    if isinstance(text, Timeframe):
        return text
    name = _ALIASES.get(text, text)
    try:
        return TIMEFRAMES[name]
    except KeyError:
        accepted = " ".join(TIMEFRAMES)
        raise InvalidRequestError(
            f"unknown timeframe {text!r}: accepted are {accepted} (60m and 240m as aliases)"
        ) from None
