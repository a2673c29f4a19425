"""Checking and converting the arguments of the public API (pure).

Every public method passes its arguments through these functions first, so a wrong type
or value raises ``InvalidRequestError`` naming the argument, what was given and what is
accepted — never an ``AttributeError`` or ``TypeError`` from deep inside.

Times (``start``, ``end``, ``to_ms``) accept an aware ``datetime`` (any zone), a naive
``datetime`` (taken as UTC, as on Upbit), a ``date`` (its 00:00 UTC), an ISO 8601 string
(naive means UTC) or an ``int`` of epoch milliseconds. An integer below ``EPOCH_MS_MIN``
(1973-03-03) can only be epoch *seconds* (Upbit did not exist before 2017, while seconds
up to the year 5138 stay below it), so it is rejected rather than read as 1970.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias, TypeGuard, TypeVar

from ..errors import InvalidRequestError
from ..records import Trade
from .markets import MARKET_ACCEPTED, MarketCode, market_code
from .markets import shown as _shown
from .time import parse_time, to_ms
from .timeframes import TIMEFRAMES, Timeframe, parse_timeframe

__all__ = [
    "EPOCH_MS_MAX",
    "EPOCH_MS_MIN",
    "STREAM_KINDS",
    "Moment",
    "count_arg",
    "depth_arg",
    "enum_arg",
    "flag_arg",
    "kinds_arg",
    "market_arg",
    "markets_arg",
    "ms_arg",
    "needs_arg",
    "number_arg",
    "optional_seconds_arg",
    "quote_arg",
    "since_arg",
    "time_arg",
    "timeframe_arg",
]

EPOCH_MS_MIN = 100_000_000_000  # 1973-03-03T09:46:40Z; an int below it is epoch seconds
EPOCH_MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z; above it, micro/nanoseconds

_QUOTE = re.compile(r"[A-Z0-9]+(?:,[A-Z0-9]+)*")
_MARKETS_ACCEPTED = f"one market code or a list of them, each {MARKET_ACCEPTED}"
_TIME_ACCEPTED = (
    "a datetime (naive means UTC), a date (00:00 UTC), an ISO 8601 string such as "
    f"2024-01-01T00:00:00Z, or epoch milliseconds (an int >= {EPOCH_MS_MIN})"
)
_ALIAS_KINDS = ("candle.60m", "candle.240m")
# Every kind Spine.watch and Spine.stream take: plain kinds, then a candle kind per timeframe.
STREAM_KINDS = ("ticker", "trade", "orderbook", *(f"candle.{name}" for name in TIMEFRAMES))

E = TypeVar("E", bound=enum.Enum)

# What a time argument may be (see the module docstring).
Moment: TypeAlias = dt.datetime | dt.date | str | int


def _invalid(name: str, value: object, accepted: str) -> InvalidRequestError:
    return InvalidRequestError(f"invalid {name} {_shown(value)}: expected {accepted}")


def _is_int(value: object) -> TypeGuard[numbers.Integral]:
    # bool is an int subclass, but True is never meant as 1 candle or 1 ms.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def market_arg(value: object, name: str = "market") -> MarketCode:
    """The market code ``value`` in upper case (``krw-btc`` -> ``KRW-BTC``).

    Raises InvalidRequestError unless it is a string of the form QUOTE-BASE.
    """
    return market_code(value, name)


def markets_arg(value: object, name: str = "markets") -> list[str]:
    """Market codes (each a MarketCode) in the order given, duplicates dropped; a plain
    string is one market.

    Raises InvalidRequestError for a non-iterable, an empty list or a bad code in it.
    """
    if isinstance(value, str):
        return [market_arg(value, name)]
    # Lists and tuples skip the (slow) ABC checks: this runs on every live ticker read.
    if type(value) not in (list, tuple) and (
        isinstance(value, bytes | Mapping) or not isinstance(value, Iterable)
    ):
        raise _invalid(name, value, _MARKETS_ACCEPTED)
    codes: list[str] = [market_code(item, f"item of {name}") for item in value]  # type: ignore[attr-defined]
    if not codes:
        raise InvalidRequestError(f"no {name} given: expected {_MARKETS_ACCEPTED}")
    return codes if len(codes) == 1 else list(dict.fromkeys(codes))


def quote_arg(value: object, name: str = "quote") -> str:
    """A quote currency (``krw`` -> ``KRW``), or several joined by commas (``KRW,BTC``).

    Raises InvalidRequestError otherwise."""
    accepted = "a quote currency string such as KRW, BTC or USDT (several: KRW,BTC)"
    if not isinstance(value, str) or not _QUOTE.fullmatch(value.strip().upper()):
        raise _invalid(name, value, accepted)
    return value.strip().upper()


def timeframe_arg(value: object, name: str = "timeframe") -> Timeframe:
    """The Timeframe named by ``value`` (a ``Timeframe`` or a name such as ``1m``).

    Raises InvalidRequestError listing the accepted names.
    """
    if isinstance(value, Timeframe):
        return value
    if not isinstance(value, str):
        accepted = f"a Timeframe or one of {' '.join(TIMEFRAMES)} (60m and 240m as aliases)"
        raise _invalid(name, value, accepted)
    try:
        return parse_timeframe(value)
    except InvalidRequestError as exc:
        if name == "timeframe":
            raise
        raise InvalidRequestError(f"{name}: {exc}") from None


def time_arg(value: object, name: str) -> int | None:
    """UTC epoch milliseconds of ``value`` (None stays None); see the module docstring
    for the accepted forms.

    Raises InvalidRequestError for any other type, a malformed string, or an integer that
    can only be epoch seconds (below EPOCH_MS_MIN) or is beyond the year 9999.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return to_ms(value)
    if isinstance(value, dt.date):
        return to_ms(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC))
    if isinstance(value, str):
        try:
            return parse_time(value)
        except (InvalidRequestError, OverflowError):
            raise _invalid(name, value, _TIME_ACCEPTED) from None
    if _is_int(value):
        ms = int(value)
        if ms < EPOCH_MS_MIN:
            raise InvalidRequestError(
                f"invalid {name} {_shown(value)}: an int is epoch milliseconds and this "
                f"one can only be epoch seconds (it is below {EPOCH_MS_MIN}, 1973-03-03); "
                f"pass {ms * 1000} for seconds, or {_TIME_ACCEPTED}"
            )
        if ms > EPOCH_MS_MAX:
            raise InvalidRequestError(
                f"invalid {name} {_shown(value)}: beyond the year 9999 as epoch "
                f"milliseconds (micro- or nanoseconds?); expected {_TIME_ACCEPTED}"
            )
        return ms
    raise _invalid(name, value, _TIME_ACCEPTED)


def ms_arg(value: object, name: str) -> int | None:
    """Like ``time_arg``, but any int is taken as epoch milliseconds as it is (for the
    Client, whose ``to_ms`` says its unit and pages back past 1973 for yearly candles).

    Raises InvalidRequestError for a bool or a value ``time_arg`` refuses."""
    if _is_int(value):
        return int(value)
    return time_arg(value, name)


def count_arg(value: object, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``.

    Raises InvalidRequestError for a non-int (``"5"``, ``5.0``, ``True``) or a value out of
    range, showing the value given.
    """
    accepted = f"an integer {low}..{high}"
    if not _is_int(value):
        raise _invalid(name, value, accepted)
    number = int(value)
    if not low <= number <= high:
        raise InvalidRequestError(f"invalid {name} {number}: expected {accepted}")
    return number


def depth_arg(value: object, kinds: Sequence[str], depths: Sequence[int]) -> int | None:
    """An orderbook depth, one of ``depths`` (None keeps the default), for ``kinds``.

    Raises InvalidRequestError for another value, or a depth without the orderbook kind.
    """
    if value is None:
        return None
    accepted = f"one of {', '.join(map(str, depths))}, or None"
    if not _is_int(value) or int(value) not in depths:
        raise _invalid("depth", value, accepted)
    if "orderbook" not in kinds:
        raise InvalidRequestError("depth applies to the orderbook kind, which is not watched")
    return int(value)


def flag_arg(value: object, name: str) -> bool:
    """``value`` when it is a bool. Raises InvalidRequestError for anything else."""
    if not isinstance(value, bool):
        raise _invalid(name, value, "True or False")
    return value


def number_arg(value: object, name: str, *, low: float = 0.0) -> float:
    """``value`` as a finite float >= ``low`` (int or float, not bool).

    Raises InvalidRequestError otherwise.
    """
    accepted = f"a finite number >= {low:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _invalid(name, value, accepted)
    number = float(value)
    if not math.isfinite(number) or number < low:
        raise _invalid(name, value, accepted)
    return number


def optional_seconds_arg(value: object, name: str) -> float | None:
    """A duration in seconds (>= 0), or None. Raises InvalidRequestError otherwise."""
    return None if value is None else number_arg(value, name)


def enum_arg(value: object, kind: type[E], name: str) -> E:
    """``value`` as a member of ``kind``: a member, or a member's name in any case.

    Raises InvalidRequestError listing the members.
    """
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        member = kind.__members__.get(value.strip().upper())
        if member is not None:
            return member
    names = ", ".join(f"{kind.__name__}.{m}" for m in kind.__members__)
    raise _invalid(name, value, f"one of {names}")


def kinds_arg(value: object, name: str = "kinds") -> list[str]:
    """Stream kinds in the order given, duplicates dropped; a plain string is one kind.
    ``candle.60m``/``candle.240m`` become ``candle.1h``/``candle.4h``.

    Raises InvalidRequestError for an unknown kind, listing every accepted kind.
    """
    accepted = (
        f"one kind or a list of them, each one of {', '.join(STREAM_KINDS)} "
        f"({' and '.join(_ALIAS_KINDS)} as aliases)"
    )
    items: list[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, bytes | Mapping) or not isinstance(value, Iterable):
        raise _invalid(name, value, accepted)
    else:
        items = list(value)
    kinds: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _invalid(f"item of {name}", item, accepted)
        kind = item.strip()
        if kind.startswith("candle.") and kind not in STREAM_KINDS:
            alias = {"candle.60m": "candle.1h", "candle.240m": "candle.4h"}.get(kind)
            kind = alias or kind
        if kind not in STREAM_KINDS:
            raise InvalidRequestError(
                f"unknown stream kind {item!r} in {name}: expected {accepted}"
            )
        kinds.append(kind)
    if not kinds:
        raise InvalidRequestError(f"no {name} given: expected {accepted}")
    return list(dict.fromkeys(kinds))


def needs_arg(value: object, high: int, name: str = "needs") -> dict[str, dict[Timeframe, int]]:
    """A preload declaration ``{market: {timeframe: count}}`` checked and normalised.

    Raises InvalidRequestError for a wrong shape, market, timeframe or count.
    """
    accepted = "a mapping {market: {timeframe: count}} such as {'KRW-BTC': {'1m': 200}}"
    if not isinstance(value, Mapping):
        raise _invalid(name, value, accepted)
    wanted: dict[str, dict[Timeframe, int]] = {}
    for market, frames in value.items():
        code = market_arg(market, f"market in {name}")
        if not isinstance(frames, Mapping):
            raise _invalid(f"{name}[{market!r}]", frames, accepted)
        for timeframe, count in frames.items():
            tf = timeframe_arg(timeframe, f"timeframe in {name}[{market!r}]")
            count = count_arg(count, f"count in {name}[{market!r}][{tf.name!r}]", 1, high)
            held = wanted.setdefault(code, {})
            held[tf] = max(held.get(tf, 0), count)
    return wanted


def since_arg(value: object, markets: Sequence[str], name: str = "since") -> dict[str, Trade | int]:
    """``{market: the last Trade the caller has of it, or its sequential_id}`` checked, each
    market one of ``markets`` (in upper case); None is no market.

    Raises InvalidRequestError for another shape, a market not in ``markets`` or given
    twice, a Trade of another market, or a sequential_id that is not an int > 0."""
    if value is None:
        return {}
    accepted = "a mapping {market: the last Trade you have of it, or its sequential_id}"
    if not isinstance(value, Mapping):
        raise _invalid(name, value, accepted)
    marks: dict[str, Trade | int] = {}
    for market, mark in value.items():
        code = market_arg(market, f"market in {name}")
        if code not in markets or code in marks:
            given = "is given twice" if code in marks else "is not one of the markets streamed"
            raise InvalidRequestError(
                f"invalid market in {name} {_shown(market)}: {code} {given} "
                f"({', '.join(markets)}); expected {accepted}"
            )
        one = f"a Trade of {code} or its sequential_id (an int > 0)"
        if isinstance(mark, Trade):
            if mark.market != code:
                raise InvalidRequestError(
                    f"invalid {name}[{market!r}]: a Trade of {mark.market}; expected {one}"
                )
            marks[code] = mark
        elif _is_int(mark) and int(mark) > 0:
            marks[code] = int(mark)
        else:
            raise _invalid(f"{name}[{market!r}]", mark, one)
    return marks
