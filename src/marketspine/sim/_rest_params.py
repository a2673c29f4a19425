"""What every simulated REST handler shares: the handler type and the parsing of query
parameters and market codes (raising ``InvalidRequestError`` → 400 or
``UnknownMarketError`` → 404 ``Code not found`` with Upbit's verbatim messages, from
``_upbit.texts``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from .._base.time import parse_time
from .._upbit.params import check_code_length, check_codes_count, count_value, int_value
from .._upbit.rest_rows import stamp  # re-exported: the handlers' tests check it here
from .._upbit.texts import MISSING, NOT_FOUND, WRONG_VALUE
from ..errors import InvalidRequestError, UnknownMarketError

if TYPE_CHECKING:
    from ._state import SimState
    from ._universe import SimMarket

__all__ = [
    "Handler",
    "Json",
    "codes_param",
    "count_param",
    "int_param",
    "is_true",
    "listed_market",
    "param",
    "parse_to",
    "required",
    "round8",
    "stamp",
]

Json = list[dict[str, Any]]
Handler = Callable[[Request, "SimState"], Json]


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
    """A number as Upbit (Java) reads it: ASCII digits in an ``int``'s range."""
    return int_value(text)


def count_param(params: QueryParams, maximum: int) -> int:
    """``count``: default 1; above ``maximum`` clamps (Upbit answers 200); below 1 is our
    choice of 400, as Upbit's answer is not documented."""
    return count_value(params.get("count"), maximum)


def codes_param(params: QueryParams) -> list[str]:
    """``markets`` as a comma list, or as repeated keys (pyupbit sends lists that way)."""
    codes: list[str] = []
    for value in params.getlist("markets"):
        for code in value.split(","):
            code = code.strip().upper()
            if code and code not in codes:
                check_code_length(code)
                codes.append(code)
                check_codes_count(len(codes))
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


def is_true(text: str | None) -> bool:
    return text is not None and text.strip().lower() == "true"


def round8(value: float) -> float:
    """Prices and sizes carry at most 8 decimals on Upbit; this removes float noise."""
    return round(value, 8)
