"""``SQLiteRecording``: the recording tables (``_store.recording``) of an SQLite store, on the
store's own connection and thread, so a recording and the candles share one file and one
writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..records import Orderbook, Ticker, Trade
from .recording import (
    FENCE_TABLE,
    RecordedKind,
    TradeGap,
    WriterFence,
    fence_refused,
    recorded_table,
)
from .recording_rows import (
    GAP_COLUMNS,
    ORDERBOOK_COLUMNS,
    TICKER_COLUMNS,
    TRADE_COLUMNS,
    gap_of_row,
    gap_row,
    marks,
    orderbook_of_row,
    orderbook_row,
    packed_trade_row,
    span_of_row,
    ticker_of_row,
    ticker_row,
    trade_of_packed_row,
)
from .sqlite import SQLiteStore

__all__ = ["SQLiteRecording"]


def _marks(columns: str) -> str:
    return marks(columns, "?")


_PUT_TRADE = f"INSERT OR IGNORE INTO trades ({TRADE_COLUMNS}) VALUES ({_marks(TRADE_COLUMNS)})"
_PUT_BOOK = (
    f"INSERT OR REPLACE INTO orderbooks ({ORDERBOOK_COLUMNS}) VALUES ({_marks(ORDERBOOK_COLUMNS)})"
)
_PUT_TICKER = f"INSERT OR REPLACE INTO tickers ({TICKER_COLUMNS}) VALUES ({_marks(TICKER_COLUMNS)})"
_PUT_GAP = f"INSERT OR REPLACE INTO trade_gaps ({GAP_COLUMNS}) VALUES ({_marks(GAP_COLUMNS)})"


class SQLiteRecording:
    """A ``RecordingStore`` in the file of ``store`` (opened and closed by its owner)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def write(
        self,
        trades: Sequence[Trade] = (),
        *,
        orderbooks: Sequence[Orderbook] = (),
        tickers: Sequence[Ticker] = (),
        gaps: Sequence[TradeGap] = (),
        closed_gaps: Sequence[TradeGap] = (),
        fence: WriterFence | None = None,
    ) -> int:
        """See ``RecordingStore.write``."""
        trade_rows = [packed_trade_row(t) for t in trades]
        book_rows = [orderbook_row(b) for b in orderbooks]
        ticker_rows = [ticker_row(t) for t in tickers]

        def work(conn: sqlite3.Connection) -> int:
            if fence is not None:
                _check_fence(conn, fence)
            before = conn.total_changes
            conn.executemany(_PUT_TRADE, trade_rows)
            added = conn.total_changes - before
            conn.executemany(_PUT_BOOK, book_rows)
            conn.executemany(_PUT_TICKER, ticker_rows)
            conn.executemany(
                "DELETE FROM trade_gaps WHERE market = ? AND to_seq = ?",
                [(g.market, g.to_seq) for g in closed_gaps],
            )
            conn.executemany(_PUT_GAP, [gap_row(g) for g in gaps])
            return added

        if not (trade_rows or book_rows or ticker_rows or gaps or closed_gaps or fence):
            return 0
        return await self.store.call(work, write=True)

    async def last_trade(self, market: str) -> Trade | None:
        """See ``RecordingStore.last_trade``."""
        return await self._one_trade(market, "DESC")

    async def first_trade(self, market: str) -> Trade | None:
        """See ``RecordingStore.first_trade``."""
        return await self._one_trade(market, "ASC")

    async def _one_trade(self, market: str, order: str) -> Trade | None:
        def work(conn: sqlite3.Connection) -> Trade | None:
            row = _rows(
                conn,
                f"SELECT {TRADE_COLUMNS} FROM trades WHERE market = ? ORDER BY seq {order} LIMIT 1",
                (market,),
            )
            return trade_of_packed_row(row[0]) if row else None

        return await self.store.call(work)

    async def trades(
        self, market: str, start_ms: int, end_ms: int, *, limit: int | None = None
    ) -> list[Trade]:
        """See ``RecordingStore.trades``."""

        def work(conn: sqlite3.Connection) -> list[Trade]:
            rows = _rows(
                conn,
                f"SELECT {TRADE_COLUMNS} FROM trades WHERE market = ? AND ms >= ? AND ms < ? "
                "ORDER BY seq LIMIT ?",
                (market, start_ms, end_ms, -1 if limit is None else limit),
            )
            return [trade_of_packed_row(row) for row in rows]

        return await self.store.call(work)

    async def trade_count(self, market: str | None = None) -> int:
        """See ``RecordingStore.trade_count``."""

        def work(conn: sqlite3.Connection) -> int:
            if market is None:
                rows = _rows(conn, "SELECT COUNT(*) FROM trades", ())
            else:
                rows = _rows(conn, "SELECT COUNT(*) FROM trades WHERE market = ?", (market,))
            return int(rows[0][0]) if rows else 0

        return await self.store.call(work)

    async def trade_gaps(self, market: str | None = None) -> list[TradeGap]:
        """See ``RecordingStore.trade_gaps``."""

        def work(conn: sqlite3.Connection) -> list[TradeGap]:
            where, args = ("", ()) if market is None else (" WHERE market = ?", (market,))
            rows = _rows(
                conn, f"SELECT {GAP_COLUMNS} FROM trade_gaps{where} ORDER BY market, to_seq", args
            )
            return [gap_of_row(row) for row in rows]

        return await self.store.call(work)

    async def orderbooks(self, market: str, start_ms: int, end_ms: int) -> list[Orderbook]:
        """See ``RecordingStore.orderbooks``."""

        def work(conn: sqlite3.Connection) -> list[Orderbook]:
            rows = _rows(
                conn,
                f"SELECT {ORDERBOOK_COLUMNS} FROM orderbooks WHERE market = ? AND ms >= ? "
                "AND ms < ? ORDER BY ms",
                (market, start_ms, end_ms),
            )
            return [orderbook_of_row(row) for row in rows]

        return await self.store.call(work)

    async def time_span(self, kind: RecordedKind, market: str) -> tuple[int, int] | None:
        """See ``RecordingStore.time_span``."""
        sql = f"SELECT MIN(ms), MAX(ms) FROM {recorded_table(kind)} WHERE market = ?"
        rows = await self.store.call(lambda conn: _rows(conn, sql, (market,)))
        return span_of_row(rows[0] if rows else None)

    async def tickers(self, market: str, start_ms: int, end_ms: int) -> list[Ticker]:
        """See ``RecordingStore.tickers``."""

        def work(conn: sqlite3.Connection) -> list[Ticker]:
            rows = _rows(
                conn,
                f"SELECT {TICKER_COLUMNS} FROM tickers WHERE market = ? AND ms >= ? "
                "AND ms < ? ORDER BY ms",
                (market, start_ms, end_ms),
            )
            return [ticker_of_row(row) for row in rows]

        return await self.store.call(work)

    async def orderbook_at(self, market: str, ms: int) -> Orderbook | None:
        """See ``RecordingStore.orderbook_at``."""
        sql = (
            f"SELECT {ORDERBOOK_COLUMNS} FROM orderbooks WHERE market = ? AND ms <= ? "
            "ORDER BY ms DESC LIMIT 1"
        )
        rows = await self.store.call(lambda conn: _rows(conn, sql, (market, ms)))
        return orderbook_of_row(rows[0]) if rows else None

    async def row_count(self, kind: RecordedKind, market: str) -> int:
        """See ``RecordingStore.row_count``."""
        sql = f"SELECT COUNT(*) FROM {recorded_table(kind)} WHERE market = ?"
        rows = await self.store.call(lambda conn: _rows(conn, sql, (market,)))
        return int(rows[0][0]) if rows else 0

    async def prune(self, kind: RecordedKind, market: str, before_ms: int, limit: int) -> int:
        """See ``RecordingStore.prune``."""
        table = recorded_table(kind)

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            if table == "trades":
                rows = conn.execute(
                    "SELECT seq, ms FROM trades WHERE market = ? ORDER BY seq LIMIT ?",
                    (market, limit),
                ).fetchall()
                last = None
                for seq, ms in rows:
                    if ms >= before_ms:
                        break
                    last = seq
                if last is None:
                    return 0
                conn.execute("DELETE FROM trades WHERE market = ? AND seq <= ?", (market, last))
            else:
                edge = conn.execute(
                    f"SELECT ms FROM {table} WHERE market = ? AND ms < ? ORDER BY ms "
                    "LIMIT 1 OFFSET ?",
                    (market, before_ms, limit - 1),
                ).fetchone()
                top = before_ms if edge is None else int(edge[0]) + 1
                conn.execute(f"DELETE FROM {table} WHERE market = ? AND ms < ?", (market, top))
            return conn.total_changes - before

        return await self.store.call(work, write=True)

    async def prune_gaps(self, market: str, before_ms: int) -> int:
        """See ``RecordingStore.prune_gaps``."""

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.execute(
                "DELETE FROM trade_gaps WHERE market = ? AND to_ms < ?", (market, before_ms)
            )
            return conn.total_changes - before

        return await self.store.call(work, write=True)


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
    """The rows of a read; none from a store opened read-only before the recording tables
    existed (an older schema is readable, not migrated)."""
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise


def _check_fence(conn: sqlite3.Connection, fence: WriterFence) -> None:
    """Within the write transaction (BEGIN IMMEDIATE: writers take turns): record
    ``fence``'s generation as the newest, or raise FencedError when a newer one wrote."""
    conn.execute(FENCE_TABLE)
    row = conn.execute(
        "SELECT generation FROM recording_fences WHERE name = ?", (fence.name,)
    ).fetchone()
    if row is not None and int(row[0]) > fence.generation:
        raise fence_refused(fence, int(row[0]))
    conn.execute(
        "INSERT INTO recording_fences VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET generation = excluded.generation",
        (fence.name, fence.generation),
    )
