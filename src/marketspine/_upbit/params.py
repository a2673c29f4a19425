"""Upbit's quotation parameters read as Upbit reads them (pure): for ``serve``, which must
refuse bad input before anything goes upstream, and the simulator, which must refuse it as
Upbit does. Each raises ``InvalidRequestError`` with Upbit's verbatim message
(``_upbit.texts``), or ``UnknownMarketError`` for a code no market can have.

Upbit is a Java service: a number is what Java parses, ASCII digits with an optional sign
within the type's range (``count=abc``, ``count=１`` or ``count=99999999999`` is its
"Type mismatch" 400, as measured for ``count=abc``). What Upbit's answer to an impossible
value is not documented for (a negative ``cursor``, one beyond a 64-bit ``sequential_id``),
both answer "Invalid parameter": never passed on, never walked through.
"""

from __future__ import annotations

import re

from ..errors import InvalidRequestError, UnknownMarketError
from .limits import TRADES_KEPT_DAYS
from .texts import NOT_FOUND, TYPE_MISMATCH, WRONG_VALUE

__all__ = [
    "MAX_CODES",
    "MAX_CODE_LENGTH",
    "MAX_QUOTES",
    "MAX_SEQUENTIAL_ID",
    "check_code_length",
    "check_codes_count",
    "count_value",
    "cursor_value",
    "days_ago_value",
    "int_value",
    "quote_values",
    "time_of_day_ms",
]

_INT32_MAX = 2**31 - 1
MAX_SEQUENTIAL_ID = 2**63 - 1  # a trade's ``sequential_id`` is a Java long
_JAVA_INT = re.compile(r"[+-]?[0-9]{1,19}")  # more digits overflow a long anyway
_CURSOR = re.compile(r"[0-9]{1,19}")
_TIME_OF_DAY = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})|([0-9]{2}):([0-9]{2}):([0-9]{2})")
_QUOTE = re.compile(r"[A-Z0-9]{1,10}")

# Upbit's longest code is far shorter (KRW-1INCH, BTC-PUNDIX): a longer one is unknown.
MAX_CODE_LENGTH = 30
# Upbit lists ~855 pairs and answered all of them in one call: more distinct codes than
# any exchange lists are not a request for quotes.
MAX_CODES = 2000
MAX_QUOTES = 10  # quote currencies of /v1/ticker/all (Upbit has KRW, BTC and USDT)


def int_value(text: str) -> int:
    """``text`` as Java reads an ``int``; raises InvalidRequestError(TYPE_MISMATCH)."""
    if not _JAVA_INT.fullmatch(text):
        raise InvalidRequestError(TYPE_MISMATCH)
    value = int(text)
    if not -_INT32_MAX - 1 <= value <= _INT32_MAX:
        raise InvalidRequestError(TYPE_MISMATCH)
    return value


def count_value(text: str | None, maximum: int) -> int:
    """``count``: default 1; above ``maximum`` clamped (as Upbit answers); below 1 is
    refused (Upbit's answer is not documented)."""
    if text is None:
        return 1
    count = int_value(text)
    if count < 1:
        raise InvalidRequestError(WRONG_VALUE)
    return min(count, maximum)


def cursor_value(text: str) -> int:
    """``cursor`` of ``/v1/trades/ticks``: a ``sequential_id``, a non-negative 64-bit
    integer in ASCII digits; anything else is refused, never passed on."""
    if not _CURSOR.fullmatch(text):
        raise InvalidRequestError(WRONG_VALUE)
    value = int(text)
    if value > MAX_SEQUENTIAL_ID:
        raise InvalidRequestError(WRONG_VALUE)
    return value


def days_ago_value(text: str) -> int:
    """``days_ago``: 1..7 (Upbit keeps a week of trades)."""
    days = int_value(text)
    if not 1 <= days <= TRADES_KEPT_DAYS:
        raise InvalidRequestError(WRONG_VALUE)
    return days


def time_of_day_ms(text: str) -> int:
    """Trades' ``to``: ``HHmmss`` or ``HH:mm:ss`` (UTC) → ms after 00:00 UTC."""
    match = _TIME_OF_DAY.fullmatch(text)
    if match is None:
        raise InvalidRequestError(WRONG_VALUE)
    hours, minutes, seconds = (int(part) for part in match.groups() if part is not None)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise InvalidRequestError(WRONG_VALUE)
    return ((hours * 60 + minutes) * 60 + seconds) * 1000


def check_code_length(text: str) -> None:
    """Raises UnknownMarketError (Upbit's 404 ``Code not found``) for a code too long for
    any market, before it is looked at further."""
    if len(text) > MAX_CODE_LENGTH:
        raise UnknownMarketError(text[:MAX_CODE_LENGTH] + "...", NOT_FOUND)


def check_codes_count(count: int) -> None:
    """Raises InvalidRequestError when a ``markets`` list names more codes than any
    exchange lists."""
    if count > MAX_CODES:
        raise InvalidRequestError(WRONG_VALUE)


def quote_values(text: str) -> list[str]:
    """``quote_currencies``: upper-cased, without repeats; a value no quote currency can
    have (or too many of them) is Upbit's 404 ``Code not found``, as an unknown one is."""
    quotes = list(dict.fromkeys(q.strip().upper() for q in text.split(",") if q.strip()))
    if len(quotes) > MAX_QUOTES or not all(_QUOTE.fullmatch(q) for q in quotes):
        raise UnknownMarketError(text[:MAX_CODE_LENGTH], NOT_FOUND)
    return quotes
