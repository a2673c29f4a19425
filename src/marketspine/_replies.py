"""What Upbit's REST replies say besides the data: the remaining request budget, the block
a 418 announces, the error message of a failed request and the error it means (pure)."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Sequence

import httpx
import msgspec

from ._errors import InvalidRequestError, MarketspineError, UnknownMarketError

__all__ = ["block_seconds", "remaining_requests", "status_error", "upbit_message"]

_REMAINING_REQ = re.compile(r"group=([a-z\-]+);\s*min=\d+;\s*sec=(\d+)")
_BLOCK_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s\b|초)", re.IGNORECASE)
_NOT_FOUND = "Code not found"


def remaining_requests(header: str | None) -> tuple[str, int] | None:
    """The (group, requests left this second) a ``Remaining-Req`` header announces, or None
    when there is no such header or it does not parse."""
    if header is None or (match := _REMAINING_REQ.search(header)) is None:
        return None
    return match.group(1), int(match.group(2))


def status_error(
    path: str, params: Sequence[tuple[str, str]], response: httpx.Response
) -> MarketspineError:
    """The error for a 4xx answer other than 429/418."""
    message = upbit_message(response)
    status = response.status_code
    if status == 404 and message == _NOT_FOUND:
        values = dict(params)
        markets = (
            values.get("market") or values.get("markets") or values.get("quote_currencies", "?")
        )
        return UnknownMarketError(
            markets,
            f"unknown market {markets!r}: Upbit answered 404 {_NOT_FOUND} (not listed, "
            "delisted, or a quote currency that does not exist)",
        )
    if status == 404:
        return InvalidRequestError(f"GET {path}: no such Upbit path (404 {message})")
    return InvalidRequestError(f"GET {path} rejected by Upbit ({status}): {message}")


class _ErrorBody(msgspec.Struct):
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


def upbit_message(response: httpx.Response) -> str:
    try:
        return msgspec.json.decode(response.content, type=_ErrorEnvelope).error.message
    except msgspec.DecodeError:
        return response.text.strip()[:200]


def block_seconds(response: httpx.Response) -> float | None:
    """The block length a 418 announces: ``Retry-After`` (seconds or a date), else a number
    of seconds in the body; None when neither says."""
    retry_after = response.headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after).timestamp()
            except (TypeError, ValueError):
                pass
            else:
                return max(0.0, when - time.time())
    match = _BLOCK_SECONDS.search(upbit_message(response))
    return float(match.group(1)) if match else None
