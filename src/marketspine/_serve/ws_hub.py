"""The upstream side of ``serve``'s WebSocket gateway: one feed per (type, market), shared.

Every (type, market) some downstream client wants is read from the Spine's one stream
(``Spine.stream``: one upstream connection, the whole subscription re-sent on change and
paced within Upbit's 5/s and 100/min). Each event is rendered lazily, once per format
variant, and offered to every subscriber of its pair without waiting. A pair nobody wants
any more lingers a while (clients often resubscribe), then its listener stops and the
Spine unwatches it unless ``shared`` says another part of ``serve`` still uses it.

A trade snapshot answered from REST (no trade seen yet) is joined to the live stream
(``TradeJoin``): trades between the two are filled from REST, trades the snapshot covers
are not sent again, so a client gets every trade after its snapshot, in order, once. A
join that cannot (the walk fails, or more than ``join_hold_max`` live trades come while it
runs) sends what it has at once, logs a warning and counts in ``joins_incomplete``: the
Upbit protocol has no message for a hole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._live.candle_feed import ClosedCandle
from .._live.trade_fill import Walk, walk_back
from .._live.trade_join import JOIN_HOLD_MAX, JoinOutput, TradeJoin, WalkNeeded
from .._spine.spine import Spine
from ..errors import MarketspineError
from ..records import Candle, Orderbook, Ticker, Trade
from .ws_format import Extras, Record, kind_of, render, repeats, timeframe_of
from .ws_frames import binary_frame

__all__ = ["Pair", "Rendered", "Subscriber", "UpstreamHub", "Variant"]

logger = logging.getLogger("marketspine.serve.ws")

Pair = tuple[str, str]  # (type, market)


# How one client wants an event rendered: simple keys, stream_type, orderbook depth,
# orderbook level, listed (in a JSON array, for the LIST formats).
Variant = tuple[bool, str, int, float, bool]


class Rendered:
    """One event's messages, rendered on first use per ``Variant``, and their frames."""

    __slots__ = ("_extras", "_frames", "_messages", "_record")

    def __init__(self, record: Record, extras: Extras) -> None:
        self._record = record
        self._extras = extras
        self._messages: dict[Variant, bytes] = {}
        self._frames: dict[Variant, bytes] = {}

    def get(self, variant: Variant) -> bytes:
        """The message of one variant."""
        message = self._messages.get(variant)
        if message is None:
            simple, stream_type, depth, level, listed = variant
            message = render(
                self._record,
                simple=simple,
                stream_type=stream_type,
                depth=depth,
                level=level,
                extras=self._extras,
            )
            message = self._messages[variant] = b"[" + message + b"]" if listed else message
        return message

    def frame(self, variant: Variant) -> bytes:
        """The message of one variant as a whole WebSocket frame (``binary_frame``); the
        same bytes object for every client of the variant."""
        frame = self._frames.get(variant)
        if frame is None:
            frame = self._frames[variant] = binary_frame(self.get(variant))
        return frame


class Subscriber(Protocol):
    """A downstream client as the hub sees it."""

    def offer(self, pair: Pair, rendered: Rendered) -> None:
        """Queue the event if this client wants it (never waits)."""

    def owes_snapshot(self, pair: Pair) -> bool:
        """Whether this client still waits for its snapshot of ``pair``."""

    def realtime_route(self, pair: Pair) -> tuple[Variant, bool] | None:
        """How this client takes realtime events of ``pair``: the variant, and whether as
        whole frames (``Rendered.frame``) rather than messages; None when it takes none."""

    def send(self, payload: bytes) -> None:
        """Send or queue one payload of its ``realtime_route`` (never waits)."""


# One feed's realtime fan-out: per (variant, framed), the send of every client taking it.
_Plan = list[tuple[Variant, bool, list[Callable[[bytes], None]]]]


@dataclass(eq=False)
class _Feed:
    """One (type, market): who wants it, its last event, its tasks."""

    pair: Pair
    subscribers: set[Subscriber] = field(default_factory=set)
    last: Record | None = None
    pump: asyncio.Task[None] | None = None
    fetch: asyncio.Task[None] | None = None
    linger: asyncio.TimerHandle | None = None
    plan: _Plan | None = None  # None: to be made again (the subscribers changed)
    owing: bool = False  # a subscriber may still wait for its snapshot: events go by offer
    join: TradeJoin | None = None  # a trade snapshot from REST, until the stream meets it
    walk: asyncio.Task[None] | None = None


class UpstreamHub:
    """Shared feeds for every subscriber. ``shared(type, market)`` tells whether another
    part of the process still uses a pair, so retiring it must not unwatch it."""

    def __init__(
        self,
        spine: Spine,
        *,
        linger_s: float,
        upstream_queue: int,
        join_hold_max: int = JOIN_HOLD_MAX,
        shared: Callable[[str, str], bool] = lambda kind, market: False,
    ) -> None:
        self._spine = spine
        self._linger_s = linger_s
        self._upstream_queue = upstream_queue
        self._join_hold_max = join_hold_max
        self._shared = shared
        self._feeds: dict[Pair, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.warnings: dict[str, bool] = {}  # market -> investment warning
        self._side: dict[str, str] = {}  # market -> side of its last trade seen
        self._book: dict[str, Orderbook] = {}  # market -> last book seen
        self.fetches = 0
        self.joins = 0  # REST walks joining a trade snapshot to the stream
        self.join_trades = 0  # trades they filled in
        self.joins_incomplete = 0  # joins that could not fill the hole (or all of it)

    def __len__(self) -> int:
        """Pairs with a feed (lingering ones included)."""
        return len(self._feeds)

    # -- who wants what ------------------------------------------------------------------------

    def retain(self, subscriber: Subscriber, pairs: set[Pair]) -> None:
        """Feed ``pairs`` to ``subscriber``; call it again whenever its ``realtime_route``
        of them changes (a new format), so their fan-out plans are made anew."""
        for pair in pairs:
            feed = self._feeds.get(pair)
            if feed is None:
                feed = self._feeds[pair] = _Feed(pair)
            if feed.linger is not None:
                feed.linger.cancel()
                feed.linger = None
            if feed.pump is None:
                feed.pump = self._spawn(self._pump(feed), f"ws-pump {pair}")
            feed.subscribers.add(subscriber)
            feed.plan = None  # new, or its route may have changed

    def release(self, subscriber: Subscriber, pairs: set[Pair]) -> None:
        for pair in pairs:
            feed = self._feeds.get(pair)
            if feed is None:
                continue
            feed.subscribers.discard(subscriber)
            feed.plan = None
            if not feed.subscribers and feed.linger is None and not self._closed:
                loop = asyncio.get_running_loop()
                feed.linger = loop.call_later(self._linger_s, self._retire, feed)

    def snapshot(self, subscriber: Subscriber, pair: Pair) -> None:
        """Send ``subscriber`` its snapshot of ``pair`` (retained before): at once from the
        last event seen, else from one fetch shared by every subscriber waiting for it."""
        feed = self._feeds[pair]
        if feed.last is not None:
            subscriber.offer(pair, Rendered(feed.last, self._extras(feed.last)))
            return
        feed.owing = True  # the next event is its snapshot, if it comes before the fetch
        if feed.fetch is None:
            feed.fetch = self._spawn(self._fetch(feed), f"ws-snapshot {pair}")

    def _retire(self, feed: _Feed) -> None:
        if feed.subscribers or self._feeds.get(feed.pair) is not feed:
            return
        del self._feeds[feed.pair]
        for task in (feed.pump, feed.fetch, feed.walk):
            if task is not None:
                task.cancel()
        kind, market = feed.pair
        # Unwatching a candle kind stops the market's trade stream once no candle of it is
        # built any more, even when its trades are wanted for themselves: keep it then.
        trades_fed = kind.startswith("candle.") and ("trade", market) in self._feeds
        if not trades_fed and not self._shared(kind, market):
            self._spawn(self._unwatch(feed.pair), f"ws-unwatch {feed.pair}")

    async def _unwatch(self, pair: Pair) -> None:
        try:
            await self._spine.unwatch([pair[0]], [pair[1]])
        except MarketspineError as exc:
            logger.warning("cannot unwatch %s %s: %s", *pair, exc)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        # Not a task group: one feed failing (an upstream error for one market) must not end
        # the others. Every task is kept here and cancelled and awaited by ``aclose``.
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events ----------------------------------------------------------------------------------

    async def _pump(self, feed: _Feed) -> None:
        kind, market = feed.pair
        try:
            async for event in self._spine.stream([kind], [market], maxsize=self._upstream_queue):
                if isinstance(event, ClosedCandle):
                    event = event.candle
                if isinstance(event, Ticker | Trade | Orderbook | Candle):
                    self._dispatch(feed, event)
                    # A burst is read without awaiting; let writers send in between, so a
                    # burst alone never fills the queue of a client that is reading.
                    await asyncio.sleep(0)
        except MarketspineError as exc:
            logger.warning("upstream feed for %s %s ended: %s", kind, market, exc)

    def _dispatch(self, feed: _Feed, record: Record) -> None:
        if kind_of(record) != feed.pair[0]:
            return
        if isinstance(record, Trade) and feed.join is not None:
            self._join(feed, feed.join.receive(record))
        else:
            self._send(feed, record)

    def _join(self, feed: _Feed, outputs: list[JoinOutput]) -> None:
        join = feed.join
        for out in outputs:
            if isinstance(out, WalkNeeded):
                self.joins += 1
                feed.walk = self._spawn(self._walk(feed, out), f"ws-join {feed.pair}")
            else:
                self._send(feed, out)
        if join is not None and join.joined and feed.join is join:
            if feed.walk is not None:  # given up while walking: its answer is not wanted
                feed.walk.cancel()
                feed.walk = None
            if join.incomplete:
                self.joins_incomplete += 1
                logger.warning(
                    "trades of %s after a snapshot may be missing: %s",
                    feed.pair[1],
                    join.incomplete,
                )
            self.join_trades += join.filled
            feed.join = None

    async def _walk(self, feed: _Feed, need: WalkNeeded) -> None:
        try:
            client = self._spine.client
        except MarketspineError as exc:  # the Spine is closing
            walk = Walk([], False, False, str(exc))
        else:
            walk = await walk_back(client, need.market, need.before, need.after)
        feed.walk = None
        if feed.join is not None:
            self._join(feed, feed.join.walked(walk))

    def _send(self, feed: _Feed, record: Record) -> None:
        kept = None if feed.last is None else repeats(record, feed.last)
        if kept is not None:
            # Upstream re-sent its snapshot after another pair was added, or this is the
            # WebSocket copy of the REST record the snapshot came from: nothing new to send,
            # but later snapshots show the copy, which carries the WebSocket-only fields.
            feed.last = kept
            return
        market = record.market
        if isinstance(record, Trade):
            self._side[market] = record.side
        elif isinstance(record, Orderbook):
            self._book[market] = record
        feed.last = record
        rendered = Rendered(record, self._extras(record))
        if feed.owing:
            self._offer(feed, rendered)
            return
        # The hot path, once per client per event: each variant is rendered once, then
        # only the clients' sends run (worked out per client in ``_plan``, not here).
        plan = feed.plan if feed.plan is not None else self._plan(feed)
        for variant, framed, sends in plan:
            payload = rendered.frame(variant) if framed else rendered.get(variant)
            for send in sends:
                send(payload)

    def _plan(self, feed: _Feed) -> _Plan:
        groups: dict[tuple[Variant, bool], list[Callable[[bytes], None]]] = {}
        for subscriber in feed.subscribers:
            route = subscriber.realtime_route(feed.pair)
            if route is not None:
                groups.setdefault(route, []).append(subscriber.send)
        feed.plan = [(variant, framed, sends) for (variant, framed), sends in groups.items()]
        return feed.plan

    def _offer(self, feed: _Feed, rendered: Rendered) -> None:
        """Offer to every subscriber, each deciding (a snapshot still owed comes first)."""
        for subscriber in list(feed.subscribers):
            subscriber.offer(feed.pair, rendered)
        feed.owing = any(s.owes_snapshot(feed.pair) for s in feed.subscribers)

    def _extras(self, record: Record) -> Extras:
        book = self._book.get(record.market)
        best = book.units[0] if book is not None and book.units else None
        return Extras(
            warning=self.warnings.get(record.market, False),
            last_side=self._side.get(record.market),
            best_ask=(best.ask_price, best.ask_size) if best else None,
            best_bid=(best.bid_price, best.bid_size) if best else None,
        )

    async def _fetch(self, feed: _Feed) -> None:
        kind, market = feed.pair
        self.fetches += 1
        try:
            record = await self._fetch_record(kind, market)
        except MarketspineError as exc:
            logger.warning("no snapshot for %s %s: %s", kind, market, exc)
            record = None
        finally:
            feed.fetch = None
        if record is None:
            return
        if feed.last is None:
            feed.last = record
            if isinstance(record, Trade):  # the stream is yet to meet it
                feed.join = TradeJoin(record, hold_max=self._join_hold_max)
        rendered = Rendered(record, self._extras(record))
        for subscriber in list(feed.subscribers):
            if subscriber.owes_snapshot(feed.pair):
                subscriber.offer(feed.pair, rendered)
        feed.owing = any(s.owes_snapshot(feed.pair) for s in feed.subscribers)

    async def _fetch_record(self, kind: str, market: str) -> Record | None:
        """The current state of a pair from the Spine: live while watched, else REST
        through the shared budget."""
        spine = self._spine
        if kind == "ticker":
            return await spine.ticker(market)
        if kind == "orderbook":
            return await spine.orderbook(market)
        if kind == "trade":
            trades = await spine.trades(market, 1)
            return trades[0] if trades else None
        candles = await spine.candles(market, timeframe_of(kind), count=1)
        return candles[-1] if candles else None

    async def aclose(self) -> None:
        """Stop every feed (without unwatching: the Spine closes next)."""
        self._closed = True
        for feed in self._feeds.values():
            if feed.linger is not None:
                feed.linger.cancel()
        self._feeds.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
