"""The PostgreSQL store through a lost connection: the call in flight is done again on a new
connection and the rows end exact; an outage shorter than the reconnect window is waited
out, a longer one is StoreUnavailableError (a RetryLaterError) and recovers by itself; the
operator hears of it once (``database_lost``, ``database_back``); no message carries the URL
or its password.

The connection is lost for real: ``pg_terminate_backend`` on this test's own backends (found
by the application_name the test gives its URL), or a loopback TCP proxy to the server that
the test closes (refusing new connections, cutting the open ones) and opens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from helpers import wait_until
from psycopg.conninfo import conninfo_to_dict
from services import PgSpace, free_port
from test_store import T0, minute_candles

from marketspine import StoreError, StoreUnavailableError
from marketspine._base.time import MINUTE_MS
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.postgres import PostgresStore

M1 = TF["1m"]
PASSWORD = "pw-s3cret-4242"  # the test server trusts loopback: a password is never asked


def own_url(pg_space: PgSpace) -> tuple[str, str]:
    """The test schema's URL with an application_name of its own (and that name)."""
    name = f"mstest_{uuid.uuid4().hex[:10]}"
    return f"{pg_space.url}&application_name={name}", name


def terminate(pg_space: PgSpace, name: str) -> int:
    """End every backend of ``name`` (the server's own word for "connection lost");
    how many were ended."""
    with psycopg.connect(pg_space.base_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    return sum(1 for (ended,) in rows if ended)


def events(records: list[logging.LogRecord]) -> list[str]:
    return [str(getattr(r, "event", "")) for r in records if hasattr(r, "event")]


async def test_a_terminated_connection_is_reopened_and_the_call_redone(
    pg_space: PgSpace, caplog: pytest.LogCaptureFixture
) -> None:
    url, name = own_url(pg_space)
    candles = minute_candles("KRW-BTC", T0, 50)
    caplog.set_level(logging.INFO, logger="marketspine.store")
    async with PostgresStore(url) as store:
        await store.write_page("KRW-BTC", M1, candles, (T0, T0 + 50 * MINUTE_MS))
        assert terminate(pg_space, name) == 1
        # The next call finds the connection dead; it reconnects and answers, not raises.
        assert await store.read("KRW-BTC", M1, T0, T0 + 50 * MINUTE_MS) == candles
        assert terminate(pg_space, name) == 1
        more = minute_candles("KRW-BTC", T0 + 50 * MINUTE_MS, 10)
        await store.write_page("KRW-BTC", M1, more, (T0 + 50 * MINUTE_MS, T0 + 60 * MINUTE_MS))
        assert (await store.coverage("KRW-BTC", M1)).ranges == ((T0, T0 + 60 * MINUTE_MS),)
        assert await store.read("KRW-BTC", M1, T0, T0 + 60 * MINUTE_MS) == candles + more
    assert events(caplog.records) == ["database_lost", "database_back"] * 2
    lost = next(r for r in caplog.records if getattr(r, "event", None) == "database_lost")
    assert lost.levelno == logging.WARNING and "administrator command" in lost.getMessage()
    back = next(r for r in caplog.records if getattr(r, "event", None) == "database_back")
    assert back.levelno == logging.INFO and "back after" in back.getMessage()


async def test_a_page_in_flight_is_written_once_after_its_connection_is_terminated(
    pg_space: PgSpace, caplog: pytest.LogCaptureFixture
) -> None:
    url, name = own_url(pg_space)
    caplog.set_level(logging.INFO, logger="marketspine.store")
    first = minute_candles("KRW-BTC", T0, 200)
    page = minute_candles("KRW-BTC", T0 + 200 * MINUTE_MS, 200)
    async with PostgresStore(url) as store:
        await store.write_page("KRW-BTC", M1, first, (T0, T0 + 200 * MINUTE_MS))
        with psycopg.connect(pg_space.url, autocommit=True) as holder:
            # The series' advisory lock held here stops the page's transaction halfway (after
            # its BEGIN, before its rows): the connection is then cut under it.
            holder.execute(
                "SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"KRW-BTC/{M1.key}",)
            )
            writing = asyncio.create_task(
                store.write_page("KRW-BTC", M1, page, (T0 + 200 * MINUTE_MS, T0 + 400 * MINUTE_MS))
            )

            def waiting() -> set[int]:
                """The backends of this store waiting on the lock."""
                rows = holder.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock' AND state = 'active'",
                    (name,),
                ).fetchall()
                return {pid for (pid,) in rows}

            await wait_until(lambda: len(waiting()) == 1, 30, "the page's transaction to wait")
            (cut,) = waiting()
            assert terminate(pg_space, name) == 1
            # The page is redone on a new connection (which waits on the lock again).
            await wait_until(lambda: bool(waiting() - {cut}), 30, "the page to be redone")
            holder.execute("SELECT pg_advisory_unlock_all()")
            await writing
        assert await store.read("KRW-BTC", M1, T0, T0 + 400 * MINUTE_MS) == first + page
        assert (await store.coverage("KRW-BTC", M1)).ranges == ((T0, T0 + 400 * MINUTE_MS),)
    with psycopg.connect(pg_space.url) as conn:
        counted = conn.execute("SELECT count(*), count(DISTINCT start_ms) FROM candles")
        assert counted.fetchone() == (400, 400)
    assert events(caplog.records) == ["database_lost", "database_back"]


class Proxy:
    """A loopback TCP proxy to the PostgreSQL server, on a port of its own: ``close`` cuts
    every connection and refuses new ones (the server gone), ``open`` serves again."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for each in (writer, up_writer):
            self._writers.discard(each)
            each.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@contextlib.asynccontextmanager
async def proxied(pg_space: PgSpace) -> AsyncIterator[tuple[Proxy, str]]:
    """An open proxy, and the test schema's URL through it (with a password in it)."""
    info = conninfo_to_dict(pg_space.url)
    proxy = Proxy(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    await proxy.open()
    user, db = info.get("user") or "postgres", info.get("dbname") or "postgres"
    url = (
        f"postgresql://{user}:{PASSWORD}@127.0.0.1:{proxy.port}/{db}"
        f"?options=-csearch_path%3D{pg_space.schema}"
    )
    try:
        yield proxy, url
    finally:
        await proxy.close()


async def test_an_outage_inside_the_window_is_waited_out(
    pg_space: PgSpace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="marketspine.store")
    candles = minute_candles("KRW-BTC", T0, 20)
    async with proxied(pg_space) as (proxy, url), PostgresStore(url) as store:
        await store.write_page("KRW-BTC", M1, candles, (T0, T0 + 20 * MINUTE_MS))
        await proxy.close()
        reading = asyncio.create_task(store.read("KRW-BTC", M1, T0, T0 + 20 * MINUTE_MS))
        await wait_until(lambda: "database_lost" in events(caplog.records), 30, "the loss")
        assert not reading.done()  # waiting for the server, not failing
        await proxy.open()
        assert await reading == candles
    assert events(caplog.records) == ["database_lost", "database_back"]
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


async def test_an_outage_past_the_window_fails_until_the_server_is_back(
    pg_space: PgSpace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="marketspine.store")
    candles = minute_candles("KRW-BTC", T0, 20)
    async with proxied(pg_space) as (proxy, url):
        async with PostgresStore(url, reconnect_for_s=0.5) as store:
            await store.write_page("KRW-BTC", M1, candles, (T0, T0 + 20 * MINUTE_MS))
            await proxy.close()
            failures: list[StoreUnavailableError] = []
            for _ in range(2):  # the second gives up after one try: the outage outlasted 0.5 s
                with pytest.raises(StoreUnavailableError) as info:
                    await store.read("KRW-BTC", M1, T0, T0 + 20 * MINUTE_MS)
                failures.append(info.value)
            await proxy.open()
            assert await store.read("KRW-BTC", M1, T0, T0 + 20 * MINUTE_MS) == candles
        # Never reached at all: out of reach at once, no waiting, and still no URL shown.
        await proxy.close()
        with pytest.raises(StoreUnavailableError) as info:
            async with PostgresStore(url):
                pass
        failures.append(info.value)
    for failure in failures:
        text = str(failure)
        assert failure.retry_after is not None
        assert f"at 127.0.0.1:{proxy.port}" in text, text
        assert PASSWORD not in text and url not in text and "postgres:" not in text, text
    assert "out of reach for" in str(failures[0])
    assert events(caplog.records) == ["database_lost", "database_back"]
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
        assert PASSWORD not in str(vars(record))


async def test_a_store_error_that_is_no_loss_is_not_retried(pg_space: PgSpace) -> None:
    url, name = own_url(pg_space)
    async with PostgresStore(url) as store:
        with psycopg.connect(pg_space.url, autocommit=True) as conn:
            conn.execute("DROP TABLE delisted")
        with pytest.raises(StoreError) as info:
            await store.delisted()
        assert not isinstance(info.value, StoreUnavailableError)
        assert terminate(pg_space, name) == 1  # the same connection: never reopened
