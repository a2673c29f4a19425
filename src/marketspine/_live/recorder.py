"""``Recorder``: the events of a live stream written to a ``RecordingStore``, every trade once.

The stream already delivers each market's trades gapless and in order (holes after a
reconnect are filled from REST; ``since`` joins a restart to the last stored trade). What
it could not fill comes as a ``Gap`` with ``complete=False``; a consumer that fell behind
gets an ``Overflow`` instead of the trades its queue dropped. The recorder turns both into
facts of the record: after an ``Overflow`` it walks REST back from the next trade to the last
one it holds (as the stream does after a reconnect), and whatever is still missing becomes a
known gap (``TradeGap``) between the two stored trades around it, stored in the same
transaction as the trade after it, logged as ``trade_gap_recorded`` (an alert with
``--notify``). A hole is never skipped silently.

Consuming and writing run side by side: events go into a batch, and one writer commits a
batch at a time (``batch_trades`` trades, or whatever came within ``flush_every_s``), in the
order the events came, so what a killed recorder left behind is a prefix of what it was
given, and a rerun joins right after its last trade. Books are kept at most one per
``orderbook_every_ms`` of exchange time per market (0: every change); tickers all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from .._base.groups import first_leaf
from .._base.time import now_ms
from .._store.recording import RecordingStore, TradeGap, WriterFence
from .._store.room import write_when_room
from ..records import Orderbook, Ticker, Trade
from .listener import Gap, Health, Overflow
from .trade_fill import TradeSource, walk_back

__all__ = ["RecordCounts", "Recorder"]

log = logging.getLogger("marketspine.record")

BATCH_TRADES = 5000  # trades per transaction at most (a busy minute of the whole KRW market)
FLUSH_EVERY_S = 0.5  # what came within this is committed together
# Events held unwritten before consuming waits for the writer (a full disk, a slow one):
# the stream's queue holds on, then overflows, and the trades it dropped are walked back
# from REST once the writer took the batch.
MAX_HELD = 20 * BATCH_TRADES


@dataclass
class RecordCounts:
    """What a recorder has committed so far."""

    trades: int = 0  # new trade rows (a trade already stored is not counted again)
    orderbooks: int = 0
    tickers: int = 0
    gaps: int = 0  # known gaps recorded
    batches: int = 0
    filled: int = 0  # trades fetched from REST after an Overflow
    markets: set[str] = field(default_factory=set)  # markets with a trade recorded


@dataclass(frozen=True, slots=True)
class _Hole:
    """Trades of a market are missing before its next trade: ``walk`` says whether to try
    REST first (after an Overflow; the stream already tried for an incomplete Gap)."""

    reason: str
    walk: bool


class Recorder:
    """Writes what ``run`` is given into ``recording``. ``last`` holds each market's last
    stored trade (holes are measured from it); ``client`` fills a hole an Overflow left;
    ``fence`` goes with every write (``record --redis``: a lost lease ends the run with
    FencedError at its next write)."""

    def __init__(
        self,
        recording: RecordingStore,
        client: TradeSource | None,
        *,
        last: Mapping[str, Trade] | None = None,
        orderbook_every_ms: int = 0,
        batch_trades: int = BATCH_TRADES,
        flush_every_s: float = FLUSH_EVERY_S,
        wall_ms: Callable[[], int] = now_ms,
        fence: WriterFence | None = None,
    ) -> None:
        self._recording = recording
        self._client = client
        self._last: dict[str, Trade] = dict(last or {})
        self._book_every_ms = orderbook_every_ms
        self._batch_trades = batch_trades
        self._flush_every_s = flush_every_s
        self._wall_ms = wall_ms
        self._fence = fence
        self._holes: dict[str, _Hole] = {}
        self._book_kept: dict[str, int] = {}  # per market, ms of the last book kept
        # The batch being filled.
        self._trades: list[Trade] = []
        self._books: list[Orderbook] = []
        self._tickers: list[Ticker] = []
        self._gaps: list[TradeGap] = []
        self._wake = asyncio.Event()  # a batch is full, or the run ends
        self._room = asyncio.Event()  # the writer took a batch
        self._closing = False
        self._stored: dict[str, asyncio.Event] = {}
        self.counts = RecordCounts()

    # -- running ---------------------------------------------------------------------------

    async def run(self, events: AsyncIterator[object], stop: asyncio.Event) -> RecordCounts:
        """Record ``events`` until they end or ``stop`` is set, then commit what is held and
        return the counts. A failing write (StoreError) ends the run and propagates."""
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write_loop())
                consumer = group.create_task(self._consume(events))
                stopping = group.create_task(stop.wait())
                await asyncio.wait({consumer, stopping, writer}, return_when="FIRST_COMPLETED")
                consumer.cancel()
                stopping.cancel()
                self._closing = True
                self._wake.set()
        except BaseExceptionGroup as group_error:
            raise first_leaf(group_error) from None
        return self.counts

    async def committed_trade(self, market: str) -> None:
        """Return once this recorder has committed a trade of ``market`` (the stream's join
        to what was stored before, with its gap if any, is then in the store)."""
        await self._stored.setdefault(market, asyncio.Event()).wait()

    async def _consume(self, events: AsyncIterator[object]) -> None:
        async for event in events:
            if isinstance(event, Trade):
                await self._take_trade(event)
            elif isinstance(event, Orderbook):
                kept = self._book_kept.get(event.market)
                if kept is None or event.ms >= kept + self._book_every_ms:
                    self._book_kept[event.market] = event.ms
                    self._books.append(event)
            elif isinstance(event, Ticker):
                self._tickers.append(event)
            elif isinstance(event, Gap):
                if not event.complete:
                    self._holes[event.market] = _Hole(event.reason, walk=False)
            elif isinstance(event, Overflow):
                if event.kind in ("trade", "gap") and event.market:
                    reason = f"the recorder fell behind and {event.dropped} events were dropped"
                    self._holes[event.market] = _Hole(reason, walk=True)
            elif isinstance(event, Health):
                log.debug("record: stream %s: %s", event.state, event.reason)
            if len(self._trades) >= self._batch_trades:
                self._wake.set()
                await asyncio.sleep(0)  # the writer takes the batch before more comes
            while len(self._trades) + len(self._books) + len(self._tickers) >= MAX_HELD:
                self._room.clear()
                await self._room.wait()

    async def _take_trade(self, trade: Trade) -> None:
        market = trade.market
        last = self._last.get(market)
        hole = self._holes.pop(market, None)
        after = trade
        if hole is not None and last is not None:
            reason = hole.reason
            if hole.walk:
                walk = await walk_back(self._client, market, last, trade)
                self._trades.extend(walk.trades)
                self.counts.filled += len(walk.trades)
                if walk.trades:
                    after = walk.trades[0]
                reason = "" if walk.complete else f"{reason}; {walk.reason}"
            if reason:
                self._gaps.append(
                    TradeGap(
                        market, last.seq, after.seq, last.ms, after.ms, reason, self._wall_ms()
                    )
                )
        self._trades.append(trade)
        if last is None or trade.seq > last.seq:
            self._last[market] = trade

    # -- writing ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_every_s):
                        await self._wake.wait()
            self._wake.clear()
            closing = self._closing  # read before the write: what comes after is not ours
            await self._flush()
            if closing:
                return

    async def _flush(self) -> None:
        trades, books, tickers, gaps = self._trades, self._books, self._tickers, self._gaps
        if not (trades or books or tickers or gaps):
            return
        self._trades, self._books, self._tickers, self._gaps = [], [], [], []
        self._room.set()
        started = time.perf_counter()
        # On a full disk the batch is held and tried again (what comes meanwhile waits
        # behind it, up to MAX_HELD), unless the recorder is stopping.
        added = await write_when_room(
            lambda: self._recording.write(
                trades, orderbooks=books, tickers=tickers, gaps=gaps, fence=self._fence
            ),
            give_up=lambda: self._closing,
        )
        counts = self.counts
        counts.trades += added
        counts.orderbooks += len(books)
        counts.tickers += len(tickers)
        counts.gaps += len(gaps)
        counts.batches += 1
        log.debug(
            "record: %d trades (%d new), %d books, %d tickers in %.1f ms",
            len(trades), added, len(books), len(tickers), (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        for gap in gaps:
            log.warning(
                "trades of %s between sequential_id %d and %d (%d ms) could not be filled and "
                "are recorded as a known gap: %s",
                gap.market, gap.from_seq, gap.to_seq, gap.to_ms - gap.from_ms, gap.reason,
                extra={"event": "trade_gap_recorded", "key": gap.market,
                       "from_seq": gap.from_seq, "to_seq": gap.to_seq},
            )  # fmt: skip
        for market in {t.market for t in trades}:
            counts.markets.add(market)
            self._stored.setdefault(market, asyncio.Event()).set()
