"""Reading Upbit's quotation parameters from a request, refused as Upbit refuses them: one
set of readers for serve's ``/v1`` and the replay server's. Each raises ``BadRequest``
carrying Upbit's status and verbatim message."""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request

from .._base.markets import MarketCode, market_code
from .._base.timeframes import MINUTE_UNITS, Timeframe
from .._upbit.params import check_code_length, count_value, int_value
from .._upbit.texts import BAD_UNIT, MISSING, NOT_FOUND, TYPE_MISMATCH
from ..errors import InvalidRequestError

__all__ = [
    "BadRequest",
    "count_param",
    "int_param",
    "market_param",
    "minute_frame",
    "query_param",
    "required_param",
]


class BadRequest(InvalidRequestError):
    """A request error with Upbit's status and verbatim message."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


def query_param(params: QueryParams, *names: str) -> str | None:
    """The first of ``names`` given (Upbit accepts snake and camel case spellings)."""
    for name in names:
        value = params.get(name)
        if value is not None:
            return value
    return None


def required_param(params: QueryParams, *names: str) -> str:
    value = query_param(params, *names)
    if value is None or value == "":
        raise BadRequest(MISSING)
    return value


def int_param(text: str) -> int:
    try:
        return int_value(text)
    except InvalidRequestError:
        raise BadRequest(TYPE_MISMATCH) from None


def count_param(params: QueryParams, maximum: int) -> int:
    """``count``: default 1, above ``maximum`` clamped (as Upbit does), below 1 refused."""
    try:
        return count_value(params.get("count"), maximum)
    except InvalidRequestError as exc:
        raise BadRequest(str(exc)) from None


def market_param(text: str) -> MarketCode:
    try:
        check_code_length(text)
        return market_code(text)
    except InvalidRequestError:  # a comma list, or too long: one unknown code to Upbit
        raise BadRequest(NOT_FOUND, 404) from None


def minute_frame(request: Request) -> Timeframe:
    """The timeframe of ``/v1/candles/minutes/{unit}``."""
    try:
        return MINUTE_UNITS[int(request.path_params["unit"])]
    except (ValueError, KeyError):
        raise BadRequest(BAD_UNIT) from None
