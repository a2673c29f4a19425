"""The recorder: trades/s it commits into SQLite and into PostgreSQL (goal: 50,000/s, far above
Upbit's whole market), and bytes per stored trade and per 15-level book snapshot; then
retention (``record --keep``): every recorded trade pruned, 5,000 a transaction, while a
writer commits one-trade batches, with the rows/s pruned and the longest a write waited.

The trades are KRW-market-like (whole-won prices on a 1,000 won tick, 8-decimal sizes, the
best quotes of WebSocket trades) over 20 markets, fed to a ``Recorder`` as fast as it takes
them; the time runs until the last batch is committed. PostgreSQL is the machine's
(``MARKETSPINE_BENCH_PG``, default postgresql://postgres@127.0.0.1:5432/test) in a schema of
its own, dropped afterwards; skipped when unreachable.

``python -m bench.record [TRADES]`` prints the table (default 200,000 trades).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from marketspine._live.recorder import Recorder
from marketspine._store.recording import RecordingStore
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.retention import prune
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Orderbook, OrderbookUnit, Trade

TRADES = 200_000
MARKETS = [f"KRW-C{i:02d}" for i in range(20)]
BOOKS = 2_000
GOAL = 50_000
PG_URL = os.environ.get("MARKETSPINE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _row(name: str, value: float, unit: str, goal: str) -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


def make_trades(n: int) -> list[Trade]:
    rand = random.Random(23)
    out = []
    ms = 1_790_000_000_000
    for i in range(n):
        ms += rand.choice((0, 0, 1, 3, 20))
        price = 140_000_000.0 + 1000 * rand.randrange(-500, 500)
        out.append(
            Trade(MARKETS[i % len(MARKETS)], ms, price, round(rand.random() * 0.5, 8),
                  "BID" if rand.random() < 0.5 else "ASK", ms * 10_000 + i % 7, 139_500_000.0,
                  price - 139_500_000.0, price + 1000, round(rand.random(), 8), price,
                  round(rand.random(), 8))
        )  # fmt: skip
    return out


def make_books(n: int) -> list[Orderbook]:
    rand = random.Random(5)
    books = []
    for i in range(n):
        units = tuple(
            OrderbookUnit(140_001_000.0 + 1000 * k, round(rand.random(), 8),
                          140_000_000.0 - 1000 * k, round(rand.random(), 8))
            for k in range(15)
        )  # fmt: skip
        books.append(Orderbook(MARKETS[i % len(MARKETS)], 1_790_000_000_000 + i * 100,
                               12.5, 11.25, units, 0.0))  # fmt: skip
    return books


async def _record(recording: RecordingStore, events: list[object]) -> float:
    """Seconds from the first event to the last batch committed."""
    stop = asyncio.Event()

    async def feed() -> AsyncIterator[object]:
        for event in events:
            yield event
        stop.set()
        await asyncio.Event().wait()

    started = time.perf_counter()
    await Recorder(recording, None).run(feed(), stop)
    return time.perf_counter() - started


async def _prune(recording: RecordingStore, trades: list[Trade]) -> tuple[float, float, int]:
    """Prune every trade of ``trades`` while a writer commits one trade at a time: (rows/s
    pruned, the longest write in ms, writes committed meanwhile)."""
    waits: list[float] = []
    done = asyncio.Event()

    async def writer() -> None:
        ms = trades[-1].ms + 1
        while not done.is_set():
            started = time.perf_counter()
            await recording.write([Trade("KRW-W", ms, 1.0, 1.0, "BID", ms * 10_000, 1.0, 0.0)])
            waits.append(time.perf_counter() - started)
            ms += 1

    task = asyncio.create_task(writer())
    started = time.perf_counter()
    report = await prune(recording, {"trades": 1}, MARKETS, trades[-1].ms + 1)
    seconds = time.perf_counter() - started
    done.set()
    await task
    return sum(report.rows.values()) / seconds, max(waits) * 1000, len(waits)


def _prune_rows(store: str, figures: tuple[float, float, int]) -> list[dict[str, Any]]:
    per_s, longest, writes = figures
    return [
        _row(f"prune trades in {store} (writes beside)", per_s, "rows/s", "> recording rate"),
        _row(f"{store}: longest write while pruning ({writes} writes)", longest, "ms", "~1 batch"),
    ]


async def _sqlite(
    folder: Path, trades: list[Trade], books: list[Orderbook]
) -> list[dict[str, Any]]:
    path = folder / "record.sqlite"
    async with SQLiteStore(path) as store:
        seconds = await _record(SQLiteRecording(store), list(trades))
        before = await _size(store)
        await _record(SQLiteRecording(store), list(books))
        after = await _size(store)
        per_trade = before / len(trades)
        pruned = await _prune(SQLiteRecording(store), trades)
    return [
        _row("record trades into SQLite", len(trades) / seconds, "trades/s", f">= {GOAL:,}"),
        _row("SQLite bytes per trade", per_trade, "bytes", "compact"),
        _row("SQLite bytes per 15-level book", (after - before) / len(books), "bytes", "compact"),
        *_prune_rows("SQLite", pruned),
    ]


async def _size(store: SQLiteStore) -> int:
    """The database's bytes once its WAL is folded in (the file a copy would take)."""

    def measure(conn: Any) -> int:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        return int((pages - free) * size)

    return await store.call(measure)


async def _postgres(trades: list[Trade], books: list[Orderbook]) -> list[dict[str, Any]]:
    try:
        import psycopg

        from marketspine._store.postgres import PostgresStore
        from marketspine._store.recording_postgres import PostgresRecording
    except ImportError as exc:
        print(f"skipping PostgreSQL: {exc}", file=sys.stderr)
        return []
    schema = f"msbench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await psycopg.AsyncConnection.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        print(f"skipping PostgreSQL: {exc}", file=sys.stderr)
        return []
    await admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        async with PostgresStore(f"{PG_URL}{sep}options=-csearch_path%3D{schema}") as store:
            recording = PostgresRecording(store)
            seconds = await _record(recording, list(trades))
            per_trade = await _pg_size(admin, schema, "trades") / len(trades)
            await _record(recording, list(books))
            per_book = await _pg_size(admin, schema, "orderbooks") / len(books)
            pruned = await _prune(recording, trades)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    return [
        _row("record trades into PostgreSQL", len(trades) / seconds, "trades/s", f">= {GOAL:,}"),
        _row("PostgreSQL bytes per trade (with its index)", per_trade, "bytes", "compact"),
        _row("PostgreSQL bytes per 15-level book", per_book, "bytes", "compact"),
        *_prune_rows("PostgreSQL", pruned),
    ]


async def _pg_size(conn: Any, schema: str, table: str) -> int:
    await conn.execute(f"VACUUM ANALYZE {schema}.{table}")
    cur = await conn.execute("SELECT pg_total_relation_size(%s)", (f"{schema}.{table}",))
    row = await cur.fetchone()
    return int(row[0])


def run(n: int = TRADES) -> list[dict[str, Any]]:
    trades, books = make_trades(n), make_books(BOOKS)
    with tempfile.TemporaryDirectory() as folder:
        rows = asyncio.run(_sqlite(Path(folder), trades, books))
    rows += asyncio.run(_postgres(trades, books))
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else TRADES):
        print(f"{row['benchmark']:48} {row['value']:>14,.1f} {row['unit']:10} {row['goal']}")
