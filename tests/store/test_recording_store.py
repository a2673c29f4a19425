"""The recording tables, SQLite and PostgreSQL through one suite: every field of a trade,
book and ticker back exactly, each trade stored once, known gaps added and closed in the same
transaction as the trades, and an older database migrated with its candles kept."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from services import PgSpace

from marketspine._base.time import MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.postgres import PG_SCHEMA_VERSION, PostgresStore
from marketspine._store.recording import TradeGap
from marketspine._store.recording_rows import (
    pack_size,
    pack_units,
    trade_row,
    unpack_size,
    unpack_units,
)
from marketspine._store.recording_store import recording_for
from marketspine._store.sqlite import SCHEMA_VERSION, SQLiteStore
from marketspine.records import Candle, Orderbook, OrderbookUnit, Ticker, Trade

T0 = parse_time("2026-01-05")

MakeStore = Callable[[], SQLiteStore | PostgresStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "db.sqlite")
    url = request.getfixturevalue("pg_space").url
    return lambda: PostgresStore(url)


def trades(market: str, first_ms: int, n: int, *, best: bool = True) -> list[Trade]:
    """``n`` trades with every kind of value a field takes: whole and fractional prices,
    8-decimal sizes, both sides, negative changes, 17-digit ids beyond 2^53."""
    out = []
    for i in range(n):
        ms = first_ms + 37 * i
        price = 95_000_000.0 + 1000 * i if i % 3 else 0.00001234 * (i + 1)
        out.append(
            Trade(market, ms, price, round(0.00012345 * (i + 1), 8), "BID" if i % 2 else "ASK",
                  ms * 10_000 + i % 2, 94_500_000.0, price - 94_500_000.0,
                  *((price + 1000, 0.5 + i, price - 1000, 0.25) if best else (None,) * 4))
        )  # fmt: skip
    return out


def book(market: str, ms: int, levels: int = 15) -> Orderbook:
    units = tuple(
        OrderbookUnit(100.5 + i, 0.1 * (i + 1), 99.5 - i, 0.2 * (i + 1)) for i in range(levels)
    )
    return Orderbook(market, ms, 12.375, 24.0000001, units, 0.0)


def ticker(market: str, ms: int, *, ws: bool = True) -> Ticker:
    extra = ("BID", 12.5, 13.25, "ACTIVE", None) if ws else (None,) * 5
    return Ticker(market, ms, ms - 5, 101.5, 100.0, 102.0, 99.0, 100.0, "RISE", 1.5, 0.015,
                  0.001, 1234.5, 125_000.25, 2000.0, 200_000.5, 150.0, "2025-03-01", 50.0,
                  "2025-08-01", *extra)  # fmt: skip


async def test_every_field_comes_back_exactly_and_each_trade_once(make_store: MakeStore) -> None:
    rows = trades("KRW-BTC", T0, 200) + trades("KRW-BTC", T0 + 10_000, 50, best=False)
    async with make_store() as store:
        recording = recording_for(store)
        assert await recording.write(rows[:120]) == 120
        # a rerun delivers some again: only the new ones count, nothing is duplicated
        assert await recording.write(rows[100:][::-1]) == len(rows) - 120
        assert await recording.write(trades("KRW-ETH", T0, 3)) == 3
        got = await recording.trades("KRW-BTC", T0, T0 + 20_000)
        assert got == sorted(rows, key=lambda t: t.seq)
        assert all(type(t.price) is float and type(t.seq) is int for t in got)
        assert await recording.trade_count("KRW-BTC") == len(rows)
        assert await recording.trade_count() == len(rows) + 3
        assert await recording.last_trade("KRW-BTC") == max(rows, key=lambda t: t.seq)
        assert await recording.first_trade("KRW-BTC") == min(rows, key=lambda t: t.seq)
        assert await recording.last_trade("KRW-XRP") is None
        assert await recording.trades("KRW-BTC", T0 + 37, T0 + 37 * 3) == rows[1:3]
        assert await recording.trades("KRW-BTC", T0, T0 + 20_000, limit=2) == rows[:2]


async def test_books_and_tickers_come_back_and_a_later_one_of_the_same_ms_wins(
    make_store: MakeStore,
) -> None:
    async with make_store() as store:
        recording = recording_for(store)
        books = [book("KRW-BTC", T0 + i * 100, 15 if i % 2 else 30) for i in range(5)]
        tickers = [ticker("KRW-BTC", T0 + i * 100, ws=i != 2) for i in range(5)]
        assert await recording.write(orderbooks=books, tickers=tickers) == 0
        newer = Orderbook("KRW-BTC", T0, 1.0, 2.0, books[0].units[:1], 0.0)
        await recording.write(orderbooks=[newer])
        assert await recording.orderbooks("KRW-BTC", T0, T0 + 1000) == [newer, *books[1:]]
        assert await recording.orderbooks("KRW-BTC", T0 + 100, T0 + 200) == books[1:2]
        assert await recording.tickers("KRW-BTC", T0, T0 + 1000) == tickers
        assert await recording.tickers("KRW-ETH", T0, T0 + 1000) == []


async def test_known_gaps_are_kept_with_their_trades_and_closed_by_a_fill(
    make_store: MakeStore,
) -> None:
    before, after = trades("KRW-BTC", T0, 3), trades("KRW-BTC", T0 + 60_000, 3)
    gap = TradeGap("KRW-BTC", before[-1].seq, after[0].seq, before[-1].ms, after[0].ms,
                   "REST trades failed: 503", T0 + 70_000)  # fmt: skip
    async with make_store() as store:
        recording = recording_for(store)
        await recording.write(before)
        await recording.write(after, gaps=[gap])
        await recording.write(trades("KRW-ETH", T0, 1), gaps=[
            TradeGap("KRW-ETH", 1, 2, 3, 4, "older than 7 days", 5)])  # fmt: skip
    async with make_store() as store:  # kept across reopening
        recording = recording_for(store)
        assert await recording.trade_gaps("KRW-BTC") == [gap]
        assert [g.market for g in await recording.trade_gaps()] == ["KRW-BTC", "KRW-ETH"]
        middle = trades("KRW-BTC", T0 + 30_000, 2)
        assert await recording.write(middle, closed_gaps=[gap]) == 2
        assert await recording.trade_gaps("KRW-BTC") == []
        assert await recording.trade_count("KRW-BTC") == 8


def test_book_levels_pack_into_eight_bytes_a_value() -> None:
    units = book("KRW-BTC", T0, 30).units
    assert len(pack_units(units)) == 30 * 4 * 8
    assert unpack_units(pack_units(units)) == units
    assert unpack_units(b"") == ()


async def test_an_older_sqlite_file_gains_the_recording_tables_and_keeps_its_candles(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    candle = Candle("KRW-BTC", "1m", T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4.5, T0 + 59_000)
    async with SQLiteStore(path) as store:
        await store.write_page("KRW-BTC", TF["1m"], [candle], (T0, T0 + MINUTE_MS))
    with sqlite3.connect(path) as conn:  # the file of a marketspine from before recording
        for table in ("trades", "trade_gaps", "orderbooks", "tickers"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 2}")
    async with SQLiteStore(path, read_only=True) as store:  # read-only: nothing recorded yet
        assert await recording_for(store).trade_count() == 0
        assert await recording_for(store).last_trade("KRW-BTC") is None
    async with SQLiteStore(path) as store:
        assert await recording_for(store).write(trades("KRW-BTC", T0, 2)) == 2
        assert await store.read("KRW-BTC", TF["1m"], T0, T0 + MINUTE_MS) == [candle]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_an_older_postgres_schema_gains_the_recording_tables(pg_space: PgSpace) -> None:
    async with PostgresStore(pg_space.url) as store:
        await store.write_page("KRW-BTC", TF["1m"], [], (T0, T0 + MINUTE_MS))
    with psycopg.connect(pg_space.url, autocommit=True) as conn:
        conn.execute("DROP TABLE trades, trade_gaps, orderbooks, tickers")
        conn.execute("UPDATE marketspine_schema SET version = %s", (PG_SCHEMA_VERSION - 1,))
    async with PostgresStore(pg_space.url) as store:
        assert await recording_for(store).write(trades("KRW-BTC", T0, 2)) == 2
        assert (await store.coverage("KRW-BTC", TF["1m"])).ranges == ((T0, T0 + MINUTE_MS),)
    with psycopg.connect(pg_space.url) as conn:
        assert conn.execute("SELECT version FROM marketspine_schema").fetchone() == (
            PG_SCHEMA_VERSION,
        )


def test_sizes_pack_into_integers_exactly_where_they_have_eight_decimals() -> None:
    rand = random.Random(8)
    for _ in range(20_000):
        size = round(rand.random() * rand.choice((0.001, 1.0, 1e4, 1e6)), 8)
        packed = pack_size(size)
        assert isinstance(packed, int) and unpack_size(packed) == size
    for odd in (1 / 3, 1e-9, 2.0**60, 0.1 + 0.2):  # not 8-decimal: kept as the float
        assert pack_size(odd) == odd and isinstance(pack_size(odd), float)
        assert unpack_size(pack_size(odd)) == odd
    assert pack_size(None) is None and unpack_size(None) is None


async def test_sqlite_keeps_eight_decimal_sizes_as_integers(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    odd = Trade("KRW-BTC", T0 + 9_000, 1.5, 1 / 3, "BID", 17_000_000_000_000_001, 1.0, 0.5)
    rows = [*trades("KRW-BTC", T0, 20), odd]
    async with SQLiteStore(path) as store:
        recording = recording_for(store)
        await recording.write(rows)
        assert await recording.trades("KRW-BTC", 0, 2 * T0) == sorted(rows, key=lambda t: t.seq)
    with sqlite3.connect(path) as conn:
        kinds = conn.execute(
            "SELECT typeof(volume), typeof(best_ask_size), COUNT(*) FROM trades GROUP BY 1, 2"
        ).fetchall()
    assert ("integer", "integer", 20) in kinds and ("real", "null", 1) in kinds


async def test_a_version_4_file_gets_its_sizes_packed_and_reads_the_same(tmp_path: Path) -> None:
    from marketspine._store.sqlite import _MIGRATIONS
    from marketspine._store.sqlite_open import open_read_write

    path = tmp_path / "v4.sqlite"
    rows = [*trades("KRW-BTC", T0, 30), *trades("KRW-ETH", T0, 5, best=False)]
    odd = Trade("KRW-BTC", T0 + 9_000, 1.5, 1 / 3, "BID", 17_000_000_000_000_001, 1.0, 0.5)
    conn = open_read_write(path, _MIGRATIONS[:4])  # the schema before sizes were packed
    conn.executemany(
        "INSERT INTO trades VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [trade_row(t) for t in [*rows, odd]]
    )
    conn.close()
    async with SQLiteStore(path) as store:
        recording = recording_for(store)
        assert await recording.trades("KRW-BTC", 0, 2 * T0) == sorted(
            [*rows[:30], odd], key=lambda t: t.seq
        )
        assert await recording.trades("KRW-ETH", 0, 2 * T0) == rows[30:]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        kinds = dict(conn.execute("SELECT typeof(volume), COUNT(*) FROM trades GROUP BY 1"))
    assert kinds == {"integer": 35, "real": 1}


async def test_the_book_at_a_time_is_the_last_stored_at_or_before_it(make_store: MakeStore) -> None:
    books = [book("KRW-BTC", T0 + i * 1000) for i in range(3)]
    async with make_store() as store:
        recording = recording_for(store)
        await recording.write(orderbooks=[*books, book("KRW-ETH", T0 - 5000)])
        assert await recording.orderbook_at("KRW-BTC", T0 - 1) is None
        assert await recording.orderbook_at("KRW-BTC", T0) == books[0]
        assert await recording.orderbook_at("KRW-BTC", T0 + 1999) == books[1]
        assert await recording.orderbook_at("KRW-BTC", T0 + 10**9) == books[2]
        assert await recording.row_count("orderbooks", "KRW-BTC") == 3
        assert await recording.row_count("trades", "KRW-BTC") == 0
