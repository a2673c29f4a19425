"""Filling a trade gap from REST by ``sequential_id``: walk Upbit's trade pages back from
the first trade after the hole to the last one before it (the I/O half of
``_live.trade_sequence``'s ``FillNeeded``; used by ``Stream`` after reconnects, by the shared
live feed after a takeover, and by ``serve``'s WebSocket to join a REST snapshot to the
live stream)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .._budget.rules import Priority
from ..errors import MarketspineError
from ..records import Trade
from .trade_sequence import FillNeeded

__all__ = ["FILL_MAX_PAGES", "FILL_PAGE_SIZE", "TradeSource", "Walk", "fetch_missing", "walk_back"]

# REST pages walked back to fill one gap: Upbit serves at most 500 trades per call.
FILL_PAGE_SIZE = 500
FILL_MAX_PAGES = 20


class TradeSource(Protocol):
    """What gap filling needs from the REST client (``Client`` satisfies it)."""

    async def trades(
        self,
        market: str,
        *,
        count: int = ...,
        cursor: int | None = ...,
        priority: Priority = ...,
    ) -> list[Trade]: ...


@dataclass(frozen=True, slots=True)
class Walk:
    """What a walk back through REST found: the trades between, oldest first; whether it
    came to ``before`` itself (``met``: Upbit lists ``before`` before ``after``); whether it
    came to ``before`` or passed its trade time (``complete``); why not."""

    trades: list[Trade]
    met: bool
    complete: bool
    reason: str = ""


async def walk_back(
    client: TradeSource | None,
    market: str,
    before: Trade,
    after: Trade,
    known: Callable[[int], bool] = lambda seq: False,
) -> Walk:
    """Trades of ``market`` listed after ``before`` and before ``after``, walking REST back
    from ``after`` by sequential_id until ``before`` or an earlier trade time; trades whose
    id is ``known`` are left out. Never raises for upstream trouble (an incomplete walk)."""
    if client is None:
        return Walk([], False, False, "no REST client to fill the gap with")
    newest_first: list[Trade] = []
    cursor = after.seq
    for _ in range(FILL_MAX_PAGES):
        try:
            page = await client.trades(
                market, count=FILL_PAGE_SIZE, cursor=cursor, priority=Priority.HIGH
            )
        except MarketspineError as exc:
            return Walk(newest_first[::-1], False, False, f"REST trades failed: {exc}")
        for trade in page:
            if trade.seq == before.seq or trade.ms < before.ms:
                return Walk(newest_first[::-1], trade.seq == before.seq, True)
            if not known(trade.seq) and trade.seq != after.seq:
                newest_first.append(trade)
        if len(page) < FILL_PAGE_SIZE:
            return Walk(
                newest_first[::-1], False, False, "REST history ended before the gap's start"
            )
        cursor = page[-1].seq
    return Walk(
        newest_first[::-1],
        False,
        False,
        f"gap longer than {FILL_MAX_PAGES * FILL_PAGE_SIZE} trades; older ones not fetched",
    )


async def fetch_missing(
    client: TradeSource | None, fill: FillNeeded
) -> tuple[list[Trade], bool, str]:
    """Trades after ``fill.before`` and before ``fill.after``, oldest first, walking REST
    back from ``after`` by sequential_id; returns them, whether the walk reached ``before``,
    and why not (never raises for upstream trouble: that is an incomplete fill)."""
    walk = await walk_back(client, fill.market, fill.before, fill.after, fill.track.has)
    return walk.trades, walk.complete, walk.reason
