"""The Client's arguments checked and shaped into request parameters (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from .._base.markets import MarketCode, market_code
from ..errors import InvalidRequestError

__all__ = [
    "MARKETS_PER_REQUEST",
    "check_range",
    "check_time_of_day",
    "level_text",
    "market_chunks",
    "unique",
]

# Market lists are split so URLs stay far below the ~8 KB gateways accept.
MARKETS_PER_REQUEST = 100

T = TypeVar("T")

_TIME_OF_DAY = re.compile(r"\d{6}|\d{2}:\d{2}:\d{2}")


def check_range(name: str, value: int, low: int, high: int) -> None:
    """Raises InvalidRequestError unless ``value`` is an integer in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(f"invalid {name} {value!r}: expected an integer {low}..{high}")


def check_time_of_day(to: str) -> str:
    """``to`` when it is a time of day as trades accept it; raises InvalidRequestError."""
    if not _TIME_OF_DAY.fullmatch(to):
        raise InvalidRequestError(f"invalid trades 'to' {to!r}: expected HHmmss or HH:mm:ss (UTC)")
    return to


def unique(items: Iterable[T]) -> list[T]:
    """``items`` without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def level_text(level: float) -> str:
    """An orderbook level as Upbit wants it: integer strings for levels >= 1, plain
    decimals below."""
    if level >= 1 and float(level).is_integer():
        return str(int(level))
    return f"{level:.10f}".rstrip("0").rstrip(".") or "0"


def market_chunks(markets: Sequence[str]) -> list[list[MarketCode]]:
    """``markets`` as market codes, without repeats, in chunks of at most
    ``MARKETS_PER_REQUEST``.

    Raises InvalidRequestError for a bare string or a malformed code."""
    if isinstance(markets, str):
        raise InvalidRequestError(
            f"markets must be a list of codes such as ['KRW-BTC'], got the string {markets!r}"
        )
    if isinstance(markets, bytes | Mapping) or not isinstance(markets, Iterable):
        raise InvalidRequestError(
            f"invalid markets {markets!r}: expected a list of codes such as ['KRW-BTC']"
        )
    items = list(markets)
    for item in items:
        if not isinstance(item, str):
            raise InvalidRequestError(
                f"invalid item of markets {item!r}: expected a code string such as KRW-BTC"
            )
    codes = unique([market_code(item, "item of markets") for item in items])
    return [codes[i : i + MARKETS_PER_REQUEST] for i in range(0, len(codes), MARKETS_PER_REQUEST)]
