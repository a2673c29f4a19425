"""What ``marketspine record`` keeps, store-neutral: the tables of recorded trades, known trade
gaps, orderbook snapshots and tickers (one migration script per back-end, appended to each
store's schema) and the ``RecordingStore`` interface; rows to records and back are in
``_store.recording_rows``.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import FencedError, InvalidRequestError
from ..records import Orderbook, Ticker, Trade

__all__ = [
    "FENCE_TABLE",
    "PG_RECORDING_SCHEMA",
    "RECORDED_KINDS",
    "SQLITE_PACKED_SIZES",
    "SQLITE_RECORDING_SCHEMA",
    "RecordedKind",
    "RecordingStore",
    "TradeGap",
    "WriterFence",
    "fence_refused",
    "recorded_table",
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


def recorded_table(kind: str) -> RecordedKind:
    """``kind`` checked against the recorded tables (it is put into SQL text)."""
    for table in RECORDED_KINDS:
        if kind == table:
            return table
    raise InvalidRequestError(
        f"unknown recorded kind {kind!r}: expected one of {', '.join(RECORDED_KINDS)}"
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
