"""What Upbit's REST replies say besides the data: the remaining request budget, the block
a 418 announces, the error message of a failed request and the error it means (pure)."""

from __future__ import annotations

import asyncio
import email.utils
import os
import re
import socket
import time
from collections.abc import Callable, Sequence

import httpx
import msgspec

from .._budget.local import GROUPS
from .._budget.rules import RateBudget
from .._upbit.decode import excerpt
from .._upbit.texts import NOT_FOUND
from ..errors import InvalidRequestError, MarketspineError, UnknownMarketError, UpstreamError
from .upstream_clock import UpstreamClock

__all__ = [
    "block_seconds",
    "learn_from_reply",
    "remaining_requests",
    "send_get",
    "status_error",
    "transport_reason",
    "upbit_message",
]

_REMAINING_REQ = re.compile(r"group=([a-z\-]+);\s*min=\d+;\s*sec=(\d+)")
_BLOCK_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s\b|초)", re.IGNORECASE)


def learn_from_reply(
    response: httpx.Response,
    group: str,
    sent_at: float,
    rtt_s: float,
    budget: RateBudget,
    clock: UpstreamClock,
) -> None:
    """Reconcile ``budget`` with the reply's ``Remaining-Req`` (of ``group`` unless it names
    another known one) and ``clock`` with its ``Date``, read ``rtt_s`` after sending. A reply
    without the header (a gateway's 5xx page) is still told: its round trip says how late
    the request may have reached upstream."""
    remaining = remaining_requests(response.headers.get("remaining-req"))
    if remaining is not None:
        name, left = remaining
        budget.observe(name if name in GROUPS else group, left, sent_at=sent_at)
    else:
        budget.observe(group, None, sent_at=sent_at)
    date = response.headers.get("date")
    if date is not None:
        clock.saw_date(date, rtt_s)


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
    if status == 404 and message == NOT_FOUND:
        values = dict(params)
        markets = (
            values.get("market") or values.get("markets") or values.get("quote_currencies", "?")
        )
        return UnknownMarketError(
            markets,
            f"unknown market {markets!r}: Upbit answered 404 {NOT_FOUND} (not listed, "
            "delisted, or a quote currency that does not exist)",
        )
    if not _is_upbit_error(response):
        # Not Upbit's JSON: most likely --upstream points at some other web server.
        return InvalidRequestError(
            f"GET {path}: {_origin(response)} answered {status} with something other than "
            f"Upbit's API ({message!r}); is the upstream URL an Upbit REST base URL?"
        )
    if status == 404:
        return InvalidRequestError(f"GET {path}: no such Upbit path (404 {message})")
    return InvalidRequestError(f"GET {path} rejected by Upbit ({status}): {message}")


class _ErrorBody(msgspec.Struct):
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


def upbit_message(response: httpx.Response) -> str:
    """Upbit's error message, else a one-line excerpt of whatever the body is."""
    try:
        return msgspec.json.decode(response.content, type=_ErrorEnvelope).error.message
    except msgspec.DecodeError:
        return excerpt(response.content)


def _is_upbit_error(response: httpx.Response) -> bool:
    try:
        msgspec.json.decode(response.content, type=_ErrorEnvelope)
    except msgspec.DecodeError:
        return False
    return True


def _origin(response: httpx.Response) -> str:
    try:
        url = response.request.url
    except RuntimeError:  # a response built by hand, without its request
        return "upstream"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def transport_reason(exc: BaseException) -> str:
    """Why a request never got an answer, in a few words: the operating system's reason
    (``connection refused``, ``name or service not known``) found under httpx's wrapper,
    else the exception's own message."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror) and current.strerror:
            return current.strerror[:1].lower() + current.strerror[1:]
        if isinstance(current, OSError) and current.errno and current.errno > 0:
            reason = os.strerror(current.errno)  # asyncio's strerror adds the address
            return reason[:1].lower() + reason[1:]
        current = current.__cause__ or current.__context__
    message = str(exc).strip() or type(exc).__name__
    return " ".join(message.split())


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


async def send_get(
    http: httpx.AsyncClient,
    path: str,
    params: tuple[tuple[str, str], ...],
    limit_s: float,
    base_url: str,
    on_timeout: Callable[[], None],
) -> httpx.Response:
    """Send one GET; transport failures and timeouts (``on_timeout`` is told) become
    UpstreamError: the one place they are translated, always ``raise ... from``."""
    try:
        # Also bounds transports that ignore httpx timeouts (ASGI apps in tests).
        async with asyncio.timeout(limit_s):
            return await http.get(path, params=params)
    except (TimeoutError, httpx.TimeoutException) as exc:
        on_timeout()
        raise UpstreamError(
            f"GET {path} timed out after {limit_s:.3g} s", retry_after=None
        ) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"GET {path} failed: cannot reach {base_url}: {transport_reason(exc)}",
            retry_after=None,
        ) from exc
