"""Filling a trade gap from REST by ``sequential_id``: walk Upbit's trade pages back from
the first trade after the hole to the last one before it (the I/O half of
``_trade_sequence``'s ``FillNeeded``; used by ``Stream`` after reconnects and by the shared
live feed after a takeover)."""

from __future__ import annotations

from typing import Protocol

from ._errors import MarketspineError
from ._ratebudget import Priority
from ._records import Trade
from ._trade_sequence import FillNeeded

__all__ = ["FILL_MAX_PAGES", "FILL_PAGE_SIZE", "TradeSource", "fetch_missing"]

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


async def fetch_missing(
    client: TradeSource | None, fill: FillNeeded
) -> tuple[list[Trade], bool, str]:
    """Trades after ``fill.before`` and before ``fill.after``, oldest first, walking REST
    back from ``after`` by sequential_id; returns them, whether the walk reached ``before``,
    and why not (never raises for upstream trouble: that is an incomplete fill)."""
    if client is None:
        return [], False, "no REST client to fill the gap with"
    market, before, after = fill.market, fill.before, fill.after
    newest_first: list[Trade] = []
    cursor = after.seq
    for _ in range(FILL_MAX_PAGES):
        try:
            page = await client.trades(
                market, count=FILL_PAGE_SIZE, cursor=cursor, priority=Priority.HIGH
            )
        except MarketspineError as exc:
            return newest_first[::-1], False, f"REST trades failed: {exc}"
        for trade in page:
            if trade.seq == before.seq or trade.ms < before.ms:
                return newest_first[::-1], True, ""
            if not fill.track.has(trade.seq) and trade.seq != after.seq:
                newest_first.append(trade)
        if len(page) < FILL_PAGE_SIZE:
            return newest_first[::-1], False, "REST history ended before the gap's start"
        cursor = page[-1].seq
    return (
        newest_first[::-1],
        False,
        f"gap longer than {FILL_MAX_PAGES * FILL_PAGE_SIZE} trades; older ones not fetched",
    )
