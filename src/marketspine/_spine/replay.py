"""``Spine.replay``: a recording played back as the live stream delivered it — the same records
(``Trade``, ``Orderbook``, ``Ticker``) and a ``Gap`` (``complete=False``) before the first
trade after each known gap — in exchange time order across markets.

The range is read a UTC day at a time (a day of every market and kind in memory, not the
range), merged by (time, kind, sequential_id). ``speed`` paces the events on the replay clock:
an event ``t`` ms after ``start`` is handed out ``t / speed`` ms after the first one (10: ten
times faster than it happened); 0 hands them out as fast as they are taken.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from .._base.time import DAY_MS
from .._live.listener import Gap
from .._store.recording import RecordedKind, RecordingStore, TradeGap
from ..records import Orderbook, Ticker, Trade

__all__ = ["RECORDED_TABLES", "REPLAY_KINDS", "replay_events"]

REPLAY_KINDS = ("trade", "orderbook", "ticker")
# A stream kind → the table its records are kept in.
RECORDED_TABLES: dict[str, RecordedKind] = {
    "trade": "trades",
    "orderbook": "orderbooks",
    "ticker": "tickers",
}
_RANK = {"trade": 0, "orderbook": 1, "ticker": 2}  # at one ms: the trade, then what it moved

Replayed = Trade | Orderbook | Ticker | Gap


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
) -> AsyncIterator[Replayed]:
    """The recorded ``kinds`` of ``markets`` at ``[start_ms, end_ms)`` in exchange time
    order, paced at ``speed`` (0: unpaced)."""
    gaps: dict[tuple[str, int], TradeGap] = {}
    if "trade" in kinds:
        for market in markets:
            for gap in await recording.trade_gaps(market):
                if start_ms <= gap.to_ms < end_ms:
                    gaps[(market, gap.to_seq)] = gap
    started = clock()  # the replay clock stands at start_ms now
    day = start_ms
    while day < end_ms:
        cut = min(end_ms, day // DAY_MS * DAY_MS + DAY_MS)
        lists: list[list[tuple[int, int, int, Replayed]]] = []
        for market in markets:
            if "trade" in kinds:
                trades = await recording.trades(market, day, cut)
                lists.append([(t.ms, 0, t.seq, t) for t in trades])
            if "orderbook" in kinds:
                books = await recording.orderbooks(market, day, cut)
                lists.append([(b.ms, 1, 0, b) for b in books])
            if "ticker" in kinds:
                tickers = await recording.tickers(market, day, cut)
                lists.append([(t.ms, 2, 0, t) for t in tickers])
        for ms, _, _, event in heapq.merge(*lists, key=lambda row: row[:3]):
            if speed > 0:
                now = clock()
                due = started + (ms - start_ms) / 1000 / speed
                if due > now:
                    await sleep(due - now)
            if isinstance(event, Trade):
                hole = gaps.get((event.market, event.seq))
                if hole is not None:
                    yield Gap(event.market, hole.from_ms, hole.to_ms, 0, False, hole.reason)
            yield event
        day = cut
