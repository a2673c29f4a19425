"""``Replay``: a recording played back as the events ``Spine.stream`` yields live — Trade,
Ticker, Orderbook, forming ``Candle`` and ``ClosedCandle`` for candle kinds, and a ``Gap``
(``complete=False``) where the recording holds a known trade gap — in exchange time order
across markets, paced by a clock.

Each (market, kind) is read from the store in batches (``_store.recording_reads``) and the
streams are merged by a heap keyed on exchange time, so memory holds one batch per stream
whatever the length of the range. At the same millisecond a gap comes before the trade
after it, then the trades, then the books and tickers they moved.

Candle kinds are built from the replayed trades: a forming ``Candle`` after each trade that
changes it, and a ``ClosedCandle`` once replay time reaches its window's end (or the end of
the range covers it): equal to Upbit's REST candle of the window when the recording of it
is complete (``marketspine verify`` checks that).

Pacing (``ReplayClock``): at ``speed`` x, an event at exchange time ``t`` is handed out
``(t - start) / speed`` after the first one was asked for, on an injectable ``clock`` and
``sleep`` (tests drive both by hand); ``speed`` 0 hands events out as fast as they are
read. A consumer slower than the speed holds replay time back rather than losing events,
and the schedule then continues from where it is (no burst to catch up).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._base.args import kinds_arg, markets_arg, number_arg, time_arg
from .._base.time import format_utc
from .._base.timeframes import Timeframe, timeframe_of_kind
from .._live.candle_feed import ClosedCandle
from .._live.listener import Gap
from .._store.recording import RecordedKind, RecordingStore, TradeGap
from .._store.recording_reads import (
    BATCH_SIZE,
    book_batches,
    recorded_markets,
    ticker_batches,
    trade_batches,
)
from ..errors import InvalidRequestError
from ..records import Candle, Orderbook, Ticker, Trade

__all__ = [
    "RECORDED_TABLES",
    "REPLAY_KINDS",
    "CandleBuilder",
    "Replay",
    "ReplayClock",
    "ReplayEvent",
    "check_replay",
    "replay_events",
]

REPLAY_KINDS = ("trade", "orderbook", "ticker")  # and candle.<timeframe>
# A kind -> the table its records are kept in (candle kinds are built from trades).
RECORDED_TABLES: dict[str, RecordedKind] = {
    "trade": "trades",
    "orderbook": "orderbooks",
    "ticker": "tickers",
}
ReplayEvent = Trade | Ticker | Orderbook | Candle | ClosedCandle | Gap
# Behind schedule by more than this, the schedule moves (no burst after a slow consumer).
_MAX_LAG_S = 0.25
T = TypeVar("T")
_RANK = {"gap": 0, "trade": 1, "orderbook": 2, "ticker": 3}


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """A checked replay request."""

    kinds: list[str]
    markets: list[str]
    start_ms: int
    end_ms: int
    speed: float


async def check_replay(
    recording: RecordingStore,
    kinds: object,
    markets: object,
    start: object,
    end: object,
    speed: object,
) -> ReplayPlan:
    """The request checked: known kinds (``trade``, ``ticker``, ``orderbook``,
    ``candle.<timeframe>``), markets the recording holds, ``start`` before ``end``, a finite
    ``speed`` >= 0. Raises InvalidRequestError naming what was wrong and what is accepted."""
    kind_list = kinds_arg(kinds)
    wrong = [k for k in kind_list if k not in REPLAY_KINDS and not k.startswith("candle.")]
    if wrong:
        raise InvalidRequestError(
            f"cannot replay {', '.join(wrong)}: expected {', '.join(REPLAY_KINDS)} or "
            "candle.<timeframe>"
        )
    codes = markets_arg(markets)
    start_ms, end_ms = time_arg(start, "start"), time_arg(end, "end")
    if start_ms is None:
        raise InvalidRequestError("replay needs a start (the time to play back from)")
    if end_ms is not None and start_ms >= end_ms:
        raise InvalidRequestError(
            f"start must be before end (start {format_utc(start_ms)}, end {format_utc(end_ms)})"
        )
    rate = number_arg(speed, "speed")
    held = await recorded_markets(recording)
    unknown = [c for c in codes if c not in held]
    if unknown:
        shown = ", ".join(held[:20]) + (" ..." if len(held) > 20 else "") if held else "none"
        raise InvalidRequestError(
            f"{', '.join(unknown)} not in the recording (it holds: {shown}); "
            "record it first with `marketspine record`"
        )
    spans = [
        span
        for kind in {RECORDED_TABLES.get(k, "trades") for k in kind_list}
        for code in codes
        if (span := await recording.time_span(kind, code)) is not None
    ]
    if end_ms is None:  # the end of what is recorded of these kinds and markets
        end_ms = max([*(last + 1 for _, last in spans), start_ms + 1])
    if not any(first < end_ms and last >= start_ms for first, last in spans):
        holds = (
            f"it holds {format_utc(min(s[0] for s in spans))} to "
            f"{format_utc(max(s[1] for s in spans))}"
            if spans
            else "it holds none of them"
        )
        raise InvalidRequestError(
            f"nothing of {', '.join(kind_list)} for {', '.join(codes)} was recorded from "
            f"{format_utc(start_ms)} to {format_utc(end_ms)}: {holds}"
        )
    return ReplayPlan(kind_list, codes, start_ms, end_ms, rate)


class ReplayClock:
    """Replay time: where the replay stands in exchange time (UTC ms), and the pacing.

    ``now_ms`` is the time of the last event handed out; while waiting for the next one at
    ``speed`` > 0 it moves on with ``clock`` (monotonic seconds), up to that event. Before
    the first event it is ``start_ms``; once the range is played, ``end_ms``."""

    def __init__(
        self,
        start_ms: int,
        end_ms: int,
        speed: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.speed = speed
        self._clock = clock
        self._sleep = sleep
        self._base: tuple[float, int] | None = None  # (wall seconds, exchange ms) at a mark
        self._at_ms = start_ms  # the last event handed out
        self._next_ms = start_ms  # the event being waited for
        self.started = False
        self.finished = False

    @property
    def now_ms(self) -> int:
        """Replay time now (see the class)."""
        if self.finished:
            return self.end_ms
        if self._base is None or self.speed <= 0:
            return self._at_ms
        wall, ms = self._base
        paced = ms + int((self._clock() - wall) * 1000 * self.speed)
        return max(self._at_ms, min(paced, self._next_ms))

    def begin(self) -> None:
        """The replay starts now (at ``start_ms``)."""
        self.started = True
        self._base = (self._clock(), self.start_ms)

    async def reach(self, ms: int) -> None:
        """Wait until replay time may reach ``ms`` (not at all at speed 0), then stand there."""
        if self._base is None:
            self.begin()
        if self.speed > 0 and ms > self._at_ms:
            assert self._base is not None
            self._next_ms = ms
            wall, at = self._base
            delay = wall + (ms - at) / 1000 / self.speed - self._clock()
            if delay > 0:
                await self._sleep(delay)
            elif delay < -_MAX_LAG_S:  # the consumer held us back: go on from here
                self._base = (self._clock(), ms)
        if ms > self._at_ms:
            self._at_ms = ms
        self._next_ms = self._at_ms

    def finish(self) -> None:
        self.finished = True
        self._at_ms = self._next_ms = self.end_ms


@dataclass(slots=True)
class _Forming:
    candle: Candle
    end_ms: int


@dataclass
class CandleBuilder:
    """Forming and closed candles of ``timeframes`` from trades (pure)."""

    timeframes: Sequence[Timeframe]
    _forming: dict[tuple[str, str], _Forming] = field(default_factory=dict)
    _next_close: int | None = None

    def trade(self, trade: Trade) -> list[Candle | ClosedCandle]:
        """The events ``trade`` makes: closed candles of windows it is past, then the
        forming candle of each timeframe it changes."""
        out: list[Candle | ClosedCandle] = list(self.close_until(trade.ms))
        price, volume = trade.price, trade.volume
        for tf in self.timeframes:
            key = (trade.market, tf.name)
            start = tf.floor(trade.ms)
            held = self._forming.get(key)
            if held is not None and start < held.candle.start_ms:
                continue  # a late trade of a window already closed: it changes nothing
            if held is None or held.candle.start_ms != start:
                candle = Candle(
                    trade.market, tf.name, start, price, price, price, price, volume,
                    price * volume, trade.ms,
                )  # fmt: skip
                end = tf.next_start(start)
                self._forming[key] = _Forming(candle, end)
                if self._next_close is None or end < self._next_close:
                    self._next_close = end
            else:
                c = held.candle
                candle = Candle(
                    c.market, c.timeframe, c.start_ms, c.open, max(c.high, price),
                    min(c.low, price), price, c.volume + volume, c.value + price * volume,
                    max(c.last_trade_ms, trade.ms),
                )  # fmt: skip
                held.candle = candle
            out.append(candle)
        return out

    def close_until(self, ms: int) -> list[ClosedCandle]:
        """Closed candles of the windows that end at or before ``ms``, by end then market."""
        if self._next_close is None or ms < self._next_close:
            return []
        done = sorted(
            ((f.end_ms, key) for key, f in self._forming.items() if f.end_ms <= ms),
        )
        closed = [ClosedCandle(self._forming.pop(key).candle) for _, key in done]
        self._next_close = min((f.end_ms for f in self._forming.values()), default=None)
        return closed


# A heap entry: (exchange ms, kind rank, tie-break, stream index); the event itself waits
# at the head of its stream's queue, so events are never compared.
_Key = tuple[int, int, int, int]


class Replay:
    """One playback of ``plan`` from ``recording``: ``events()`` once, ``clock`` for
    where it stands, ``delivered`` counts the events handed out."""

    def __init__(
        self,
        recording: RecordingStore,
        plan: ReplayPlan,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.plan = plan
        self.clock = ReplayClock(plan.start_ms, plan.end_ms, plan.speed, clock=clock, sleep=sleep)
        self.delivered = 0
        self._recording = recording
        self._batch_size = batch_size

    async def events(self) -> AsyncGenerator[ReplayEvent, None]:
        """The recording's events of the plan in exchange time order, paced."""
        plan = self.plan
        frames = [timeframe_of_kind(k) for k in plan.kinds if k.startswith("candle.")]
        candles = CandleBuilder(frames) if frames else None
        plain = set(plan.kinds)
        sources: list[AsyncIterator[list[tuple[_Key, Any]]]] = []
        for market in plan.markets:
            if "trade" in plain or candles is not None:
                sources.append(self._trades(market, len(sources)))
                if "trade" in plain:
                    gaps = await self._recording.trade_gaps(market)
                    sources.append(self._gaps(gaps, len(sources)))
            if "ticker" in plain:
                sources.append(self._keyed(ticker_batches, market, "ticker", len(sources)))
            if "orderbook" in plain:
                sources.append(self._keyed(book_batches, market, "orderbook", len(sources)))
        pass_trades = "trade" in plain
        clock = self.clock
        clock.begin()
        async for event in _merge(sources):
            ms = event.until_ms if isinstance(event, Gap) else event.ms
            await clock.reach(ms)
            if candles is not None:
                for item in candles.close_until(ms):
                    self.delivered += 1
                    yield item
                if isinstance(event, Trade):
                    if pass_trades:
                        self.delivered += 1
                        yield event
                    for made in candles.trade(event):
                        self.delivered += 1
                        yield made
                    continue
            self.delivered += 1
            yield event
        if candles is not None:
            for item in candles.close_until(plan.end_ms):
                self.delivered += 1
                yield item
        clock.finish()

    async def _trades(self, market: str, index: int) -> AsyncIterator[list[tuple[_Key, Any]]]:
        plan = self.plan
        async for batch in trade_batches(
            self._recording, market, plan.start_ms, plan.end_ms, self._batch_size
        ):
            yield [((t.ms, 1, t.seq, index), t) for t in batch]

    async def _gaps(
        self, gaps: list[TradeGap], index: int
    ) -> AsyncIterator[list[tuple[_Key, Any]]]:
        plan = self.plan
        batch = [
            (
                (g.to_ms, 0, g.to_seq, index),
                Gap(g.market, g.from_ms, g.to_ms, 0, complete=False, reason=g.reason),
            )
            for g in gaps
            if plan.start_ms <= g.to_ms < plan.end_ms
        ]
        if batch:
            yield sorted(batch, key=lambda item: item[0])

    async def _keyed(
        self,
        read: Callable[[RecordingStore, str, int, int, int], AsyncIterator[Sequence[Any]]],
        market: str,
        kind: str,
        index: int,
    ) -> AsyncIterator[list[tuple[_Key, Any]]]:
        plan, rank = self.plan, _RANK[kind]
        async for batch in read(
            self._recording, market, plan.start_ms, plan.end_ms, self._batch_size
        ):
            yield [((r.ms, rank, 0, index), r) for r in batch]


async def replay_events(
    recording: RecordingStore,
    kinds: Sequence[str],
    markets: Sequence[str],
    start_ms: int,
    end_ms: int,
    speed: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[ReplayEvent]:
    """The recorded ``kinds`` of ``markets`` at ``[start_ms, end_ms)`` in exchange time order,
    paced at ``speed`` (0: unpaced): ``Replay`` without its checks (the caller made them)."""
    plan = ReplayPlan(list(kinds), list(markets), start_ms, end_ms, speed)
    async for event in Replay(recording, plan, clock=clock, sleep=sleep).events():
        yield event


async def _ahead(source: AsyncIterator[list[T]]) -> AsyncIterator[list[T]]:
    """The batches of ``source``, the next one read while the current one is used (the
    store reads on its own thread meanwhile)."""
    pending = asyncio.ensure_future(anext(source, None))
    try:
        while True:
            await asyncio.wait([pending])
            batch = pending.result()
            if batch is None:
                return
            pending = asyncio.ensure_future(anext(source, None))
            yield batch
    finally:
        pending.cancel()


async def _merge(sources: list[AsyncIterator[list[tuple[_Key, Any]]]]) -> AsyncIterator[Any]:
    """The items of every source, smallest key first; each source is sorted by key and
    read one batch at a time (heapq.merge, over batches read asynchronously)."""
    sources = [_ahead(source) for source in sources]
    queues: list[deque[tuple[_Key, Any]]] = []
    heap: list[_Key] = []
    for source in sources:
        queue: deque[tuple[_Key, Any]] = deque()
        queues.append(queue)
        batch = await anext(source, None)
        if batch:
            queue.extend(batch)
            heap.append(queue[0][0])
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        key = pop(heap)
        queue = queues[key[3]]
        _, item = queue.popleft()
        if not queue:
            batch = await anext(sources[key[3]], None)
            if batch:
                queue.extend(batch)
        if queue:
            push(heap, queue[0][0])
        yield item
