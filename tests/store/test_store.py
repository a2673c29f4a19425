"""The candle stores, SQLite and PostgreSQL, through one suite: exact round trips, atomic
pages, coverage, errors, loop lag, the run history. Tests taking ``make_store`` run against
both back-ends."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from services import PgSpace

from marketspine import InvalidRequestError, StoreError, parse_timeframe
from marketspine._base.coverage import Coverage
from marketspine._base.time import DAY_MS, MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.postgres import PostgresStore
from marketspine._store.sqlite import (
    HISTORY_KEEP_MS,
    HISTORY_KEEP_RUNS,
    SCHEMA_VERSION,
    RunRecord,
    SQLiteStore,
)
from marketspine.records import Candle

T0 = parse_time("2024-01-01")

MakeStore = Callable[[], SQLiteStore | PostgresStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """Opens a new store on this test's own database (the same one on every call)."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "db.sqlite")
    url = request.getfixturevalue("pg_space").url
    return lambda: PostgresStore(url)


def minute_candles(market: str, first: int, n: int, timeframe: str = "1m") -> list[Candle]:
    tf = parse_timeframe(timeframe)
    return [
        Candle(market, timeframe, tf.shift(first, i), 100.0 + i, 101.5 + i, 99.25 + i,
               100.5 + i, 0.1 * i, 10.01 * i, tf.shift(first, i) + 59_999)
        for i in range(n)
    ]  # fmt: skip


async def test_page_round_trip_is_exact_and_ascending(make_store: MakeStore) -> None:
    candles = minute_candles("KRW-BTC", T0, 300)
    async with make_store() as store:
        # written newest first, read back ascending
        await store.write_page("KRW-BTC", TF["1m"], candles[::-1], (T0, T0 + 300 * MINUTE_MS))
        assert await store.read("KRW-BTC", TF["1m"], T0, T0 + 300 * MINUTE_MS) == candles
        assert (
            await store.read("KRW-BTC", TF["1m"], T0 + 10 * MINUTE_MS, T0 + 12 * MINUTE_MS)
            == (candles[10:12])
        )
        assert await store.read("KRW-ETH", TF["1m"], T0, T0 + 300 * MINUTE_MS) == []


async def test_data_and_coverage_survive_reopening(make_store: MakeStore) -> None:
    candles = minute_candles("KRW-BTC", T0, 5)
    async with make_store() as store:
        await store.write_page("KRW-BTC", TF["1m"], candles, (T0 - MINUTE_MS, T0 + 5 * MINUTE_MS))
        await store.write_page("KRW-BTC", TF["1m"], [], (T0 + 5 * MINUTE_MS, T0 + 9 * MINUTE_MS))
        await store.write_page("KRW-BTC", TF["1m"], [], (T0 + 20 * MINUTE_MS, T0 + 30 * MINUTE_MS))
    async with make_store() as store:
        coverage = await store.coverage("KRW-BTC", TF["1m"])
        assert coverage == Coverage.of(
            [(T0 - MINUTE_MS, T0 + 9 * MINUTE_MS), (T0 + 20 * MINUTE_MS, T0 + 30 * MINUTE_MS)]
        )
        assert await store.read("KRW-BTC", TF["1m"], 0, 2 * T0) == candles


async def test_sqlite_keeps_its_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SQLiteStore(path) as store:
        await store.write_page("KRW-BTC", TF["1m"], [], (T0, T0 + MINUTE_MS))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_minutes_and_months_live_side_by_side(make_store: MakeStore) -> None:
    minutes = minute_candles("KRW-BTC", T0, 3, "1m")
    months = minute_candles("KRW-BTC", T0, 3, "1M")
    async with make_store() as store:
        await store.write_page("KRW-BTC", TF["1m"], minutes, (T0, T0 + 3 * MINUTE_MS))
        await store.write_page("KRW-BTC", TF["1M"], months, (T0, parse_time("2024-04-01")))
        # the month of 2024-01 and the minute 00:00 share start_ms yet stay apart
        assert minutes[0].start_ms == months[0].start_ms
        assert await store.read("KRW-BTC", TF["1m"], T0, 2 * T0) == minutes
        assert await store.read("KRW-BTC", TF["1M"], T0, 2 * T0) == months
        assert (await store.coverage("KRW-BTC", TF["1m"])).ranges == ((T0, T0 + 3 * MINUTE_MS),)
        assert (await store.coverage("KRW-BTC", TF["1M"])).ranges == (
            (T0, parse_time("2024-04-01")),
        )
        names = {(s.timeframe, s.rows) for s in await store.summary()}
        assert names == {("1m", 3), ("1M", 3)}


async def test_a_page_that_cannot_be_written_whole_writes_nothing(make_store: MakeStore) -> None:
    candles = minute_candles("KRW-BTC", T0, 10)
    async with make_store() as store:
        with pytest.raises(InvalidRequestError, match="outside the covered range"):
            await store.write_page("KRW-BTC", TF["1m"], candles, (T0, T0 + 9 * MINUTE_MS))
        with pytest.raises(InvalidRequestError, match="written to KRW-ETH"):
            await store.write_page("KRW-ETH", TF["1m"], candles, (T0, T0 + 10 * MINUTE_MS))
        assert await store.read("KRW-BTC", TF["1m"], 0, 2 * T0) == []
        assert await store.coverage("KRW-BTC", TF["1m"]) == Coverage()


async def test_listing_keeps_the_later_statement_and_joins_coverage(make_store: MakeStore) -> None:
    async with make_store() as store:
        assert await store.listing("KRW-BTC", TF["1d"]) is None
        await store.set_listing("KRW-BTC", TF["1d"], T0)
        await store.set_listing("KRW-BTC", TF["1d"], T0 - 10)
        assert await store.listing("KRW-BTC", TF["1d"]) == T0
        await store.write_page("KRW-BTC", TF["1d"], [], (T0, T0 + 10), listing_ms=T0 + 5)
        coverage = await store.coverage("KRW-BTC", TF["1d"])
        assert coverage.listing_ms == T0 + 5 and coverage.ranges == ((T0, T0 + 10),)


async def test_summary_lists_every_series(make_store: MakeStore) -> None:
    async with make_store() as store:
        assert await store.summary() == []
        btc = minute_candles("KRW-BTC", T0, 4)
        await store.write_page("KRW-BTC", TF["1m"], btc, (T0, T0 + 10 * MINUTE_MS))
        await store.write_page("KRW-ETH", TF["1h"], [], (T0, T0 + 3_600_000))
        summary = {s.market: s for s in await store.summary()}
    assert summary["KRW-BTC"].rows == 4
    assert summary["KRW-BTC"].first_ms == btc[0].start_ms
    assert summary["KRW-BTC"].last_ms == btc[-1].start_ms
    assert summary["KRW-BTC"].ranges == ((T0, T0 + 10 * MINUTE_MS),)
    assert (summary["KRW-ETH"].timeframe, summary["KRW-ETH"].rows) == ("1h", 0)
    assert summary["KRW-ETH"].first_ms is None


async def test_a_text_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database at all\n" * 100)
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match=r"notes\.txt.*expected a marketspine SQLite database"):
        await store.coverage("KRW-BTC", TF["1m"])
    await store.aclose()
    assert path.read_text().startswith("not a database")


async def test_a_corrupt_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SQLiteStore(path) as store:
        await store.write_page("KRW-BTC", TF["1m"], minute_candles("KRW-BTC", T0, 50), (T0, 2 * T0))
    data = bytearray(path.read_bytes())
    data[0:16] = b"garbage garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="candle database"):
        async with SQLiteStore(path):
            pass
    # the failed open left no worker thread behind
    assert not [t for t in threading.enumerate() if t.name.startswith("marketspine-db")]


async def test_another_programs_database_and_a_newer_schema_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(StoreError, match=r"something else.*accounts"):
        async with SQLiteStore(other):
            pass
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this marketspine supports"):
        async with SQLiteStore(newer):
            pass


async def test_a_directory_is_refused_and_a_closed_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        async with SQLiteStore(tmp_path):
            pass
    store = SQLiteStore(tmp_path / "x" / "db.sqlite")  # missing parents are created
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.summary()


async def test_a_big_write_does_not_stall_the_event_loop(make_store: MakeStore) -> None:
    candles = minute_candles("KRW-BTC", T0, 100_000)
    covered = (T0, T0 + 100_000 * MINUTE_MS)
    async with make_store() as store:
        lags: list[float] = []
        write_done = asyncio.Event()

        async def ticker() -> None:
            while not write_done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.002)
                lags.append(time.perf_counter() - before - 0.002)

        async def write() -> None:
            started = time.perf_counter()
            await store.write_page("KRW-BTC", TF["1m"], candles, covered)
            write_done.set()
            durations.append(time.perf_counter() - started)

        durations: list[float] = []
        async with asyncio.TaskGroup() as group:
            group.create_task(ticker())
            group.create_task(write())
        assert len(await store.read("KRW-BTC", TF["1m"], *covered)) == 100_000
    # the write took many ticker periods, yet no tick was held up for long
    assert durations[0] > 0.05, "the write must be big enough to matter"
    assert len(lags) > 10
    # Relative to the write, not a fixed 50 ms: on a loaded machine the whole process can
    # be descheduled for tens of ms; a write holding the loop would stall it for all of it.
    assert max(lags) < durations[0] / 2, (
        f"event loop stalled {max(lags) * 1000:.1f} ms of a {durations[0] * 1000:.1f} ms write"
    )


async def test_delisted_markets_are_remembered_with_the_first_sighting(
    make_store: MakeStore,
) -> None:
    async with make_store() as store:
        assert await store.delisted() == {}
        await store.set_delisted("KRW-OLD", T0)
        await store.set_delisted("KRW-OLD", T0 + 1000)  # the first sighting stays
        assert await store.delisted() == {"KRW-OLD": T0}
    async with make_store() as store:
        assert await store.delisted() == {"KRW-OLD": T0}


# -- the run history: every finished warmup and backfill job, newest first, bounded per kind
# (the last HISTORY_KEEP_RUNS, within HISTORY_KEEP_MS); an older file gains the table.


def warmup(at: int, *, ok: bool = True, trigger: str = "scheduled") -> RunRecord:
    upbit = {"exchange": "upbit", "ok": ok, "markets": 3 if ok else 0, "duration_ms": 12}
    return RunRecord(
        "warmup",
        trigger,
        at,
        15,
        ok,
        3 if ok else 0,
        ({**upbit, "error": None if ok else "ConnectError: refused"},),
        None if ok else "upbit: ConnectError: refused",
    )


async def test_runs_come_back_newest_first_per_kind_and_survive_reopening(
    make_store: MakeStore,
) -> None:
    job = RunRecord(
        "backfill",
        "job",
        T0 + 5,
        2500,
        False,
        2,
        ({"market": "KRW-BTC", "ok": True, "candles": 60, "error": None},),
        "cancelled",
        "job-1 1m",
    )
    async with make_store() as store:
        assert await store.runs("warmup") == []
        await store.add_run(warmup(T0, trigger="start"))
        await store.add_run(warmup(T0 + 10, ok=False, trigger="manual"))
        await store.add_run(job)
    async with make_store() as store:
        warmups = await store.runs("warmup")
        assert [(r.started_ms, r.trigger, r.ok) for r in warmups] == [
            (T0 + 10, "manual", False),
            (T0, "start", True),
        ]
        assert warmups[0] == warmup(T0 + 10, ok=False, trigger="manual")
        assert await store.runs("backfill") == [job]
        assert [r.started_ms for r in await store.runs("warmup", limit=1)] == [T0 + 10]


async def test_the_history_is_bounded_by_count_and_age(make_store: MakeStore) -> None:
    async with make_store() as store:
        await store.add_run(RunRecord("backfill", "job", T0 - 400 * DAY_MS, 1, True, 1))
        old = T0 - HISTORY_KEEP_MS - 1
        await store.add_run(warmup(old))
        for i in range(HISTORY_KEEP_RUNS + 2):
            await store.add_run(warmup(T0 + i * MINUTE_MS))
        kept = await store.runs("warmup", limit=5000)
        # the run older than 90 days and the two oldest beyond the count are gone
        assert len(kept) == HISTORY_KEEP_RUNS
        assert kept[0].started_ms == T0 + (HISTORY_KEEP_RUNS + 1) * MINUTE_MS
        assert kept[-1].started_ms == T0 + 2 * MINUTE_MS
        # another kind's runs are bounded by their own inserts only
        assert len(await store.runs("backfill")) == 1


async def test_an_older_sqlite_file_gains_the_history_and_keeps_its_candles(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    async with SQLiteStore(path) as store:
        await store.write_page(
            "KRW-BTC", TF["1m"], minute_candles("KRW-BTC", T0, 3), (T0, T0 + 3 * MINUTE_MS)
        )
    # Make it the file of a marketspine from before the run history (schema version 2).
    with sqlite3.connect(path) as conn:
        for table in ("run_history", "trades", "trade_gaps", "orderbooks", "tickers"):
            conn.execute(f"DROP TABLE {table}")  # and what came after it
        conn.execute("PRAGMA user_version = 2")
    async with SQLiteStore(path, read_only=True) as store:  # a read-only open never migrates
        assert await store.runs("warmup") == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    async with SQLiteStore(path) as store:
        await store.add_run(warmup(T0))
        assert len(await store.runs("warmup")) == 1
        assert len(await store.read("KRW-BTC", TF["1m"], T0, T0 + 3 * MINUTE_MS)) == 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_an_older_postgres_schema_gains_the_history(pg_space: PgSpace) -> None:
    async with PostgresStore(pg_space.url) as store:
        await store.write_page("KRW-BTC", TF["1m"], [], (T0, T0 + MINUTE_MS))
    with psycopg.connect(pg_space.url, autocommit=True) as conn:
        conn.execute("DROP TABLE run_history, trades, trade_gaps, orderbooks, tickers")
        conn.execute("UPDATE marketspine_schema SET version = 2")
    async with PostgresStore(pg_space.url) as store:
        await store.add_run(warmup(T0))
        assert [r.started_ms for r in await store.runs("warmup")] == [T0]
        assert (await store.coverage("KRW-BTC", TF["1m"])).ranges == ((T0, T0 + MINUTE_MS),)
