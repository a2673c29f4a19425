"""What only the PostgreSQL store has to promise: its schema, its errors, several writers."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from services import PgSpace
from test_store import T0, minute_candles

from marketspine import InvalidRequestError, StoreError, StoreUnavailableError
from marketspine._base.time import MINUTE_MS
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._base.urls import redact_url
from marketspine._store.postgres import PG_SCHEMA_VERSION, PostgresStore


async def test_a_fresh_schema_is_migrated_once_by_concurrent_openers(pg_space: PgSpace) -> None:
    stores = [PostgresStore(pg_space.url) for _ in range(3)]
    await asyncio.gather(*(s.__aenter__() for s in stores))
    for store in stores:
        await store.aclose()
    with psycopg.connect(pg_space.url) as conn:
        assert conn.execute("SELECT version FROM marketspine_schema").fetchall() == [
            (PG_SCHEMA_VERSION,)
        ]


async def test_two_writers_of_one_series_keep_both_ranges(pg_space: PgSpace) -> None:
    a, b = PostgresStore(pg_space.url), PostgresStore(pg_space.url)
    async with a, b:
        pages = [(a if i % 2 else b, T0 + i * 10 * MINUTE_MS) for i in range(20)]
        await asyncio.gather(
            *(
                s.write_page(
                    "KRW-BTC",
                    TF["1m"],
                    minute_candles("KRW-BTC", at, 10),
                    (at, at + 10 * MINUTE_MS),
                )
                for s, at in pages
            )
        )
        assert (await a.coverage("KRW-BTC", TF["1m"])).ranges == ((T0, T0 + 200 * MINUTE_MS),)
        assert len(await b.read("KRW-BTC", TF["1m"], T0, T0 + 200 * MINUTE_MS)) == 200


async def test_a_rewritten_page_replaces_its_rows(pg_space: PgSpace) -> None:
    async with PostgresStore(pg_space.url) as store:
        first = minute_candles("KRW-BTC", T0, 3)
        await store.write_page("KRW-BTC", TF["1m"], first, (T0, T0 + 3 * MINUTE_MS))
        second = minute_candles("KRW-BTC", T0 + MINUTE_MS, 3)
        await store.write_page("KRW-BTC", TF["1m"], second, (T0 + MINUTE_MS, T0 + 4 * MINUTE_MS))
        assert await store.read("KRW-BTC", TF["1m"], T0, T0 + 4 * MINUTE_MS) == first[:1] + second


async def test_a_newer_schema_and_a_foreign_table_are_refused(pg_space: PgSpace) -> None:
    async with PostgresStore(pg_space.url):
        pass
    with psycopg.connect(pg_space.url, autocommit=True) as conn:
        conn.execute("UPDATE marketspine_schema SET version = %s", (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this marketspine supports"):
        async with PostgresStore(pg_space.url):
            pass
    with psycopg.connect(pg_space.url, autocommit=True) as conn:
        conn.execute("DROP TABLE marketspine_schema, candles, coverage, listing")
        conn.execute("CREATE TABLE candles (id INTEGER)")
    with pytest.raises(StoreError, match="'candles' that marketspine did not create"):
        async with PostgresStore(pg_space.url):
            pass


async def test_bad_urls_and_unreachable_servers_say_what_was_expected() -> None:
    with pytest.raises(InvalidRequestError, match="expected postgresql://"):
        PostgresStore("mysql://x")
    store = PostgresStore("postgresql://u:secret@127.0.0.1:1/db")
    # Out of reach is no bad input (a RetryLaterError: the CLI exits 1, not 2), and the
    # message names the database without its URL.
    with pytest.raises(
        StoreUnavailableError, match=r"cannot reach .* PostgreSQL 'db' at 127.0.0.1:1: .*reachable"
    ) as info:
        async with store:
            pass
    assert "secret" not in str(info.value) and "u:" not in str(info.value)
    with pytest.raises(StoreError, match="closed"):
        await store.summary()
    assert redact_url("postgresql://me@h/db") == "postgresql://me@h/db"
