"""The combined WebSocket subscription of one connection, and the pace of request messages.

Pure: no I/O. Upbit replaces a connection's whole subscription with each request message,
so the client keeps every kind and code it wants in one ``SubscriptionSet`` and sends
``request_message()`` whole on every change and after every reconnect.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from .._base.markets import market_code
from .._base.timeframes import WS_CANDLE_TYPES, timeframe_of_kind
from .._upbit.limits import WS_MESSAGES_PER_MIN, WS_MESSAGES_PER_S
from ..errors import InvalidRequestError

__all__ = [
    "BOOK_DEPTHS",
    "KINDS",
    "MessagePacer",
    "SubscriptionSet",
    "normalize_kind",
]

KINDS = ("ticker", "trade", "orderbook", *WS_CANDLE_TYPES)

# Orderbook depths Upbit streams (``KRW-BTC.5``); any other suffix silently gives 30.
BOOK_DEPTHS = (1, 5, 15, 30)


def normalize_kind(kind: str) -> str:
    """The Upbit stream type for ``kind``: one of KINDS; ``candle.1h``/``candle.4h`` are
    accepted for ``candle.60m``/``candle.240m``.

    Raises InvalidRequestError naming the accepted kinds.
    """
    if kind in KINDS:
        return kind
    if kind.startswith("candle."):
        try:
            ws_type = timeframe_of_kind(kind).ws_type
        except InvalidRequestError:
            ws_type = None
        if ws_type is not None:
            return ws_type
    raise InvalidRequestError(f"unknown stream kind {kind!r}: accepted are {', '.join(KINDS)}")


class SubscriptionSet:
    """Every (kind, market) one connection wants. Changes report whether anything changed,
    so callers re-send only when needed."""

    def __init__(self) -> None:
        self._codes: dict[str, set[str]] = {}
        self._depth: dict[str, int] = {}  # orderbook market -> levels, when not 30
        self.version = 0  # bumped on every change; lets a sender know what it has sent

    def add(self, kind: str, markets: Iterable[str], *, depth: int | None = None) -> bool:
        """Add ``markets`` to ``kind``; returns True when the set changed. ``depth`` (1, 5,
        15 or 30 levels, orderbook only) sets how deep those markets' books stream; None
        keeps a market's depth (30 for a new one).

        Raises InvalidRequestError for an unknown kind, a malformed market code or a depth
        Upbit does not stream.
        """
        kind = normalize_kind(kind)
        # Upper case: Upbit's WebSocket silently ignores lower-case codes.
        codes = {market_code(m) for m in markets}
        if depth is not None:
            if kind != "orderbook":
                raise InvalidRequestError(f"depth applies to orderbook streams, not {kind}")
            if depth not in BOOK_DEPTHS:
                raise InvalidRequestError(
                    f"orderbook depth {depth} is not streamed: accepted are "
                    f"{', '.join(map(str, BOOK_DEPTHS))}"
                )
        current = self._codes.get(kind, set())
        depth_changed = False
        if depth is not None:
            for code in codes:
                before = self._depth.get(code, 30)
                if depth == 30:
                    self._depth.pop(code, None)
                else:
                    self._depth[code] = depth
                depth_changed |= code in current and before != depth
        if codes <= current and not depth_changed:
            return False
        self._codes[kind] = current | codes
        self.version += 1
        return True

    def depth(self, market: str) -> int:
        """The orderbook levels streamed for ``market`` (any case)."""
        return self._depth.get(market_code(market), 30)

    def remove(self, kind: str, markets: Iterable[str]) -> bool:
        """Remove ``markets`` from ``kind``; returns True when the set changed.

        Raises InvalidRequestError for an unknown kind or a malformed market code.
        """
        kind = normalize_kind(kind)
        codes = {market_code(m) for m in markets}
        current = self._codes.get(kind, set())
        gone = codes & current
        if not gone:
            return False
        current -= gone
        if not current:
            del self._codes[kind]
        if kind == "orderbook":
            for code in gone:
                self._depth.pop(code, None)
        self.version += 1
        return True

    def markets(self, kind: str) -> frozenset[str]:
        """The markets subscribed for ``kind`` (empty when none)."""
        return frozenset(self._codes.get(normalize_kind(kind), ()))

    def __len__(self) -> int:
        """The number of (kind, market) pairs."""
        return sum(len(codes) for codes in self._codes.values())

    def __bool__(self) -> bool:
        return bool(self._codes)

    def request_message(self, ticket: str, *, format: str = "DEFAULT") -> bytes:
        """The whole subscription as one Upbit request message (a JSON array), kinds in
        KINDS order and codes sorted so equal sets give equal messages.

        Raises InvalidRequestError when the set is empty: Upbit rejects a request without
        types or codes, so an empty subscription means closing the connection instead.
        """
        if not self._codes:
            raise InvalidRequestError("cannot build a request for an empty subscription")
        message: list[dict[str, object]] = [{"ticket": ticket}]
        for kind in KINDS:
            codes = self._codes.get(kind)
            if not codes:
                continue
            if kind == "orderbook":
                # Events name the market without the suffix, so routing is unchanged.
                rendered = [f"{c}.{self._depth[c]}" if c in self._depth else c for c in codes]
                message.append({"type": kind, "codes": sorted(rendered)})
            else:
                message.append({"type": kind, "codes": sorted(codes)})
        message.append({"format": format})
        return msgspec.json.encode(message)


class MessagePacer:
    """Keeps request messages on one connection within Upbit's limits: at most 5 in any
    second and 100 in any minute (sliding windows, which also satisfy fixed calendar
    windows). Pure: the caller passes the time in seconds."""

    LIMITS = ((WS_MESSAGES_PER_S, 1.0), (WS_MESSAGES_PER_MIN, 60.0))

    def __init__(self, limits: Iterable[tuple[int, float]] = LIMITS, *, margin: float = 0.05):
        self._limits = tuple(limits)
        self._margin = margin  # a little slack for clock and network skew against upstream
        self._sent: deque[float] = deque(maxlen=max(n for n, _ in self._limits))

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until one more message may be sent (0.0 when it may be now)."""
        wait = 0.0
        for count, window in self._limits:
            if len(self._sent) >= count:
                oldest_in_window = self._sent[-count]
                wait = max(wait, oldest_in_window + window + self._margin - now)
        return wait

    def record(self, now: float) -> None:
        """Note that a message was sent at ``now``."""
        self._sent.append(now)
