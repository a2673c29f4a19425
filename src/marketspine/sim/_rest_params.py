"""What every simulated REST handler shares: Upbit's error messages, the handler type, and
the parsing of query parameters and market codes (raising ``InvalidRequestError`` → 400
or ``UnknownMarketError`` → 404 ``Code not found`` with Upbit's verbatim messages)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from .._base.time import DAY_MS, format_utc, parse_time
from ..errors import InvalidRequestError, UnknownMarketError

if TYPE_CHECKING:
    from ._state import SimState
    from ._universe import SimMarket

__all__ = [
    "MISSING",
    "NOT_FOUND",
    "TYPE_MISMATCH",
    "WRONG_VALUE",
    "Handler",
    "Json",
    "codes_param",
    "count_param",
    "int_param",
    "is_true",
    "json_number",
    "listed_market",
    "param",
    "parse_to",
    "required",
    "round8",
    "stamp",
]

Json = list[dict[str, Any]]
Handler = Callable[[Request, "SimState"], Json]

# Upbit's messages, verbatim (API.md §4).
MISSING = "Missing request parameter error. Check the required parameters!"
TYPE_MISMATCH = "Type mismatch error. Check the parameters type!"
WRONG_VALUE = "Invalid parameter. Check the given value!"
NOT_FOUND = "Code not found"


def param(params: QueryParams, *names: str) -> str | None:
    for name in names:
        value = params.get(name)
        if value is not None:
            return value
    return None


def required(params: QueryParams, *names: str) -> str:
    value = param(params, *names)
    if value is None or value == "":
        raise InvalidRequestError(MISSING)
    return value


def int_param(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRequestError(TYPE_MISMATCH) from None


def count_param(params: QueryParams, maximum: int) -> int:
    """``count``: default 1; above ``maximum`` clamps (Upbit answers 200); below 1 is our
    choice of 400, as Upbit's answer is not documented."""
    text = params.get("count")
    if text is None:
        return 1
    count = int_param(text)
    if count < 1:
        raise InvalidRequestError(WRONG_VALUE)
    return min(count, maximum)


def codes_param(params: QueryParams) -> list[str]:
    """``markets`` as a comma list, or as repeated keys (pyupbit sends lists that way)."""
    codes: list[str] = []
    for value in params.getlist("markets"):
        for code in value.split(","):
            code = code.strip().upper()
            if code and code not in codes:
                codes.append(code)
    if not codes:
        raise InvalidRequestError(MISSING)
    return codes


def listed_market(sim: SimState, code: str, now_ms: int) -> SimMarket:
    """The listed market ``code`` (any case); a market listed after now does not exist yet,
    and a delisted one no longer does (Upbit answers both with 404 "Code not found")."""
    market = sim.history.market(code.upper())
    if market is None or not sim.is_listed(market, now_ms):
        raise UnknownMarketError(code, NOT_FOUND)
    return market


def parse_to(text: str) -> int:
    """Candle ``to``: ISO 8601, naive = UTC, ``T`` or space, ``Z`` or an offset, fractions.
    An unencoded ``+`` arrives as a space before the offset and fails here, as on Upbit."""
    try:
        return parse_time(text)
    except InvalidRequestError:
        raise InvalidRequestError(WRONG_VALUE) from None


@functools.lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    return format_utc(day * DAY_MS)[:10]


_HOUR_MINUTE = tuple(f"T{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SECOND = tuple(f"{s:02d}" for s in range(60))


def stamp(ms: int) -> str:
    """``format_utc(ms)`` (``yyyy-MM-ddTHH:mm:ss``) from lookup tables: a 200-candle page
    needs 400 of these, and strftime was most of the page's cost."""
    day, rest = divmod(ms, DAY_MS)
    minute, second = divmod(rest // 1000, 60)
    return _date_text(day) + _HOUR_MINUTE[minute] + _SECOND[second]


def is_true(text: str | None) -> bool:
    return text is not None and text.strip().lower() == "true"


def round8(value: float) -> float:
    """Prices and sizes carry at most 8 decimals on Upbit; this removes float noise."""
    return round(value, 8)


def json_number(value: float) -> int | float:
    """A whole number as a JSON integer (orderbook levels, zero slots), otherwise a float."""
    return int(value) if float(value).is_integer() else value
