"""The WebSocket side of a Spine: one ``Stream`` opened on first use, a pump that feeds
every event into the ``LiveState``, and which (kind, market) pairs are kept live."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any, Protocol

from .._base.urls import check_upstream
from .._client.client import Client
from ..records import Candle, Trade
from .candle_feed import ClosedCandle, candle_events
from .listener import Event, Listener
from .state import LiveState
from .stream import Liveness, Stream, StreamStatistics
from .trades_since import trades_since

if TYPE_CHECKING:
    from .shared_stream import SharedStream
from .._base.timeframes import Timeframe, timeframe_of_kind

__all__ = ["LiveFeed", "LiveStream", "ws_url_for"]

# Upstream's forming candle of (market, timeframe), or None when its window has no trade.
SeedForming = Callable[[str, Timeframe], Awaitable[Candle | None]]


class LiveStream(Protocol):
    """What the feed uses of its stream: a ``Stream``, or a ``SharedStream`` with Redis."""

    async def subscribe(
        self, kind: str, markets: list[str] | str, *, depth: int | None = None
    ) -> None: ...

    async def unsubscribe(self, kind: str, markets: list[str] | str) -> None: ...

    def listen(
        self, kinds: set[str] | None = None, markets: set[str] | None = None, *, maxsize: int = ...
    ) -> Listener: ...

    def liveness(self) -> Liveness | None: ...


class LiveFeed:
    """Opens ``Stream(ws_url)`` on first use into ``stack``, with its pump started by
    ``start(name, coroutine)`` (the owner's task group); ``watched`` holds the pairs live.
    With ``redis`` (a URL) the stream is shared: one process on that Redis holds the
    upstream socket for all (see ``_live.shared_stream``)."""

    def __init__(
        self,
        ws_url: str,
        live: LiveState,
        *,
        start: Callable[[str, Coroutine[Any, Any, None]], None],
        redis: str | None = None,
        redis_prefix: str | None = None,
    ) -> None:
        self._ws_url = ws_url
        self._redis = redis
        self._redis_prefix = "marketspine:" if redis_prefix is None else redis_prefix
        self._live = live
        self._start = start
        self._stream: LiveStream | None = None
        self._client: Client | None = None  # fills trades up to a stream's ``since``
        self._lock = asyncio.Lock()
        self.watched: set[tuple[str, str]] = set()
        self._pumped: Listener | None = None  # the pump's queue into the live state

    @property
    def opened(self) -> bool:
        """Whether the stream was opened (it is, on first use)."""
        return self._stream is not None

    async def stream(self, client: Client, stack: AsyncExitStack) -> LiveStream:
        """The stream, opened (and its pump started) on first use; ``client`` fills gaps."""
        async with self._lock:
            if self._stream is None:
                memory = self._live.budget  # the stream's trade ids are charged to it
                stream: Stream | SharedStream = Stream(self._ws_url, client=client, memory=memory)
                if self._redis is not None:
                    from .shared_stream import SharedStream  # loads redis only when used

                    stream = SharedStream(
                        self._ws_url,
                        client=client,
                        redis_url=self._redis,
                        prefix=self._redis_prefix,
                        memory=memory,
                    )
                await stack.enter_async_context(stream)
                self._stream, self._client = stream, client
                self._live.follow_liveness(stream.liveness)
                self._start("live pump", self._pump(stream))
            return self._stream

    def statistics(self) -> StreamStatistics | None:
        """The own stream's counters, its frame ages only of the kinds watched now (an
        unwatched kind's age grows for ever); None before the stream opens, and with a
        stream shared through Redis (frames then reach the process holding the lease)."""
        if not isinstance(self._stream, Stream):
            return None
        stats = self._stream.statistics()
        kinds = {kind for kind, _ in self.watched}
        ages = {k: age for k, age in stats.last_frame_age_s.items() if k in kinds}
        return dataclasses.replace(stats, last_frame_age_s=ages)

    async def watch(
        self, stream: LiveStream, kinds: list[str], codes: list[str], depth: int | None,
        seed: SeedForming,
    ) -> None:  # fmt: skip
        """Subscribe ``kinds`` of ``codes``; a candle kind follows the trade stream and
        keeps its forming candle, starting from ``seed``."""
        for kind in kinds:
            if kind.startswith("candle."):
                tf = timeframe_of_kind(kind)
                await stream.subscribe("trade", codes)
                self.watched.update(("trade", c) for c in codes)
                for code in codes:
                    if not self._live.tracking(code, tf.name):
                        self._live.track(code, tf, await seed(code, tf))
                continue
            await stream.subscribe(kind, codes, depth=depth if kind == "orderbook" else None)
            self.watched.update((kind, c) for c in codes)

    async def unwatch(self, kinds: list[str], codes: list[str]) -> None:
        """The reverse of ``watch``: a market's trades stay streamed while a forming candle
        of it is still built from them."""
        if self._stream is None:
            return
        for kind in kinds:
            if kind.startswith("candle."):
                tf = timeframe_of_kind(kind)
                idle = [c for c in codes if self._live.untrack(c, tf.name) == 0]
                kind, codes_now = "trade", idle
            else:
                codes_now = [c for c in codes if kind != "trade" or not self._live.tracked_count(c)]
            await self._stream.unsubscribe(kind, codes_now)
            self.watched.difference_update((kind, c) for c in codes_now)
            for code in codes_now:
                self._live.unsubscribed(kind, code)

    def events(
        self,
        stream: LiveStream,
        kinds: list[str],
        codes: list[str],
        maxsize: int,
        *,
        watch: Callable[[list[str], list[str]], Awaitable[None]],
        upstream_now_ms: Callable[[], int],
        forming: Callable[[str, Timeframe, int], Awaitable[Candle | None]],
        read_closed: Callable[[str, Timeframe, int, int], Awaitable[Sequence[Candle]]],
        stopped: Callable[[], bool],
        since: Mapping[str, Trade | int],
    ) -> AsyncGenerator[Event | Candle | ClosedCandle, None]:
        """The events of ``kinds`` of ``codes`` through one listener of ``maxsize``; candle
        kinds become forming and closed candles (see ``candle_events``). ``watch`` subscribes
        once the listener is open, so no trade after upstream's forming candle is missed.
        The trades of each market in ``since`` begin right after its trade (see
        ``trades_since``). Ends, handing out nothing more that was queued, as soon as
        ``stopped()`` is true."""
        items = self._events(
            stream, kinds, codes, maxsize, watch, upstream_now_ms, forming, read_closed, stopped
        )
        return trades_since(items, since, self._client, stopped) if since else items

    async def _events(
        self,
        stream: LiveStream,
        kinds: list[str],
        codes: list[str],
        maxsize: int,
        watch: Callable[[list[str], list[str]], Awaitable[None]],
        upstream_now_ms: Callable[[], int],
        forming: Callable[[str, Timeframe, int], Awaitable[Candle | None]],
        read_closed: Callable[[str, Timeframe, int, int], Awaitable[Sequence[Candle]]],
        stopped: Callable[[], bool],
    ) -> AsyncGenerator[Event | Candle | ClosedCandle, None]:
        frames = [timeframe_of_kind(k) for k in kinds if "." in k]
        plain = {k for k in kinds if "." not in k}
        listened = plain | ({"trade"} if frames else set())  # candle kinds follow trades
        async with stream.listen(listened, set(codes), maxsize=maxsize) as listener:
            await watch(kinds, codes)
            if not frames:
                async for event in listener:
                    if stopped():
                        return
                    yield event
                return
            candles = candle_events(
                listener,
                codes,
                frames,
                pass_trades="trade" in plain,
                upstream_now_ms=upstream_now_ms,
                forming=forming,
                read_closed=read_closed,
            )
            async with aclosing(candles):  # closed with this generator, not when collected
                async for item in candles:
                    if stopped():
                        return
                    yield item

    async def delivered(self, market: str) -> bool:
        """Whether everything upstream sent before now has been applied to the live state,
        with no fill of ``market``'s trades pending (a ping's round trip). Only an own
        ``Stream`` can tell: through Redis, False."""
        stream, pumped = self._stream, self._pumped
        if not isinstance(stream, Stream) or pumped is None:
            return False
        if not await stream.barrier() or stream.filling(market):
            return False
        # Read, perhaps not applied yet: the pump takes it in turn (each applied event
        # wakes the wait).
        await self._live.wait_for(lambda: True if pumped.empty() else None)
        return True

    async def _pump(self, stream: LiveStream) -> None:
        async with stream.listen(None, None, maxsize=100_000) as events:
            self._pumped = events
            async for event in events:
                self._live.apply(event)


def ws_url_for(upstream: str) -> str:
    """The WebSocket URL beside the REST base URL ``upstream``.

    Raises InvalidRequestError unless ``upstream`` is an http(s):// URL."""
    check_upstream(upstream)
    if upstream.startswith("https://"):
        return "wss://" + upstream.removeprefix("https://") + "/websocket/v1"
    return "ws://" + upstream.removeprefix("http://") + "/websocket/v1"
