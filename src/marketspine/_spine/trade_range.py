"""``Spine.trades(market, start=..., end=...)``: a range of trades, gapless, from the recording
and, for what it lacks within the days Upbit still serves, from REST.

What a recording holds is complete between its first and last trade except its known gaps.
So the holes of a range are: the part before the first stored trade, the part after the last
one, and the known gaps inside it. Each hole within REST's reach (the last seven UTC days) is
walked back by ``sequential_id`` from the trade after it; a known gap REST cannot reach stays
in the answer's ``meta.gaps``, and a range reaching before REST's horizon with nothing stored
there sets ``meta.unserved_before_ms``. Nothing read from REST is stored here: the recorder
and its backfill do that.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._base.time import DAY_MS, SECOND_MS
from .._budget.rules import Priority
from .._client.client import Client
from .._live.trade_fill import FILL_PAGE_SIZE
from .._store.recording import RecordingStore, TradeGap
from ..records import Trade
from .result import Trace

__all__ = ["REST_TRADE_DAYS", "TradeRange", "read_trade_range", "rest_trade_horizon"]

REST_TRADE_DAYS = 7  # Upbit serves the trades of today and the seven UTC days before


def rest_trade_horizon(now_ms: int) -> int:
    """The oldest trade time Upbit's REST still serves at ``now_ms``."""
    return now_ms // DAY_MS * DAY_MS - REST_TRADE_DAYS * DAY_MS


@dataclass(frozen=True, slots=True)
class TradeRange:
    """The trades of a range (ascending by ``sequential_id``) and the known gaps left in it."""

    trades: list[Trade]
    gaps: tuple[TradeGap, ...]
    unserved_before_ms: int | None


async def read_trade_range(
    client: Client,
    recording: RecordingStore,
    market: str,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    priority: Priority,
    trace: Trace,
) -> TradeRange:
    """Trades of ``market`` at ``[start_ms, end_ms)`` from ``recording`` and REST
    (``now_ms``: upstream's clock, which says how far back REST serves)."""
    stored = await recording.trades(market, start_ms, end_ms)
    if stored:
        trace.used("database")
    first = await recording.first_trade(market)
    last = await recording.last_trade(market)
    horizon = rest_trade_horizon(now_ms)
    found: dict[int, Trade] = {t.seq: t for t in stored}
    left: list[TradeGap] = []
    unserved: int | None = None
    # (cursor: the trade after the hole or None for the newest, the hole's lower bound in
    # time, the sequential_id of the stored trade before it or None)
    holes: list[tuple[int | None, int, int | None]] = []
    if first is None or last is None:
        holes.append((None, start_ms, None))
    else:
        if start_ms < first.ms:
            holes.append((first.seq, start_ms, None))
        if end_ms > last.ms:
            holes.append((None, max(start_ms, last.ms), last.seq))
    for gap in await recording.trade_gaps(market):
        if gap.to_ms < start_ms or gap.from_ms >= end_ms:
            continue
        if gap.to_ms < horizon:
            left.append(gap)
            continue
        met = await _walk(client, market, gap.to_seq, gap.from_ms, gap.from_seq, end_ms, found,
                          priority, trace, now_ms)  # fmt: skip
        if not met:
            left.append(gap)
    if start_ms < horizon and (first is None or start_ms < first.ms):
        unserved = horizon  # what lies before is unknown, not empty
    for cursor, lower, before in holes:
        if end_ms <= horizon:
            continue  # REST serves nothing of it
        await _walk(client, market, cursor, max(lower, start_ms, horizon), before, end_ms,
                    found, priority, trace, now_ms)  # fmt: skip
    trades = sorted((t for t in found.values() if start_ms <= t.ms < end_ms), key=lambda t: t.seq)
    return TradeRange(trades, tuple(left), unserved)


async def _walk(
    client: Client,
    market: str,
    cursor: int | None,
    lower_ms: int,
    before_seq: int | None,
    end_ms: int,
    found: dict[int, Trade],
    priority: Priority,
    trace: Trace,
    now_ms: int,
) -> bool:
    """Page REST back from ``cursor`` (else from the last trade before ``end_ms``) into
    ``found`` until a trade older than ``lower_ms`` or the trade ``before_seq``; whether it
    got there (not when REST's history ended first)."""
    if cursor is None:
        page = await _last_page_before(client, market, end_ms, now_ms, priority, trace)
    else:
        page = await _page(client, market, cursor, priority, trace)
    while True:
        for trade in page:
            if trade.seq == before_seq or trade.ms < lower_ms:
                return True
            if trade.ms < end_ms:
                found.setdefault(trade.seq, trade)
        if len(page) < FILL_PAGE_SIZE:
            return False
        page = await _page(client, market, page[-1].seq, priority, trace)


async def _page(
    client: Client, market: str, cursor: int | None, priority: Priority, trace: Trace
) -> list[Trade]:
    page = await client.trades(market, count=FILL_PAGE_SIZE, cursor=cursor, priority=priority)
    trace.calls += 1
    trace.used("rest")
    return page


async def _last_page_before(
    client: Client, market: str, end_ms: int, now_ms: int, priority: Priority, trace: Trace
) -> list[Trade]:
    """The page of trades just before ``end_ms``, newest first: Upbit's ``days_ago`` and
    ``to`` (a time of that UTC day) jump there instead of walking back from the newest
    trade; a day without trades before that moment moves on to the whole day before."""
    if end_ms > now_ms:
        return await _page(client, market, None, priority, trace)
    today = now_ms // DAY_MS * DAY_MS
    day = (end_ms - 1) // DAY_MS * DAY_MS
    at: int | None = end_ms - day  # ms into that day; None: the whole day
    while (days_ago := (today - day) // DAY_MS) <= REST_TRADE_DAYS:
        to = None
        if at is not None and at < DAY_MS - SECOND_MS:
            second = -(-at // SECOND_MS)  # rounded up: trades at and after end_ms are left out
            to = f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        page = await client.trades(
            market, count=FILL_PAGE_SIZE, to=to, days_ago=days_ago or None, priority=priority
        )
        trace.calls += 1
        trace.used("rest")
        if page:
            return page
        day, at = day - DAY_MS, None
    return []
