"""Reading a recording back in bounded pieces, for replay: which markets it holds, and each
market's trades, books and tickers of a time range as a sequence of batches, so a replay of
days holds one batch per stream in memory, never the whole range; and what it holds per kind
and market (``recording_summary``, for ``status``).

Trades are read in ``sequential_id`` order (the order they were recorded in, which is also
time order: Upbit's ids grow with time), ``size`` at a time, each batch ending before the
last millisecond it reached, which the next batch starts at; so trades sharing a millisecond
are never split or repeated. Books and tickers (one per market and millisecond) are read
by time window, the window widened or narrowed to keep batches near ``size``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import InvalidRequestError
from ..records import Orderbook, Ticker, Trade
from .recording import RECORDED_KINDS, RecordedKind, RecordingStore, TradeGap

__all__ = [
    "BATCH_SIZE",
    "RecordedHolding",
    "book_batches",
    "recorded_markets",
    "recording_summary",
    "ticker_batches",
    "trade_batches",
]

BATCH_SIZE = 5000  # rows per read: large enough to amortise a query, small enough to hold
_FIRST_WINDOW_MS = 60_000
_MAX_WINDOW_MS = 7 * 86_400_000
_TABLES = ("trades", "orderbooks", "tickers")

T = TypeVar("T", Orderbook, Ticker)


async def recorded_markets(recording: RecordingStore) -> list[str]:
    """Every market with a trade, book or ticker in the recording, sorted. One index probe
    per market and table (a skip scan), not a pass over the rows."""
    found: set[str] = set()
    for table in _TABLES:
        after = ""
        while True:
            rows = await _select(
                recording,
                f"SELECT market FROM {table} WHERE market > ? ORDER BY market LIMIT 1",
                (after,),
            )
            if not rows:
                break
            after = str(rows[0][0])
            found.add(after)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class RecordedHolding:
    """What a recording holds of one kind of one market: ``rows`` from ``first_ms`` to
    ``last_ms`` (both held), and for trades its known gaps."""

    market: str
    kind: RecordedKind
    rows: int
    first_ms: int
    last_ms: int
    gaps: tuple[TradeGap, ...] = ()


async def recording_summary(recording: RecordingStore) -> list[RecordedHolding]:
    """Per market (sorted) and kind (trades, orderbooks, tickers) that has rows: how many,
    from when to when, and the trades' known gaps."""
    gaps: dict[str, list[TradeGap]] = {}
    for gap in await recording.trade_gaps():
        gaps.setdefault(gap.market, []).append(gap)
    held = []
    for market in await recorded_markets(recording):
        for kind in RECORDED_KINDS:
            span = await recording.time_span(kind, market)
            if span is None:
                continue
            known = tuple(gaps.get(market, ())) if kind == "trades" else ()
            rows = await recording.row_count(kind, market)
            held.append(RecordedHolding(market, kind, rows, span[0], span[1], known))
    return held


async def _select(
    recording: RecordingStore, sql: str, args: tuple[object, ...]
) -> list[tuple[Any, ...]]:
    """``sql`` (with ``?`` marks) on the recording's own connection, whichever back-end."""
    from .recording_sqlite import SQLiteRecording

    if isinstance(recording, SQLiteRecording):
        import sqlite3

        def work(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:  # an older, read-only file
                if "no such table" in str(exc):
                    return []
                raise

        return await recording.store.call(work)
    if type(recording).__name__ == "PostgresRecording":
        from .recording_postgres import PostgresRecording  # psycopg only when used

        if isinstance(recording, PostgresRecording):

            async def read(conn: Any) -> list[tuple[Any, ...]]:
                cursor = await conn.execute(sql.replace("?", "%s"), args)
                return list(await cursor.fetchall())

            return await recording.store.call(read)
    raise InvalidRequestError(f"cannot read the markets of a {type(recording).__name__}")


async def trade_batches(
    recording: RecordingStore, market: str, start_ms: int, end_ms: int, size: int = BATCH_SIZE
) -> AsyncIterator[list[Trade]]:
    """The stored trades of ``market`` at ``[start_ms, end_ms)`` in batches of about
    ``size``, by ``sequential_id``; every trade once."""
    cursor = start_ms
    last_seq = -1
    while cursor < end_ms:
        rows = await recording.trades(market, cursor, end_ms, limit=size)
        if len(rows) < size:
            batch = [t for t in rows if t.seq > last_seq]
            if batch:
                yield batch
            return
        edge = rows[-1].ms
        batch = [t for t in rows if t.ms < edge and t.seq > last_seq]
        if not batch:  # a whole batch in one millisecond: read that millisecond whole
            batch = [t for t in await recording.trades(market, edge, edge + 1) if t.seq > last_seq]
            edge += 1
        if batch:
            last_seq = max(last_seq, batch[-1].seq)
            yield batch
        cursor = edge


async def book_batches(
    recording: RecordingStore, market: str, start_ms: int, end_ms: int, size: int = BATCH_SIZE
) -> AsyncIterator[list[Orderbook]]:
    """The stored books of ``market`` at ``[start_ms, end_ms)``, ascending, in batches."""
    async for batch in _windowed(recording.orderbooks, market, start_ms, end_ms, size):
        yield batch


async def ticker_batches(
    recording: RecordingStore, market: str, start_ms: int, end_ms: int, size: int = BATCH_SIZE
) -> AsyncIterator[list[Ticker]]:
    """The stored tickers of ``market`` at ``[start_ms, end_ms)``, ascending, in batches."""
    async for batch in _windowed(recording.tickers, market, start_ms, end_ms, size):
        yield batch


async def _windowed(
    read: Callable[[str, int, int], Awaitable[list[T]]],
    market: str,
    start_ms: int,
    end_ms: int,
    size: int,
) -> AsyncIterator[list[T]]:
    span = _FIRST_WINDOW_MS
    cursor = start_ms
    while cursor < end_ms:
        top = min(end_ms, cursor + span)
        rows = await read(market, cursor, top)
        if rows:
            yield rows
        cursor = top
        if len(rows) > 2 * size:
            span = max(1_000, span // 2)
        elif len(rows) < size // 2:
            span = min(_MAX_WINDOW_MS, span * 2)
