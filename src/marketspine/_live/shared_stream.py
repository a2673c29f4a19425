"""``SharedStream``: one upstream WebSocket for every process sharing a Redis.

A drop-in for ``Stream`` (``subscribe``/``unsubscribe``/``listen``) in which each process is,
at any moment, one of:

- **holder**: it holds the live-feed lease (``_live.lease``), subscribes its own
  ``Stream`` upstream to what every process wants, and publishes every event it delivers
  into the Redis log (``_live.redis_log``);
- **follower**: its own ``Stream`` stays unsubscribed (no upstream connection); it reads
  the log from where it stood and delivers those events as if its own socket had sent them;
- **alone**: Redis is unreachable, so it reads its own upstream socket for what it wants
  (said in the log), until Redis answers again.

Trades pass through one ``TradeSequencer`` whichever the source, with an ``epoch`` that
changes whenever the source does. So the first trade of a market after a switch (a takeover,
a fall-back, a return) makes the sequencer ask for the hole, which is filled from REST by
``sequential_id`` exactly as ``Stream`` does after a reconnect: a process taking the lease
over first reads the log to its end, then its first upstream trade of each market fills the
gap from the old holder's last published trade, and those fills are published too, so every
follower sees consecutive trades without duplicates. The holder's subscription changes (what
any process wants) are re-sent by its own ``Stream``, whose sequencer fills what the switch
lost; its ``Gap`` and filled trades are published like any other event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
from redis import exceptions as redis_errors

from .._base.memory import MemoryBudget
from .._budget.redis import connect_redis
from .._budget.redis_unusable import UNREACHABLE
from ..records import Candle, Orderbook, Ticker, Trade
from .lease import LiveLease, Want, WantedMarkets, new_token
from .listener import Event, Fanout, Gap, Health, Listener, Overflow, filter_key
from .redis_log import Alive, FeedEvent, RedisFeed
from .stream import Liveness, Stream
from .subscriptions import KINDS, SubscriptionSet
from .trade_fill import TradeSource, fetch_missing
from .trade_sequence import FillNeeded, Output, TradeSequencer

__all__ = ["FeedStatistics", "SharedStream", "feed_prefix"]

log = logging.getLogger("marketspine")

Role = Literal["starting", "holder", "follower", "alone"]
_SHARED = (Trade, Ticker, Orderbook, Candle, Gap)
_BATCH = 500  # events per publishing script run
# A new holder continues the trades the log got this recently (older: not back-filled).
_RESUME_WITHIN_MS = 30_000


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    role: Role
    generation: int  # the lease generation last seen held by this process
    takeovers: int  # times this process took the lease
    published: int  # events this process put into the log
    received: int  # events this process read from the log


def feed_prefix(prefix: str, ws_url: str) -> str:
    """The keys of the feed of ``ws_url`` (one feed per upstream), in one hash slot."""
    return f"{prefix}feed:{{{urlsplit(ws_url).netloc}}}:"


class SharedStream:
    """What ``Stream(url, client=client)`` offers, shared through the Redis at ``redis_url``:
    the lease lasts ``lease_s`` (a dead holder is replaced within about that), roles are
    checked every ``poll_s``. ``upstream`` replaces the own ``Stream`` (tests); ``memory`` is
    the budget the trade ids kept for de-duplication are charged to."""

    def __init__(
        self,
        url: str,
        *,
        client: TradeSource | None,
        redis_url: str,
        prefix: str = "marketspine:",
        lease_s: float = 1.5,
        poll_s: float = 0.25,
        upstream: Stream | None = None,
        memory: MemoryBudget | None = None,
    ) -> None:
        self._upstream = upstream or Stream(url, client=client, memory=memory)
        self._client = client
        self._redis_url = redis_url
        self._feed = feed_prefix(prefix, url)
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._token = new_token()
        self._subs = SubscriptionSet()
        self._fanout = Fanout()
        self._trades = TradeSequencer(memory)
        self._epoch = 0  # the source of events: bumped whenever it changes
        # A follower's proof of the holder's socket: (monotonic time proven, the holder's
        # (token, connection) seen last, epochs of it seen so far).
        self._proven_at: float | None = None
        self._alive_source: tuple[str, int] | None = None
        self._alive_epochs = 0
        self.role: Role = "starting"
        self._generation = 0
        self._takeovers = self._published = self._received = 0
        self._sent: dict[tuple[str, str], int] = {}  # upstream subscription: pair -> depth
        self._last_id = "0-0"  # the last log entry delivered
        self._outbox: list[FeedEvent] = []
        self._outbox_ready = asyncio.Event()
        self._poke = asyncio.Event()  # wants changed or a publish was refused: elect now
        self._follows = asyncio.Event()
        self._reading = asyncio.Lock()  # one reader of the log at a time
        self._stack = AsyncExitStack()
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        # redis-py (8.1) sometimes swallows a cancel that lands inside a command: the loops
        # end on this flag, checked at least every ``poll_s``, not on cancellation alone.
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> SharedStream:
        redis = connect_redis(self._redis_url)
        self._stack.push_async_callback(redis.aclose)
        self._lease = LiveLease(redis, self._feed, ttl_s=self._lease_s, token=self._token)
        wants_s = max(3.0, 2 * self._lease_s, 4 * self._poll_s)  # outlives a missed round
        self._wants = WantedMarkets(redis, self._feed, token=self._token, ttl_s=wants_s)
        self._log = RedisFeed(redis, self._feed)
        try:
            await self._stack.enter_async_context(self._upstream)
            self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        except BaseException:
            await self._stack.aclose()
            raise
        for loop in (self._elect(), self._pump(), self._consume(), self._publish()):
            self._start(loop)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        for wake in (self._poke, self._outbox_ready, self._follows):
            wake.set()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(*UNREACHABLE, redis_errors.RedisError):
            if self.role == "holder":
                await self._lease.release()  # the next process takes over at once
            await self._wants.withdraw()
        self._fanout.close()
        await self._stack.__aexit__(et, e, tb)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the Stream surface ------------------------------------------------------------------

    async def subscribe(
        self, kind: str, markets: Iterable[str] | str, *, depth: int | None = None
    ) -> None:
        """As ``Stream.subscribe``: wanted here, asked of the holder (raises alike)."""
        codes = [markets] if isinstance(markets, str) else list(markets)
        if self._subs.add(kind, codes, depth=depth):
            await self._wants_changed()

    async def unsubscribe(self, kind: str, markets: Iterable[str] | str) -> None:
        """As ``Stream.unsubscribe``."""
        codes = [markets] if isinstance(markets, str) else list(markets)
        if self._subs.remove(kind, codes):
            await self._wants_changed()

    def listen(
        self, kinds: set[str] | None = None, markets: set[str] | None = None, *,
        maxsize: int = 1000,
    ) -> Listener:  # fmt: skip
        """As ``Stream.listen``."""
        return Listener(self._fanout, kinds, markets, maxsize)

    def liveness(self) -> Liveness | None:
        """As ``Stream.liveness``: the own socket's while reading it, else the holder's as
        its ``Alive`` entries tell; the epoch also changes with every change of role."""
        if self.role in ("holder", "alone"):
            own = self._upstream.liveness()
            return None if own is None else Liveness(self._epoch * 1_000_000 + own.epoch, own.age_s)
        if self.role != "follower" or self._proven_at is None:
            return None
        age = max(0.0, time.monotonic() - self._proven_at)
        return Liveness(self._epoch * 1_000_000 + self._alive_epochs, age)

    def _announce(self) -> None:
        """As holder, tell followers the socket delivers (an ``Alive`` in the log)."""
        own = self._upstream.liveness()
        if self.role == "holder" and own is not None:
            self._outbox.append(Alive(self._token, own.epoch, round(own.age_s * 1000)))
            self._outbox_ready.set()

    def _heard_alive(self, alive: Alive) -> None:
        source = (alive.source, alive.epoch)
        if source != self._alive_source:
            self._alive_source = source
            self._alive_epochs += 1
        self._proven_at = time.monotonic() - alive.age_ms / 1000

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(
            self.role, self._generation, self._takeovers, self._published, self._received
        )

    async def _wants_changed(self) -> None:
        self._poke.set()  # the holder hears of it on the next election round, now
        if self.role == "alone":
            await self._sync(self._own())

    def _own(self) -> set[Want]:
        return {
            (kind, code, self._subs.depth(code) if kind == "orderbook" else 0)
            for kind in KINDS
            for code in self._subs.markets(kind)
        }

    # -- roles -------------------------------------------------------------------------------

    async def _elect(self) -> None:
        while not self._closing:
            self._poke.clear()
            try:
                await self._wants.publish(self._own())
                claim = await self._lease.claim()
                if claim.held:
                    self._generation = claim.generation
                    await self._hold(await self._wants.union() | self._own())
                    self._announce()
                else:
                    await self._follow(claim.holder)
            except UNREACHABLE as exc:
                await self._go_alone(exc)
            # Not asyncio.timeout: on 3.11 a cancel arriving as it expires became a
            # TimeoutError, swallowed here, and the stream never closed.
            poked = asyncio.ensure_future(self._poke.wait())
            try:
                await asyncio.wait({poked}, timeout=self._poll_s)
            finally:
                poked.cancel()

    async def _hold(self, wanted: set[Want]) -> None:
        if self.role != "holder":
            async with self._reading:
                if self.role in ("follower", "starting"):
                    if self.role == "follower":  # the old holder's log to its end first
                        await self._drain()
                    # Markets this process did not follow (it just started, or nothing came
                    # since it joined): the fills continue after the old holder's last
                    # published trades, which are remembered, not delivered.
                    tracked = set(self._trades.markets())
                    for event in await self._log.recent(_RESUME_WITHIN_MS):
                        if isinstance(event, Trade) and event.market not in tracked:
                            self._trades.receive(event, self._epoch, subscribed=True)
                    # This process's socket is a new source: each market's hole gets filled.
                    self._epoch += 1
                    markets = {code for _, code, _ in wanted}
                    for code in self._trades.markets():
                        if code not in markets:  # not back-filling a long absence later
                            self._trades.forget(code)
                previous, self.role = self.role, "holder"
                self._takeovers += previous == "follower"
            log.log(
                logging.WARNING if previous == "alone" else logging.INFO,
                "live feed: %sthis process holds the upstream WebSocket for every process "
                "on it (lease generation %d)",
                "Redis is back; " if previous == "alone" else "", self._generation,
                extra={"event": "lease_moved", "key": "live feed", "role": "holder"},
            )  # fmt: skip
        await self._sync(wanted)

    async def _follow(self, holder: str) -> None:
        if self.role != "follower":
            async with self._reading:
                self._last_id = await self._log.tail()
                self._epoch += 1
                self._proven_at = self._alive_source = None
                previous, self.role = self.role, "follower"
            self._follows.set()
            log.log(
                logging.WARNING if previous == "alone" else logging.INFO,
                "live feed: %sfollowing the shared feed of process %s",
                "Redis is back; " if previous == "alone" else "", holder,
                extra={"event": "lease_moved", "key": "live feed", "role": "follower"},
            )  # fmt: skip
        await self._sync(set())

    async def _go_alone(self, exc: BaseException) -> None:
        if self.role != "alone":
            async with self._reading:
                if self.role != "holder":
                    self._epoch += 1  # a holder keeps its socket: the same source
                previous, self.role = self.role, "alone"
            log.warning(
                "live feed: Redis unreachable (%s); this process reads its own upstream "
                "WebSocket until Redis is back (was %s)", exc, previous,
                extra={"event": "redis_lost", "key": "live feed"},
            )  # fmt: skip
        await self._sync(self._own())

    async def _sync(self, wanted: set[Want]) -> None:
        """Subscribe the own upstream socket to exactly ``wanted``."""
        target = {(kind, code): depth for kind, code, depth in wanted}
        for kind, code in [pair for pair in self._sent if pair not in target]:
            await self._upstream.unsubscribe(kind, code)
            del self._sent[(kind, code)]
        for (kind, code), depth in target.items():
            if self._sent.get((kind, code)) != depth:
                await self._upstream.subscribe(
                    kind, code, depth=depth if kind == "orderbook" else None
                )
                self._sent[(kind, code)] = depth

    # -- sources -----------------------------------------------------------------------------

    async def _pump(self) -> None:
        """The own upstream socket's events, while this process reads it."""
        async with self._upstream.listen(None, None, maxsize=100_000) as events:
            async for event in events:
                if self.role in ("holder", "alone"):
                    self._deliver(event, self._epoch)

    async def _consume(self) -> None:
        """The log's events, while this process follows."""
        while not self._closing:
            if self.role != "follower":
                self._follows.clear()
                await self._follows.wait()
                continue
            try:
                async with self._reading:
                    if self.role == "follower":
                        await self._read(block_ms=max(1, round(self._poll_s * 800)))
            except UNREACHABLE:
                self._poke.set()
                await asyncio.sleep(self._poll_s)

    async def _drain(self) -> None:
        while await self._read(block_ms=None):
            pass

    async def _read(self, *, block_ms: int | None) -> int:
        last, events = await self._log.read(self._last_id, block_ms=block_ms)
        self._last_id = last
        self._received += len(events)
        for event in events:
            self._deliver(event, self._epoch)
        return len(events)

    async def _publish(self) -> None:
        while not self._closing:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            try:
                for at in range(0, len(batch), _BATCH):
                    if not await self._log.publish(self._token, batch[at : at + _BATCH]):
                        log.warning("live feed: lease lost; %d events not shared", len(batch))
                        self._poke.set()
                        break
                    self._published += len(batch[at : at + _BATCH])
            except UNREACHABLE:
                self._poke.set()

    # -- delivery ----------------------------------------------------------------------------

    def _deliver(self, event: Event | Alive, epoch: int) -> None:
        if isinstance(event, Alive):
            self._heard_alive(event)
        elif isinstance(event, Trade):
            self._emit(self._trades.receive(event, epoch, subscribed=True))
        else:
            self._offer(event)

    def _emit(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, FillNeeded):
                self._start(self._fill(out))
            else:
                self._offer(out)

    async def _fill(self, fill: FillNeeded) -> None:
        missing, complete, reason = await fetch_missing(self._client, fill)
        self._emit(self._trades.filled(fill, missing, complete=complete, reason=reason))

    def _offer(self, event: Event) -> None:
        """Share ``event`` (as holder) and hand it to this process's listeners if wanted."""
        if self.role == "holder" and isinstance(event, _SHARED):
            self._outbox.append(event)
            self._outbox_ready.set()
        elif isinstance(event, Health) and event.state == "connected":
            self._announce()  # before the new connection's snapshots, in the log's order
        kind, market = filter_key(event)
        kind = "trade" if kind == "gap" else kind  # as Stream: gaps follow the trade filter
        if not isinstance(event, Health | Overflow):
            wanted = self._subs.markets(kind)
            if market not in wanted:
                return  # another process wants it
        if isinstance(event, Orderbook):
            depth = self._subs.depth(market)
            if len(event.units) > depth:  # the holder streams the deepest book anyone wants
                event = msgspec.structs.replace(event, units=event.units[:depth])
        self._fanout.publish(event, kind, market)
