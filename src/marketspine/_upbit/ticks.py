"""Upbit price tick sizes (pure), per quote currency; see API.md §6.

KRW uses the table in force since 2025-07-31; BTC a single tick of 1 satoshi; USDT the
table in force since 2024-08-19. ``/v1/orderbook/instruments`` is the live authority.
"""

from __future__ import annotations

import math
from typing import Literal

from ..errors import InvalidRequestError

__all__ = [
    "QUOTES",
    "round_to_tick",
    "tick_decimals",
    "tick_size",
    "tick_table",
    "warmed_tick_size",
]

QUOTES = ("KRW", "BTC", "USDT", "IDR", "SGD", "THB")

# (lower bound inclusive, tick), highest band first.
_KRW: tuple[tuple[float, float], ...] = (
    (1_000_000, 1000),
    (500_000, 500),
    (100_000, 100),
    (50_000, 50),
    (10_000, 10),
    (5_000, 5),
    (100, 1),
    (10, 0.1),
    (1, 0.01),
    (0.1, 0.001),
    (0.01, 0.0001),
    (0.001, 0.00001),
    (0.0001, 0.000001),
    (0.00001, 0.0000001),
    (0.0, 0.00000001),
)
_USDT: tuple[tuple[float, float], ...] = (
    (10, 0.01),
    (1, 0.001),
    (0.1, 0.0001),
    (0.01, 0.00001),
    (0.001, 0.000001),
    (0.0001, 0.0000001),
    (0.0, 0.00000001),
)
_BTC: tuple[tuple[float, float], ...] = ((0.0, 0.00000001),)
# The regional sites' fiat tick tables are not documented in our sources; IDR prices sit in
# KRW-like magnitudes and SGD/THB in USDT-like ones, so they borrow those tables.
_TABLES = {"KRW": _KRW, "USDT": _USDT, "BTC": _BTC, "IDR": _KRW, "SGD": _USDT, "THB": _USDT}


def tick_table(quote: str) -> tuple[tuple[float, float], ...]:
    """The (lower bound inclusive, tick) bands of a ``quote`` market, highest band first.
    Raises InvalidRequestError for an unknown quote currency."""
    try:
        return _TABLES[quote]
    except KeyError:
        raise InvalidRequestError(
            f"unknown quote currency {quote!r}: accepted are {', '.join(QUOTES)}"
        ) from None


def tick_size(quote: str, price: float) -> float:
    """The price tick of a ``quote`` market at ``price``."""
    for bound, tick in tick_table(quote):
        if price >= bound:
            return tick
    return tick_table(quote)[-1][1]


def warmed_tick_size(quote: str, tick: float, price: float, at: float | None) -> float:
    """The tick at ``price`` of a market whose instrument (the live authority) gave ``tick``
    while the market traded at ``at`` (None: unknown). An instrument states the tick of the
    current price band only: it holds across the table's band of ``at``, and the table
    answers for prices in other bands. Without ``at`` the instrument's band is the table's
    band with that tick; a tick the table does not know (an exception such as USDT/KRW's
    0.5) is then taken at every price, and so is any tick of an unknown quote currency."""
    table = _TABLES.get(quote)
    if table is None:
        return tick
    if at is not None:
        return tick if _band(table, price) == _band(table, at) else tick_size(quote, price)
    if any(math.isclose(tick, known, rel_tol=1e-9) for _, known in table):
        return tick_size(quote, price)
    return tick


def _band(table: tuple[tuple[float, float], ...], price: float) -> int:
    """Index of the band of ``table`` that ``price`` lies in."""
    for index, (bound, _) in enumerate(table):
        if price >= bound:
            return index
    return len(table) - 1


def tick_decimals(tick: float) -> int:
    """Decimal places of a tick (0 for ticks of 1 or more)."""
    return max(0, -math.floor(math.log10(tick) + 1e-9))


def round_to_tick(
    quote: str, price: float, mode: Literal["nearest", "down", "up"] = "nearest"
) -> float:
    """``price`` moved onto the tick grid of its band, as a clean float (no 0.30000000000000004)."""
    tick = tick_size(quote, price)
    steps = price / tick
    if mode == "down":
        n = math.floor(steps + 1e-9)
    elif mode == "up":
        n = math.ceil(steps - 1e-9)
    else:
        n = round(steps)
    return round(n * tick, tick_decimals(tick))
