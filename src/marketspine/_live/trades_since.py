"""``Spine.stream(since=...)``: each market's streamed trades begin right after the last
trade the caller already has (read with ``Spine.trades``, say).

A new trade stream starts at upstream's latest trade when its subscription went live, or
at whatever the shared stream delivers next: later than the caller's trade (the trades in
between were never streamed) or earlier (already known). ``TradeJoin`` decides, and the
REST walk it asks for (``walk_back``, through the shared budget) runs here, inline: the
listener queues live events meanwhile, so they come out after the filled ones, in order.
A walk that could not finish is announced by a ``Gap`` (``complete=False``) before what
it found. A ``sequential_id`` alone is looked up on REST first (the join needs its time);
one not found there is a ``Gap`` too, and that market's stream then goes on as it comes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import TypeVar

from .._budget.rules import Priority
from ..errors import MarketspineError
from ..records import Trade
from .listener import Gap
from .trade_fill import FILL_MAX_PAGES, FILL_PAGE_SIZE, TradeSource, walk_back
from .trade_join import TradeJoin, WalkNeeded

__all__ = ["find_trade", "trades_since"]

T = TypeVar("T")


async def find_trade(client: TradeSource | None, market: str, seq: int) -> Trade | str:
    """The trade of ``market`` whose sequential_id is ``seq``, paging REST back from the
    newest; why not, when it cannot be found (never raises for upstream trouble)."""
    if client is None:
        return "no REST client to look the trade up with"
    cursor: int | None = None
    for _ in range(FILL_MAX_PAGES):
        try:
            page = await client.trades(
                market, count=FILL_PAGE_SIZE, cursor=cursor, priority=Priority.HIGH
            )
        except MarketspineError as exc:
            return f"REST trades failed: {exc}"
        for trade in page:
            if trade.seq == seq:
                return trade
        if len(page) < FILL_PAGE_SIZE:
            return f"sequential_id {seq} is not in {market}'s REST history"
        cursor = page[-1].seq
    searched = FILL_MAX_PAGES * FILL_PAGE_SIZE
    return f"sequential_id {seq} is not among {market}'s last {searched} trades"


async def trades_since(
    items: AsyncGenerator[T, None],
    since: Mapping[str, Trade | int],
    client: TradeSource | None,
    stopped: Callable[[], bool] = lambda: False,
) -> AsyncGenerator[T | Trade | Gap, None]:
    """``items`` with the trades of each market of ``since`` starting right after its
    trade (or sequential_id): missing ones filled from REST, older ones and that trade
    itself left out. Everything else passes as it comes. Ends, handing out nothing it
    found, once ``stopped()`` is true (after a walk, say)."""
    pending = dict(since)  # markets whose first live trade is yet to come
    joins: dict[str, TradeJoin] = {}
    async with aclosing(items):
        async for item in items:
            if not isinstance(item, Trade) or (
                item.market not in joins and item.market not in pending
            ):
                yield item
                continue
            join = joins.get(item.market)
            if join is None:
                mark = pending.pop(item.market)
                if isinstance(mark, int):
                    if item.seq == mark:  # the stream starts right after it: nothing to fill
                        continue
                    found = await find_trade(client, item.market, mark)
                    if stopped():
                        return
                    if isinstance(found, str):  # no join: the stream goes on as it comes
                        yield Gap(item.market, 0, item.ms, 0, False, found)
                        yield item
                        continue
                    mark = found
                join = joins[item.market] = TradeJoin(mark)
            for out in await _join(client, join, item):
                if stopped():
                    return
                yield out
            if join.joined:
                del joins[item.market]


async def _join(client: TradeSource | None, join: TradeJoin, trade: Trade) -> list[Trade | Gap]:
    """What ``join`` makes of one live trade, walking REST when it asks to."""
    out: list[Trade | Gap] = []
    pending = join.receive(trade)
    while pending:
        step, pending = pending[0], pending[1:]
        if isinstance(step, WalkNeeded):
            walk = await walk_back(client, step.market, step.before, step.after)
            pending = join.walked(walk) + pending
            if join.incomplete:  # announced before the trades the walk did find
                since_ms, until_ms = join.snapshot.ms, step.after.ms
                out.append(
                    Gap(step.market, since_ms, until_ms, join.filled, False, join.incomplete)
                )
        elif step.seq != join.snapshot.seq:  # the caller has that one
            out.append(step)
    return out
