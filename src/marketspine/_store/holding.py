"""Reads through a full disk. A page fetched for a reader while the store has no room is
held in memory and answered from, merged into the store's own reads and coverage, rather
than fetched and then refused (a 503 under serve): what upstream already answered is not
asked again, and the reader gets it. Held pages are written, oldest first, at the next write
that finds room; at most ``max_candles`` are held, and past that the write is refused as
the store refused it. At close, what is held is written if there is room by then; what
still finds none is not stored (nor is its coverage: it is fetched again when next asked)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .._base.coverage import Coverage, Range
from .._base.timeframes import Timeframe
from ..errors import StoreError, StoreFullError
from ..records import Candle
from .derive import merged
from .sqlite import CandleStore, RunRecord, SeriesSummary

__all__ = ["MAX_HELD_CANDLES", "HoldingStore"]

log = logging.getLogger("marketspine.store")

# About 30 MB of candles: a few hundred chart reads while an operator makes room.
MAX_HELD_CANDLES = 100_000


@dataclass(frozen=True)
class _Page:
    market: str
    timeframe: Timeframe
    candles: tuple[Candle, ...]
    covered: Range
    listing_ms: int | None


class HoldingStore:
    """A ``CandleStore`` over ``store`` that holds pages ``store`` refused for lack of room
    (StoreFullError) and answers from them until they are written. Everything else is
    ``store``'s own; closing it closes nothing (``store`` has its owner)."""

    def __init__(self, store: CandleStore, *, max_candles: int = MAX_HELD_CANDLES) -> None:
        self._store = store
        self._max_candles = max_candles
        self._held: list[_Page] = []
        self._writing = asyncio.Lock()  # one writer of held pages at a time, in order

    @property
    def held_candles(self) -> int:
        """Candles fetched while there was no room and not yet written."""
        return sum(len(page.candles) for page in self._held)

    async def write_page(
        self,
        market: str,
        timeframe: Timeframe,
        candles: Sequence[Candle],
        covered: Range,
        *,
        listing_ms: int | None = None,
    ) -> None:
        """``store.write_page``; when it has no room, the page is held (StoreFullError only
        past ``max_candles``)."""
        page = _Page(market, timeframe, tuple(candles), covered, listing_ms)
        if self._held:  # the usual case takes no lock: writes as concurrent as the store's
            async with self._writing:
                if self._held and not await self._write_held():
                    self._hold(page, None)  # still no room: tried just now
                    return
        try:
            await self._write(page)
        except StoreFullError as error:
            self._hold(page, error)

    async def read(
        self, market: str, timeframe: Timeframe, start_ms: int, end_ms: int
    ) -> list[Candle]:
        rows = await self._store.read(market, timeframe, start_ms, end_ms)
        held = [
            c
            for page in self._pages_of(market, timeframe)
            for c in page.candles
            if start_ms <= c.start_ms < end_ms
        ]
        return merged(rows, held) if held else rows  # the later fetch wins

    async def coverage(self, market: str, timeframe: Timeframe) -> Coverage:
        stored = await self._store.coverage(market, timeframe)
        pages = self._pages_of(market, timeframe)
        if not pages:
            return stored
        held = Coverage.of(p.covered for p in pages)
        for page in pages:
            if page.listing_ms is not None:
                held = held.with_listing(page.listing_ms)
        return stored.union(held)

    async def set_listing(self, market: str, timeframe: Timeframe, start_ms: int) -> None:
        await self._store.set_listing(market, timeframe, start_ms)

    async def listing(self, market: str, timeframe: Timeframe) -> int | None:
        return (await self.coverage(market, timeframe)).listing_ms

    async def summary(self) -> list[SeriesSummary]:
        return await self._store.summary()

    async def set_delisted(self, market: str, seen_ms: int) -> None:
        await self._store.set_delisted(market, seen_ms)

    async def delisted(self) -> dict[str, int]:
        return await self._store.delisted()

    async def add_run(self, run: RunRecord) -> None:
        await self._store.add_run(run)

    async def runs(self, kind: str, limit: int = 100) -> list[RunRecord]:
        return await self._store.runs(kind, limit)

    async def run_history(self) -> list[RunRecord]:
        return await self._store.run_history()

    async def merge_runs(self, runs: Sequence[RunRecord]) -> int:
        return await self._store.merge_runs(runs)

    async def aclose(self) -> None:
        """Write what is held if there is room now; ``store`` stays open."""
        async with self._writing:
            try:
                written = not self._held or await self._write_held()
            except StoreError as exc:
                log.warning("writing held candles failed: %s", exc)
                written = False
            if not written:
                log.warning(
                    "%d candles fetched while the candle database had no room were not "
                    "stored; they are fetched again when next asked for",
                    self.held_candles,
                    extra={"event": "held_candles_dropped"},
                )

    def _pages_of(self, market: str, timeframe: Timeframe) -> list[_Page]:
        return [p for p in self._held if p.market == market and p.timeframe == timeframe]

    def _hold(self, page: _Page, error: StoreFullError | None) -> None:
        held = self.held_candles
        if held + len(page.candles) > self._max_candles:
            raise error or StoreFullError(
                f"the candle database has no room and {held} candles fetched "
                "meanwhile are held in memory already; make room on its disk"
            )
        self._held.append(page)

    async def _write(self, page: _Page) -> None:
        await self._store.write_page(
            page.market, page.timeframe, page.candles, page.covered, listing_ms=page.listing_ms
        )

    async def _write_held(self) -> bool:
        """Write held pages oldest first; False when the store still has no room."""
        while self._held:
            try:
                await self._write(self._held[0])
            except StoreFullError:
                return False
            self._held.pop(0)
        return True
