"""Timeframes and their window grid (pure).

Every window starts on a UTC grid: seconds and minutes counted from 00:00 UTC, days at
00:00 UTC, weeks on Monday 00:00 UTC, months on the 1st, years on January 1st.
``1m`` (minute) and ``1M`` (month) are different timeframes; their ``key`` differs even
after case folding, so stores whose names ignore case keep them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from ..errors import InvalidRequestError
from .time import DAY_MS, MINUTE_MS, SECOND_MS, days_from_civil, from_ms

__all__ = [
    "MINUTE_UNITS",
    "REST_CANDLE_KINDS",
    "TIMEFRAMES",
    "WS_CANDLE_TYPES",
    "Timeframe",
    "parse_timeframe",
    "timeframe_of_kind",
]

Unit = Literal["second", "minute", "day", "week", "month", "year"]

_WEEK_MS = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class Timeframe:
    """One candle timeframe. ``name`` is the public spelling (``1m``, ``4h``, ``1M``);
    ``rest_path`` is Upbit's REST path of its candles, ``ws_type`` its WebSocket candle
    type (``candle.5m``), None where Upbit streams none."""

    name: str
    unit: Unit
    minutes: int = 0  # the minute unit for minute candles (1..240), else 0
    rest_path: str = field(default="", compare=False)
    ws_type: str | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """An identifier that survives case folding (``1min`` vs ``1month``)."""
        if self.unit == "minute":
            return f"{self.minutes}min"
        return f"1{self.unit}"

    @property
    def rest_kind(self) -> str:
        """Upbit's REST candle kind: the path segment after ``/v1/candles/`` (``minutes``,
        ``days``)."""
        return self.rest_path.split("/")[3]

    @property
    def fixed_ms(self) -> int | None:
        """Window length in ms, or None for months and years (calendar lengths)."""
        return {
            "second": SECOND_MS,
            "minute": self.minutes * MINUTE_MS,
            "day": DAY_MS,
            "week": _WEEK_MS,
        }.get(self.unit)

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


# The one Upbit table: every timeframe with its REST candle path and WebSocket candle type.
# Everything that maps between them (requests, subscriptions, decoding frames) reads it here.
_ALL = (
    Timeframe("1s", "second", 0, "/v1/candles/seconds", "candle.1s"),
    Timeframe("1m", "minute", 1, "/v1/candles/minutes/1", "candle.1m"),
    Timeframe("3m", "minute", 3, "/v1/candles/minutes/3", "candle.3m"),
    Timeframe("5m", "minute", 5, "/v1/candles/minutes/5", "candle.5m"),
    Timeframe("10m", "minute", 10, "/v1/candles/minutes/10", "candle.10m"),
    Timeframe("15m", "minute", 15, "/v1/candles/minutes/15", "candle.15m"),
    Timeframe("30m", "minute", 30, "/v1/candles/minutes/30", "candle.30m"),
    Timeframe("1h", "minute", 60, "/v1/candles/minutes/60", "candle.60m"),
    Timeframe("4h", "minute", 240, "/v1/candles/minutes/240", "candle.240m"),
    Timeframe("1d", "day", 0, "/v1/candles/days"),
    Timeframe("1w", "week", 0, "/v1/candles/weeks"),
    Timeframe("1M", "month", 0, "/v1/candles/months"),
    Timeframe("1y", "year", 0, "/v1/candles/years"),
)

TIMEFRAMES: dict[str, Timeframe] = {tf.name: tf for tf in _ALL}
# WebSocket candle type (``candle.60m``) -> timeframe (``1h``).
WS_CANDLE_TYPES: dict[str, Timeframe] = {tf.ws_type: tf for tf in _ALL if tf.ws_type is not None}
# REST candle kind -> its timeframe, for the kinds whose path names one timeframe (``days``);
# ``minutes`` takes its unit from the path: MINUTE_UNITS.
REST_CANDLE_KINDS: dict[str, Timeframe] = {tf.rest_kind: tf for tf in _ALL if tf.unit != "minute"}
# The unit of ``/v1/candles/minutes/{unit}`` -> its timeframe (``60`` -> ``1h``).
MINUTE_UNITS: dict[int, Timeframe] = {tf.minutes: tf for tf in _ALL if tf.unit == "minute"}
# Upbit's minute spellings of the hour timeframes (``60m`` for ``1h``).
_ALIASES = {f"{tf.minutes}m": tf.name for tf in _ALL if tf.minutes and tf.name[-1] != "m"}


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


def timeframe_of_kind(kind: str) -> Timeframe:
    """The timeframe of a candle stream kind: ``candle.60m`` (Upbit's type), ``candle.1h``
    or ``candle.1d`` (any timeframe by name).

    Raises InvalidRequestError for a kind that names no timeframe.
    """
    held = WS_CANDLE_TYPES.get(kind)
    if held is not None:
        return held
    if not kind.startswith("candle."):
        raise InvalidRequestError(f"unknown candle kind {kind!r}: expected candle.<timeframe>")
    return parse_timeframe(kind.removeprefix("candle."))
