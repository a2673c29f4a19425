"""What a stream delivers and to whom: the event types, one consumer's bounded queue
(``Listener``) with its filters, and the ``Fanout`` that joins listeners to a stream.

Pure: no sockets here. The stream publishes into its ``Fanout``; listeners attach to it
and detach from it, so neither reaches into the other's state.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal, TypeAlias

import msgspec

from .._base.markets import market_code
from .._base.timeframes import TIMEFRAMES
from ..errors import InvalidRequestError
from ..records import Candle, Orderbook, Ticker, Trade
from .subscriptions import normalize_kind

__all__ = [
    "LATEST_WINS",
    "Event",
    "Fanout",
    "Gap",
    "Health",
    "Listener",
    "Overflow",
    "filter_key",
    "kind_of",
]

LATEST_WINS = frozenset({"ticker", "orderbook"})


class Gap(msgspec.Struct, frozen=True):
    """The trade stream of ``market`` was interrupted between ``since_ms`` (the last trade
    seen before) and ``until_ms`` (the first trade seen after). ``filled`` trades were
    fetched from REST and are delivered right after this event; ``complete`` is False when
    the hole could not be filled entirely (``reason`` says why)."""

    market: str
    since_ms: int
    until_ms: int
    filled: int
    complete: bool = True
    reason: str = ""


class Health(msgspec.Struct, frozen=True):
    """The connection changed state: connected, reconnecting (``reason`` says why and
    when), or stalled (open but pings unanswered; a reconnect follows)."""

    state: Literal["connected", "reconnecting", "stalled"]
    reason: str


class Overflow(msgspec.Struct, frozen=True):
    """A consumer fell behind and its queue dropped the ``dropped`` oldest events of
    ``kind`` for ``market`` (empty for connection events)."""

    kind: str
    market: str
    dropped: int


Event: TypeAlias = Ticker | Trade | Orderbook | Candle | Gap | Health | Overflow


def kind_of(event: Ticker | Trade | Orderbook | Candle) -> str:
    """The subscription kind a market-data record belongs to (``trade``, ``candle.1m``...)."""
    if isinstance(event, Trade):
        return "trade"
    if isinstance(event, Ticker):
        return "ticker"
    if isinstance(event, Orderbook):
        return "orderbook"
    tf = TIMEFRAMES.get(event.timeframe)
    return tf.ws_type if tf is not None and tf.ws_type else f"candle.{event.timeframe}"


def filter_key(event: Event) -> tuple[str, str]:
    """The (kind, market) an event is filtered and counted under."""
    if isinstance(event, Health):
        return ("health", "")
    if isinstance(event, Gap):
        return ("gap", event.market)
    if isinstance(event, Overflow):
        return ("overflow", event.market)
    return (kind_of(event), event.market)


class Fanout:
    """The listeners of one stream: who listens, whether the stream has ended, and
    publishing one event to every listener that wants it."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def attach(self, listener: Listener) -> bool:
        """Add ``listener``; False when the stream has ended (nothing more will come)."""
        if self._closed:
            return False
        self._listeners.append(listener)
        return True

    def detach(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, event: Event, kind: str, market: str) -> None:
        """Offer ``event`` to every listener whose filters accept ``kind`` and ``market``."""
        for listener in self._listeners:
            if listener.wants(kind, market):
                listener.offer(event, kind, market)

    def dropped(self) -> tuple[int, ...]:
        """Events dropped so far, per attached listener."""
        return tuple(listener.dropped for listener in self._listeners)

    def close(self) -> None:
        """The stream has ended: end every listener's iteration, refuse new ones."""
        self._closed = True
        for listener in list(self._listeners):
            listener.close()


class Listener:
    """One consumer's view of a Stream: an async iterator over events with its own bounded
    queue. Use as ``async with stream.listen(...) as events: async for event in events``.

    Tickers and orderbooks are latest-wins (a queued one is replaced by a newer one for the
    same market, keeping its place); when the queue is full the oldest event is dropped and
    an ``Overflow`` event saying how many of which kind and market comes before the rest.
    Offering never blocks, so a slow consumer never holds up the stream or anyone else.
    """

    def __init__(
        self,
        fanout: Fanout,
        kinds: set[str] | None,
        markets: set[str] | None,
        maxsize: int,
    ) -> None:
        if maxsize < 1:
            raise InvalidRequestError(f"listener maxsize must be >= 1, got {maxsize}")
        self._fanout = fanout
        self._kinds = None if kinds is None else {normalize_kind(k) for k in kinds}
        self._markets = None if markets is None else {market_code(m) for m in markets}
        self._maxsize = maxsize
        self._items: deque[Event | tuple[str, str]] = deque()  # a tuple: a latest-wins slot
        self._latest: dict[tuple[str, str], Event] = {}
        self._overflow: dict[tuple[str, str], int] = {}
        self._wakeup = asyncio.Event()
        self._open = False
        self._closed = False
        self.dropped = 0

    async def __aenter__(self) -> Listener:
        if self._fanout.attach(self):
            self._open = True
        else:
            self._closed = True  # iteration ends at once: nothing more will come
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        """The next event; ends when the listener or its stream is closed.

        Raises InvalidRequestError when the listener was not entered with ``async with``.
        """
        if not self._open and not self._closed:
            raise InvalidRequestError("enter the listener first: async with stream.listen(...)")
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def get_nowait(self) -> Event | None:
        """The next queued event, or None when the queue is empty."""
        if self._overflow:
            (kind, market), dropped = next(iter(self._overflow.items()))
            del self._overflow[kind, market]
            return Overflow(kind, market, dropped)
        if not self._items:
            return None
        item = self._items.popleft()
        return self._latest.pop(item) if isinstance(item, tuple) else item

    def empty(self) -> bool:
        """Whether nothing waits to be taken, Overflow notices included."""
        return not self._items and not self._overflow

    def qsize(self) -> int:
        """Events waiting (pending Overflow notices not counted)."""
        return len(self._items)

    def wants(self, kind: str, market: str) -> bool:
        """Whether this listener's filters accept an event of ``kind`` for ``market``."""
        if kind == "health":
            return True
        if self._kinds is not None and kind not in self._kinds:
            return False
        return self._markets is None or market in self._markets

    def offer(self, event: Event, kind: str, market: str) -> None:
        """Queue ``event`` without blocking, dropping the oldest event when full."""
        if kind in LATEST_WINS:
            key = (kind, market)
            queued = key in self._latest
            self._latest[key] = event
            if queued:
                return
            self._items.append(key)
        else:
            self._items.append(event)
        if len(self._items) > self._maxsize:
            oldest = self._items.popleft()
            if isinstance(oldest, tuple):
                del self._latest[oldest]
                dropped_key = oldest
            else:
                dropped_key = filter_key(oldest)
            self._overflow[dropped_key] = self._overflow.get(dropped_key, 0) + 1
            self.dropped += 1
        self._wakeup.set()

    def close(self) -> None:
        """Stop listening: iteration ends once the queue is drained."""
        self._open = False
        self._closed = True
        self._fanout.detach(self)
        self._wakeup.set()
