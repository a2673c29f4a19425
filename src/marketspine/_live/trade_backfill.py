"""A recording's holes filled from REST at LOW priority: the known gaps of a market, and the
span between the backfill horizon (at most the seven days of trades Upbit serves) and its
first stored trade.

Both walk Upbit's trade pages back by ``sequential_id`` from the stored trade after the hole
and write page by page, each page with what is left of the gap in ONE transaction, so a
killed backfill resumes where it stopped, and a gap only ever shrinks. Whatever the walk
cannot reach (older than the horizon, or REST failing) stays a known gap, its reason saying
why. Never raises for upstream trouble.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._budget.rules import Priority
from .._store.recording import RecordingStore, TradeGap
from .._store.room import write_when_room
from ..errors import MarketspineError
from ..records import Trade
from .trade_fill import FILL_PAGE_SIZE, TradeSource

__all__ = ["BackfillReport", "backfill_market"]

log = logging.getLogger("marketspine.record")


@dataclass
class BackfillReport:
    """What one market's backfill did."""

    market: str
    trades: int = 0  # new trades stored
    calls: int = 0  # REST pages asked for
    gaps_closed: int = 0
    gaps_left: int = 0


async def backfill_market(
    client: TradeSource,
    recording: RecordingStore,
    market: str,
    *,
    horizon_ms: int,
    wall_ms: Callable[[], int],
    before_first: bool = True,
    report: BackfillReport | None = None,
) -> BackfillReport:
    """Fill the known gaps of ``market`` that end after ``horizon_ms``, then (with
    ``before_first``) the span from ``horizon_ms`` to its first stored trade (nothing when
    none is stored). Counts into ``report`` when given."""
    report = report or BackfillReport(market)
    for gap in await recording.trade_gaps(market):
        if gap.to_ms >= horizon_ms:
            await _fill_gap(client, recording, gap, horizon_ms, report, wall_ms)
    first = await recording.first_trade(market) if before_first else None
    if first is not None and first.ms >= horizon_ms:
        ok, reason = await _walk(
            client,
            market,
            first.seq,
            lambda t: t.ms < horizon_ms,
            lambda page: _store(recording, page, report),
            report,
        )
        if not ok and not reason.startswith("REST history ended"):
            log.warning("record: backfill of %s before its first trade stopped: %s", market, reason)
    return report


async def _store(
    recording: RecordingStore,
    page: list[Trade],
    report: BackfillReport,
    closed: TradeGap | None = None,
    left: TradeGap | None = None,
) -> None:
    report.trades += await write_when_room(  # on a full disk: the page waits for room
        lambda: recording.write(
            page, closed_gaps=[closed] if closed else [], gaps=[left] if left else []
        )
    )


async def _fill_gap(
    client: TradeSource,
    recording: RecordingStore,
    gap: TradeGap,
    horizon_ms: int,
    report: BackfillReport,
    wall_ms: Callable[[], int],
) -> None:
    current = gap

    async def page_in(page: list[Trade]) -> None:
        nonlocal current
        oldest = page[-1]  # pages come newest first
        left = dataclasses.replace(current, to_seq=oldest.seq, to_ms=oldest.ms)
        await _store(recording, page, report, current, left)
        current = left

    ok, reason = await _walk(
        client,
        gap.market,
        gap.to_seq,
        lambda t: t.seq == gap.from_seq or t.ms < gap.from_ms or t.ms < horizon_ms,
        page_in,
        report,
        met=lambda t: t.seq == gap.from_seq or t.ms < gap.from_ms,
    )
    if ok:
        await recording.write(closed_gaps=[current])
        report.gaps_closed += 1
        log.info("record: the gap of %s before sequential_id %d is filled", gap.market, gap.to_seq)
        return
    report.gaps_left += 1
    why = reason if reason else "older than the trades Upbit serves (7 days)"
    await recording.write(gaps=[dataclasses.replace(current, reason=why, found_ms=wall_ms())])


async def _walk(
    client: TradeSource,
    market: str,
    cursor: int,
    stop: Callable[[Trade], bool],
    page_in: Callable[[list[Trade]], Awaitable[None]],
    report: BackfillReport,
    *,
    met: Callable[[Trade], bool] = lambda t: True,
) -> tuple[bool, str]:
    """Page back from the trade ``cursor`` until a trade ``stop``s the walk; hands each page's
    trades before that one to ``page_in`` (newest first). Returns whether the stopping trade
    was ``met`` (the walk came through), else why not ("" when it merely passed a limit)."""
    while True:
        report.calls += 1
        try:
            page = await client.trades(
                market, count=FILL_PAGE_SIZE, cursor=cursor, priority=Priority.LOW
            )
        except MarketspineError as exc:
            return False, f"REST trades failed: {exc}"
        kept: list[Trade] = []
        ended: Trade | None = None
        for trade in page:
            if stop(trade):
                ended = trade
                break
            kept.append(trade)
        if kept:
            await page_in(kept)
        if ended is not None:
            return met(ended), ""
        if len(page) < FILL_PAGE_SIZE:
            return False, "REST history ended (Upbit serves the last 7 days of trades)"
        cursor = page[-1].seq
