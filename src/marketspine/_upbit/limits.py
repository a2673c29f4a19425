"""Upbit's quotation limits and the numbers of its protocol (pure), for the client, ``serve``
and the simulator alike: page sizes, how many days of trades are served, WebSocket request
limits, and the ``Remaining-Req`` header (API.md §1, §3, §5).

The timeframe table (REST candle paths, minute units, WebSocket candle types) is
``_base.timeframes``: lower layers need it too. How far back 1s candles go is ``horizon``.
"""

from __future__ import annotations

__all__ = [
    "MAX_BOOK_LEVELS",
    "MAX_CANDLES",
    "MAX_TRADES",
    "TRADES_KEPT_DAYS",
    "WS_CONNECTS_PER_S",
    "WS_MESSAGES_PER_MIN",
    "WS_MESSAGES_PER_S",
    "remaining_req",
]

MAX_CANDLES = 200  # candles per /v1/candles/... page (a larger count is clamped)
MAX_TRADES = 500  # trades per /v1/trades/ticks page
MAX_BOOK_LEVELS = 30  # orderbook levels a side, REST and WebSocket
TRADES_KEPT_DAYS = 7  # /v1/trades/ticks serves days_ago 1..7, nothing older
WS_CONNECTS_PER_S = 5  # WebSocket connection attempts per client IP and second
WS_MESSAGES_PER_S = 5  # WebSocket request messages per connection and second ...
WS_MESSAGES_PER_MIN = 100  # ... and per minute

# The deprecated ``min`` field of Remaining-Req is a constant on Upbit, per group (as
# measured; ``websocket`` on the upgrade reply).
_MIN_FIELD = {"origin": 6, "websocket": 300}
_DEFAULT_MIN_FIELD = 600


def remaining_req(group: str, remaining: int) -> str:
    """The ``Remaining-Req`` header value Upbit sends (pyupbit parses it with a regex):
    ``group=candles; min=600; sec=9``."""
    return f"group={group}; min={_MIN_FIELD.get(group, _DEFAULT_MIN_FIELD)}; sec={remaining}"
