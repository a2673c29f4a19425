"""What ``marketspine record`` keeps, store-neutral: the tables of recorded trades, known trade
gaps, orderbook snapshots and tickers (one migration script per back-end, appended to each
store's schema), rows to records and back, and the ``RecordingStore`` interface.

Trades are keyed by (market, ``sequential_id``): a trade delivered twice (REST fill and
WebSocket, a rerun after a kill) is stored once. Every field Upbit's WebSocket sends for a
trade is kept, its best quotes included (NULL for trades filled from REST, which does not send
them); the rest of a frame follows from these (trade_date/trade_time from the timestamp,
``change`` from the sign of ``change_price``). Prices and sizes round-trip exactly. SQLite
stores a whole-number REAL as an integer on disk (most KRW prices: 1-4 bytes instead of 8);
its size columns (a trade's volume, the best quotes' sizes) have no type since schema version
5, and hold a size of at most 8 decimals, as Upbit's are, as the integer count of 1e-8 units
(``pack_size``: 3-4 bytes instead of 8), any other as the float itself. PostgreSQL keeps
them as double precision. The taker side is one integer (0/1, which SQLite stores in the row
header alone). A book's levels are one packed blob of little-endian float64s (ask price, ask
size, bid price, bid size per level), not rows.

A known gap is a hole between two stored trades of a market that neither the stream's REST
fill nor a backfill could close: ``from_*`` name the last stored trade before it, ``to_*``
the first stored trade after it (both exclusive).

Several recorders on one database (``record --redis``) take turns under a lease in Redis; a
write may carry the holder's ``WriterFence`` (the lease's generation), checked against the
table ``recording_fences`` in the write's own transaction: a write under a generation older
than one already written is refused (``FencedError``) and leaves nothing, so a holder that
lost its lease (paused, cut off from Redis) cannot write after its successor began. That
table is made by the first fenced write, so a database never recorded that way has none.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..errors import FencedError
from ..records import Orderbook, OrderbookUnit, Side, Ticker, Trade

__all__ = [
    "FENCE_TABLE",
    "GAP_COLUMNS",
    "ORDERBOOK_COLUMNS",
    "PG_RECORDING_SCHEMA",
    "RECORDED_KINDS",
    "SQLITE_PACKED_SIZES",
    "SQLITE_RECORDING_SCHEMA",
    "TICKER_COLUMNS",
    "TRADE_COLUMNS",
    "RecordedKind",
    "RecordingStore",
    "TradeGap",
    "WriterFence",
    "fence_refused",
    "orderbook_of_row",
    "orderbook_row",
    "pack_size",
    "pack_units",
    "ticker_of_row",
    "ticker_row",
    "trade_of_row",
    "trade_row",
    "unpack_size",
    "unpack_units",
]

SQLITE_RECORDING_SCHEMA = """
    CREATE TABLE trades (
        market TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ms INTEGER NOT NULL,
        price REAL NOT NULL,
        volume REAL NOT NULL,
        taker_bid INTEGER NOT NULL,
        prev_close REAL NOT NULL,
        change_price REAL NOT NULL,
        best_ask_price REAL,
        best_ask_size REAL,
        best_bid_price REAL,
        best_bid_size REAL,
        PRIMARY KEY (market, seq)
    ) WITHOUT ROWID;
    CREATE TABLE trade_gaps (
        market TEXT NOT NULL,
        from_seq INTEGER NOT NULL,
        to_seq INTEGER NOT NULL,
        from_ms INTEGER NOT NULL,
        to_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        found_ms INTEGER NOT NULL,
        PRIMARY KEY (market, to_seq)
    ) WITHOUT ROWID;
    CREATE TABLE orderbooks (
        market TEXT NOT NULL,
        ms INTEGER NOT NULL,
        level REAL NOT NULL,
        total_ask_size REAL NOT NULL,
        total_bid_size REAL NOT NULL,
        units BLOB NOT NULL,
        PRIMARY KEY (market, ms)
    ) WITHOUT ROWID;
    CREATE TABLE tickers (
        market TEXT NOT NULL,
        ms INTEGER NOT NULL,
        trade_ms INTEGER NOT NULL,
        price REAL NOT NULL,
        open REAL NOT NULL,
        high REAL NOT NULL,
        low REAL NOT NULL,
        prev_close REAL NOT NULL,
        change TEXT NOT NULL,
        change_price REAL NOT NULL,
        change_rate REAL NOT NULL,
        trade_volume REAL NOT NULL,
        acc_volume REAL NOT NULL,
        acc_value REAL NOT NULL,
        acc_volume_24h REAL NOT NULL,
        acc_value_24h REAL NOT NULL,
        high_52w REAL NOT NULL,
        high_52w_date TEXT NOT NULL,
        low_52w REAL NOT NULL,
        low_52w_date TEXT NOT NULL,
        side TEXT,
        acc_ask_volume REAL,
        acc_bid_volume REAL,
        market_state TEXT,
        delisting_date TEXT,
        PRIMARY KEY (market, ms)
    ) WITHOUT ROWID;
"""


def _packed(column: str) -> str:
    """SQL for ``pack_size`` of ``column``: the count of 1e-8 units when it gives the same
    float back (a size of at most 8 decimals), else the value itself."""
    units = f"CAST(round({column} * 100000000.0) AS INTEGER)"
    return (
        f"CASE WHEN abs({column}) < 90071992 AND {units} / 100000000.0 = {column} "
        f"THEN {units} ELSE {column} END"
    )


# Version 5: the size columns lose their type and hold 8-decimal sizes as integer counts of
# 1e-8 (``pack_size``; the same test in SQL for the rows stored before).
SQLITE_PACKED_SIZES = f"""
    CREATE TABLE trades_packed (
        market TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ms INTEGER NOT NULL,
        price REAL NOT NULL,
        volume NOT NULL,
        taker_bid INTEGER NOT NULL,
        prev_close REAL NOT NULL,
        change_price REAL NOT NULL,
        best_ask_price REAL,
        best_ask_size,
        best_bid_price REAL,
        best_bid_size,
        PRIMARY KEY (market, seq)
    ) WITHOUT ROWID;
    INSERT INTO trades_packed SELECT market, seq, ms, price, {_packed("volume")},
        taker_bid, prev_close, change_price, best_ask_price, {_packed("best_ask_size")},
        best_bid_price, {_packed("best_bid_size")}
    FROM trades;
    DROP TABLE trades;
    ALTER TABLE trades_packed RENAME TO trades
"""
PG_RECORDING_SCHEMA = """
    CREATE TABLE trades (
        market TEXT NOT NULL,
        seq BIGINT NOT NULL,
        ms BIGINT NOT NULL,
        price DOUBLE PRECISION NOT NULL,
        volume DOUBLE PRECISION NOT NULL,
        taker_bid BOOLEAN NOT NULL,
        prev_close DOUBLE PRECISION NOT NULL,
        change_price DOUBLE PRECISION NOT NULL,
        best_ask_price DOUBLE PRECISION,
        best_ask_size DOUBLE PRECISION,
        best_bid_price DOUBLE PRECISION,
        best_bid_size DOUBLE PRECISION,
        PRIMARY KEY (market, seq)
    );
    CREATE TABLE trade_gaps (
        market TEXT NOT NULL,
        from_seq BIGINT NOT NULL,
        to_seq BIGINT NOT NULL,
        from_ms BIGINT NOT NULL,
        to_ms BIGINT NOT NULL,
        reason TEXT NOT NULL,
        found_ms BIGINT NOT NULL,
        PRIMARY KEY (market, to_seq)
    );
    CREATE TABLE orderbooks (
        market TEXT NOT NULL,
        ms BIGINT NOT NULL,
        level DOUBLE PRECISION NOT NULL,
        total_ask_size DOUBLE PRECISION NOT NULL,
        total_bid_size DOUBLE PRECISION NOT NULL,
        units BYTEA NOT NULL,
        PRIMARY KEY (market, ms)
    );
    CREATE TABLE tickers (
        market TEXT NOT NULL,
        ms BIGINT NOT NULL,
        trade_ms BIGINT NOT NULL,
        price DOUBLE PRECISION NOT NULL,
        open DOUBLE PRECISION NOT NULL,
        high DOUBLE PRECISION NOT NULL,
        low DOUBLE PRECISION NOT NULL,
        prev_close DOUBLE PRECISION NOT NULL,
        change TEXT NOT NULL,
        change_price DOUBLE PRECISION NOT NULL,
        change_rate DOUBLE PRECISION NOT NULL,
        trade_volume DOUBLE PRECISION NOT NULL,
        acc_volume DOUBLE PRECISION NOT NULL,
        acc_value DOUBLE PRECISION NOT NULL,
        acc_volume_24h DOUBLE PRECISION NOT NULL,
        acc_value_24h DOUBLE PRECISION NOT NULL,
        high_52w DOUBLE PRECISION NOT NULL,
        high_52w_date TEXT NOT NULL,
        low_52w DOUBLE PRECISION NOT NULL,
        low_52w_date TEXT NOT NULL,
        side TEXT,
        acc_ask_volume DOUBLE PRECISION,
        acc_bid_volume DOUBLE PRECISION,
        market_state TEXT,
        delisting_date TEXT,
        PRIMARY KEY (market, ms)
    );
"""

# What a recording holds, by the name of its table.
RecordedKind = Literal["trades", "orderbooks", "tickers"]
RECORDED_KINDS: tuple[RecordedKind, ...] = ("trades", "orderbooks", "tickers")

TRADE_COLUMNS = (
    "market, seq, ms, price, volume, taker_bid, prev_close, change_price, "
    "best_ask_price, best_ask_size, best_bid_price, best_bid_size"
)
GAP_COLUMNS = "market, from_seq, to_seq, from_ms, to_ms, reason, found_ms"
ORDERBOOK_COLUMNS = "market, ms, level, total_ask_size, total_bid_size, units"
TICKER_COLUMNS = (
    "market, ms, trade_ms, price, open, high, low, prev_close, change, change_price, "
    "change_rate, trade_volume, acc_volume, acc_value, acc_volume_24h, acc_value_24h, "
    "high_52w, high_52w_date, low_52w, low_52w_date, side, acc_ask_volume, acc_bid_volume, "
    "market_state, delisting_date"
)


@dataclass(frozen=True, slots=True)
class TradeGap:
    """Trades of ``market`` that are missing from the record between the stored trade
    ``from_seq`` (at ``from_ms``) and the stored trade ``to_seq`` (at ``to_ms``), both
    exclusive; ``reason`` says why they could not be fetched, ``found_ms`` when that was."""

    market: str
    from_seq: int
    to_seq: int
    from_ms: int
    to_ms: int
    reason: str
    found_ms: int


def trade_row(trade: Trade) -> tuple[Any, ...]:
    """``trade`` as the columns of a trades row (``TRADE_COLUMNS``; the side as 1 = BID)."""
    return (
        trade.market,
        trade.seq,
        trade.ms,
        trade.price,
        trade.volume,
        trade.side == "BID",
        trade.prev_close,
        trade.change_price,
        trade.best_ask_price,
        trade.best_ask_size,
        trade.best_bid_price,
        trade.best_bid_size,
    )


def trade_of_row(row: Sequence[Any]) -> Trade:
    """A trades row (``TRADE_COLUMNS``) back as the ``Trade`` it was written from."""
    (market, seq, ms, price, volume, taker_bid, prev_close, change_price, *best) = row
    side: Side = "BID" if taker_bid else "ASK"
    ask_price, ask_size, bid_price, bid_size = (None if v is None else float(v) for v in best)
    return Trade(
        market,
        int(ms),
        float(price),
        float(volume),
        side,
        int(seq),
        float(prev_close),
        float(change_price),
        ask_price,
        ask_size,
        bid_price,
        bid_size,
    )


SIZE_SCALE = 1e8  # Upbit's sizes have at most 8 decimals


def pack_size(size: float | None) -> float | int | None:
    """A size as SQLite keeps it: the integer count of 1e-8 units when that gives the same
    float back exactly, else the float itself (a column without type keeps the two apart)."""
    if size is None:
        return None
    # Division by a power of ten is correctly rounded, so ``units / 1e8`` is the float
    # nearest the decimal: the very float a decimal of at most 8 places was parsed into.
    units = round(size * SIZE_SCALE)
    return units if abs(units) < 1 << 53 and units / SIZE_SCALE == size else size


def unpack_size(stored: object) -> float | None:
    """``pack_size`` undone."""
    if stored is None:
        return None
    if isinstance(stored, int):
        return stored / SIZE_SCALE
    return float(stored)  # type: ignore[arg-type]


def pack_units(units: Sequence[OrderbookUnit]) -> bytes:
    """A book's levels as one blob: per level ask price, ask size, bid price, bid size."""
    flat = [v for u in units for v in (u.ask_price, u.ask_size, u.bid_price, u.bid_size)]
    return struct.pack(f"<{len(flat)}d", *flat)


def unpack_units(blob: bytes) -> tuple[OrderbookUnit, ...]:
    """``pack_units`` undone."""
    flat = struct.unpack(f"<{len(blob) // 8}d", blob)
    return tuple(OrderbookUnit(*flat[i : i + 4]) for i in range(0, len(flat), 4))


def orderbook_row(book: Orderbook) -> tuple[Any, ...]:
    """``book`` as the columns of an orderbooks row (``ORDERBOOK_COLUMNS``)."""
    return (
        book.market,
        book.ms,
        book.level,
        book.total_ask_size,
        book.total_bid_size,
        pack_units(book.units),
    )


def orderbook_of_row(row: Sequence[Any]) -> Orderbook:
    """An orderbooks row back as the ``Orderbook`` it was written from."""
    market, ms, level, total_ask, total_bid, units = row
    return Orderbook(
        market, int(ms), float(total_ask), float(total_bid), unpack_units(bytes(units)), level
    )


def ticker_row(ticker: Ticker) -> tuple[Any, ...]:
    """``ticker`` as the columns of a tickers row (``TICKER_COLUMNS``: its fields in order)."""
    return (
        ticker.market,
        ticker.ms,
        ticker.trade_ms,
        ticker.price,
        ticker.open,
        ticker.high,
        ticker.low,
        ticker.prev_close,
        ticker.change,
        ticker.change_price,
        ticker.change_rate,
        ticker.trade_volume,
        ticker.acc_volume,
        ticker.acc_value,
        ticker.acc_volume_24h,
        ticker.acc_value_24h,
        ticker.high_52w,
        ticker.high_52w_date,
        ticker.low_52w,
        ticker.low_52w_date,
        ticker.side,
        ticker.acc_ask_volume,
        ticker.acc_bid_volume,
        ticker.market_state,
        ticker.delisting_date,
    )


def ticker_of_row(row: Sequence[Any]) -> Ticker:
    """A tickers row back as the ``Ticker`` it was written from."""
    (market, ms, trade_ms, price, open_, high, low, prev_close, change, change_price,
     change_rate, trade_volume, acc_volume, acc_value, acc_volume_24h, acc_value_24h,
     high_52w, high_52w_date, low_52w, low_52w_date, side, acc_ask_volume, acc_bid_volume,
     market_state, delisting_date) = row  # fmt: skip
    return Ticker(
        market, int(ms), int(trade_ms), float(price), float(open_), float(high), float(low),
        float(prev_close), change, float(change_price), float(change_rate),
        float(trade_volume), float(acc_volume), float(acc_value), float(acc_volume_24h),
        float(acc_value_24h), float(high_52w), high_52w_date, float(low_52w), low_52w_date,
        side, _float_or_none(acc_ask_volume), _float_or_none(acc_bid_volume), market_state,
        delisting_date,
    )  # fmt: skip


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class WriterFence:
    """A fenced writer: the recorder lease ``name`` held at ``generation`` (bumped by every
    taking of the lease)."""

    name: str
    generation: int


FENCE_TABLE = (
    "CREATE TABLE IF NOT EXISTS recording_fences "
    "(name TEXT PRIMARY KEY, generation BIGINT NOT NULL)"
)


def fence_refused(fence: WriterFence, newest: int | None) -> FencedError:
    """The error of a write under ``fence`` after generation ``newest`` wrote."""
    return FencedError(
        f"recording lease {fence.name}: generation {fence.generation} may not write any more, "
        f"generation {newest} of another recorder has written since"
    )


class RecordingStore(Protocol):
    """Where a recording goes: ``SQLiteRecording`` or ``PostgresRecording`` over the store
    that holds the candles of the same database."""

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
        """Store all of it in ONE transaction and return how many trades were new: trades
        already stored are left as they are, a book or ticker of a stored (market, ms)
        replaces it, ``gaps`` are added and ``closed_gaps`` (by market and ``to_seq``)
        removed. With ``fence`` (even with nothing else to write) the transaction first
        records its generation as the newest written.

        Raises FencedError, writing nothing, when a newer generation of ``fence.name`` has
        written already."""
        ...

    async def last_trade(self, market: str) -> Trade | None:
        """The stored trade of ``market`` with the highest ``sequential_id``."""
        ...

    async def first_trade(self, market: str) -> Trade | None:
        """The stored trade of ``market`` with the lowest ``sequential_id``."""
        ...

    async def trades(
        self, market: str, start_ms: int, end_ms: int, *, limit: int | None = None
    ) -> list[Trade]:
        """Stored trades of ``market`` at ``[start_ms, end_ms)``, by ``sequential_id``."""
        ...

    async def trade_count(self, market: str | None = None) -> int:
        """How many trades are stored (of ``market``, or of all)."""
        ...

    async def trade_gaps(self, market: str | None = None) -> list[TradeGap]:
        """The known gaps (of ``market``, or of all), by market then ``to_seq``."""
        ...

    async def orderbooks(self, market: str, start_ms: int, end_ms: int) -> list[Orderbook]:
        """Stored books of ``market`` at ``[start_ms, end_ms)``, ascending."""
        ...

    async def time_span(self, kind: RecordedKind, market: str) -> tuple[int, int] | None:
        """The times of the first and last stored ``kind`` of ``market``; None when none."""
        ...

    async def tickers(self, market: str, start_ms: int, end_ms: int) -> list[Ticker]:
        """Stored tickers of ``market`` at ``[start_ms, end_ms)``, ascending."""
        ...

    async def orderbook_at(self, market: str, ms: int) -> Orderbook | None:
        """The stored book of ``market`` at ``ms`` or the last one before it; None when none."""
        ...

    async def row_count(self, kind: RecordedKind, market: str) -> int:
        """How many ``kind`` rows of ``market`` are stored."""
        ...

    async def prune(self, kind: RecordedKind, market: str, before_ms: int, limit: int) -> int:
        """Delete at most about ``limit`` of the oldest ``kind`` rows of ``market`` older than
        ``before_ms`` in ONE short transaction (so a writer waits for one batch at most) and
        return how many went; 0 once none is left. Trades go by ``sequential_id`` from the
        first, up to the first trade at or after ``before_ms``."""
        ...

    async def prune_gaps(self, market: str, before_ms: int) -> int:
        """Delete the known gaps of ``market`` that end before ``before_ms`` (their trades on
        both sides are older than that); return how many went."""
        ...
