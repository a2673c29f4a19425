"""Upbit's error texts, verbatim (API.md §4, §5): what ``serve`` and the simulator answer
with and what the client recognizes. The error body's shape is ``errors``.
"""

from __future__ import annotations

from .limits import WS_MESSAGES_PER_MIN, WS_MESSAGES_PER_S

__all__ = [
    "BAD_UNIT",
    "MISSING",
    "NOT_FOUND",
    "TOO_MANY",
    "TYPE_MISMATCH",
    "WRONG_VALUE",
    "WS_ERROR_TEXTS",
    "WS_TOO_MANY_REQUESTS",
    "blocked_text",
]

# REST: the message of a 400/404 error body; a 429 is this plain text.
MISSING = "Missing request parameter error. Check the required parameters!"
TYPE_MISMATCH = "Type mismatch error. Check the parameters type!"
WRONG_VALUE = "Invalid parameter. Check the given value!"
NOT_FOUND = "Code not found"
BAD_UNIT = "specified unit is not valid."
TOO_MANY = "Too many API requests."


def blocked_text(seconds: int) -> str:
    """A 418's message: how long the IP is blocked (the client reads the seconds from it
    when there is no ``Retry-After``)."""
    return (
        f"Too many requests after 429 answers: this IP is blocked for {seconds} seconds. "
        "Retry after the block ends."
    )


# WebSocket: error name -> Upbit's message, for the names whose message never varies
# (INVALID_PARAM names what was wrong; TOO_MANY_CONNECTIONS, serve's own, the limit).
WS_TOO_MANY_REQUESTS = (
    f"요청 수 제한을 초과했습니다. Too many request messages: at most {WS_MESSAGES_PER_S} per "
    f"second and {WS_MESSAGES_PER_MIN} per minute per connection."
)
WS_ERROR_TEXTS = {
    "WRONG_FORMAT": "Format 이 맞지 않습니다.",
    "NO_TICKET": "티켓이 존재하지 않거나, 유효하지 않습니다.",
    "NO_TYPE": "type 필드가 존재하지 않습니다.",
    "NO_CODES": "codes 필드가 존재하지 않습니다.",
    "TOO_MANY_REQUESTS": WS_TOO_MANY_REQUESTS,
}
