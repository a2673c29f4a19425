"""``PostgresStore``: the ``CandleStore`` in PostgreSQL, for several processes on one database.

Same rows and promises as ``SQLiteStore``: keyed by (market, ``Timeframe.key``, start_ms);
each page is written with the coverage it proves in ONE transaction. A page goes in by COPY
into a temporary staging table, then one upsert into ``candles``. Two processes writing the
same series serialize their coverage merge on an advisory lock, so neither loses the other's
range. The schema lives in the connection's ``search_path`` (``options=-csearch_path=...``
in the URL picks another schema); ``marketspine_schema`` holds its version.

A lost connection (the server restarted, the backend terminated, the network cut) is opened
again with backoff and the call in flight done again from its start, so a collector, a
recorder or serve carries on; the operator hears of it once ("database_lost", then
"database_back"). Messages name the database by name, host and port, never by its URL,
which may hold a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from .._base.extras import missing_extra

# Every way to PostgreSQL (a postgresql:// --db, Spine(db=...), migrate) imports this module:
# without the driver it is one line naming the extra, not an ImportError from here.
try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError:
    raise missing_extra("postgres") from None

from .._base.coverage import Coverage, Range
from .._base.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from .._base.urls import is_postgres_url, redact_url
from ..errors import InvalidRequestError, StoreError, StoreFullError, StoreUnavailableError
from ..records import Candle
from .recording import PG_RECORDING_SCHEMA
from .room import FullDisk
from .sqlite import (
    HISTORY_KEEP_MS,
    HISTORY_KEEP_RUNS,
    RunRecord,
    SeriesSummary,
    history_record,
    history_row,
    runs_missing,
)

__all__ = ["APPLICATION_NAME", "PG_SCHEMA_VERSION", "RECONNECT_FOR_S", "PostgresStore"]

log = logging.getLogger("marketspine.store")

_Conn = psycopg.AsyncConnection[tuple[Any, ...]]
_T = TypeVar("_T")
_NAME_OF_KEY = {tf.key: tf.name for tf in TIMEFRAMES.values()}
_MIGRATION_LOCK = 0x6D61726B65747370  # pg_advisory_xact_lock key: "marketsp"

# Index i moves the schema from version i to i + 1. Append, never edit.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE candles (
        market TEXT NOT NULL,
        timeframe TEXT NOT NULL,
        start_ms BIGINT NOT NULL,
        open DOUBLE PRECISION NOT NULL,
        high DOUBLE PRECISION NOT NULL,
        low DOUBLE PRECISION NOT NULL,
        close DOUBLE PRECISION NOT NULL,
        volume DOUBLE PRECISION NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        last_trade_ms BIGINT NOT NULL,
        PRIMARY KEY (market, timeframe, start_ms)
    );
    CREATE TABLE coverage (
        market TEXT NOT NULL,
        timeframe TEXT NOT NULL,
        start_ms BIGINT NOT NULL,
        end_ms BIGINT NOT NULL,
        PRIMARY KEY (market, timeframe, start_ms)
    );
    CREATE TABLE listing (
        market TEXT NOT NULL,
        timeframe TEXT NOT NULL,
        start_ms BIGINT NOT NULL,
        PRIMARY KEY (market, timeframe)
    );
    """,
    # Markets upstream stopped listing (404) while this store held their candles.
    """
    CREATE TABLE delisted (
        market TEXT NOT NULL PRIMARY KEY,
        seen_ms BIGINT NOT NULL
    );
    """,
    # The run history: every finished warmup and backfill job (see ``RunRecord``).
    """
    CREATE TABLE run_history (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        ok BOOLEAN NOT NULL,
        markets INTEGER NOT NULL,
        results JSONB NOT NULL,
        error TEXT,
        label TEXT
    );
    CREATE INDEX run_history_by_kind ON run_history (kind, started_ms);
    """,
    # What ``marketspine record`` keeps: trades, known trade gaps, books, tickers.
    PG_RECORDING_SCHEMA,
)
PG_SCHEMA_VERSION = len(_MIGRATIONS)

_COPY_CHUNK = 1 << 18  # bytes per COPY write

# How long a lost database may stay out of reach before calls fail (StoreUnavailableError):
# long enough for a server restart or a fail-over, short enough that a supervisor hears of
# a real outage (the collector then exits 1 and is restarted; its coverage resumes it).
RECONNECT_FOR_S = 60.0
_BACKOFF_FIRST_S = 0.25  # the first retry is at once; then 0.25 s, doubling up to 8 s
_BACKOFF_MAX_S = 8.0
# A call whose work loses the connection every time (a statement that crashes the server)
# is not redone forever.
_MAX_REDOS = 5
# pg_stat_activity shows marketspine's connections by this name, unless the URL names one.
APPLICATION_NAME = "marketspine"
# Server refusals ("FATAL:") that pass: the server starting, stopping or full. Any other
# refusal (a password, a role or a database that does not exist) retrying will not fix.
_PASSING_REFUSALS = (
    "the database system is",
    "too many clients",
    "connection slots are reserved",
    "terminating connection",
)
_COLUMNS = "market, timeframe, start_ms, open, high, low, close, volume, value, last_trade_ms"
_UPSERT = (
    f"INSERT INTO candles ({_COLUMNS}) SELECT {_COLUMNS} FROM candles_staging "
    "ON CONFLICT (market, timeframe, start_ms) DO UPDATE SET open = EXCLUDED.open, "
    "high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, "
    "volume = EXCLUDED.volume, value = EXCLUDED.value, last_trade_ms = EXCLUDED.last_trade_ms"
)


class PostgresStore:
    """A ``CandleStore`` in a PostgreSQL database. Use as ``async with PostgresStore(url)``
    or call ``aclose()``. Every method raises StoreError when the database cannot be used."""

    def __init__(self, url: str, *, reconnect_for_s: float = RECONNECT_FOR_S) -> None:
        if not is_postgres_url(url):
            raise InvalidRequestError(
                f"{redact_url(url)!r} is not a PostgreSQL URL: expected "
                "postgresql://USER@HOST:PORT/DB"
            )
        try:
            self._info = conninfo_to_dict(url)
        except psycopg.Error:
            raise InvalidRequestError(
                f"{redact_url(url)!r} is not a valid PostgreSQL URL: expected "
                "postgresql://USER@HOST:PORT/DB"
            ) from None
        self.url = url
        self._shown = _described(self._info)
        self._full_disk = FullDisk(self._shown)
        # What no message may carry: the URL itself and its password.
        password = str(self._info.get("password") or "")
        self._secrets = [url] + ([password] if len(password) >= 4 else [])
        self._reconnect_for = reconnect_for_s
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()  # one statement sequence at a time on the connection
        self._closed = False
        self._down_since: float | None = None  # monotonic time the connection was lost

    async def __aenter__(self) -> PostgresStore:
        try:
            await self._run(_nothing)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection. Safe to call twice."""
        self._closed = True
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    # -- the CandleStore interface -------------------------------------------------------

    async def write_page(
        self,
        market: str,
        timeframe: Timeframe,
        candles: Sequence[Candle],
        covered: Range,
        *,
        listing_ms: int | None = None,
    ) -> None:
        """Store ``candles`` and mark ``covered`` complete in one transaction (see
        ``SQLiteStore.write_page``; same errors). A transaction the lost connection cut is
        written again whole after reconnecting (an upsert and a coverage union: done twice,
        the rows are the same)."""
        tf = timeframe
        # Checking and formatting a big page is CPU work: off the event loop.
        data = await asyncio.to_thread(_copy_data, market, tf, candles, covered)
        key = tf.key

        async def work(conn: _Conn) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{market}/{key}",)
                )
                if data:
                    async with cur.copy(f"COPY candles_staging ({_COLUMNS}) FROM STDIN") as copy:
                        for at in range(0, len(data), _COPY_CHUNK):
                            await copy.write(data[at : at + _COPY_CHUNK])
                    await cur.execute(_UPSERT)
                merged = (await self._coverage(conn, market, key)).add(*covered)
                await cur.execute(
                    "DELETE FROM coverage WHERE market = %s AND timeframe = %s", (market, key)
                )
                await cur.executemany(
                    "INSERT INTO coverage VALUES (%s, %s, %s, %s)",
                    [(market, key, start, end) for start, end in merged.ranges],
                )
                if listing_ms is not None:
                    await _put_listing(conn, market, key, listing_ms)

        await self._run(work, write=True)

    async def read(
        self, market: str, timeframe: Timeframe, start_ms: int, end_ms: int
    ) -> list[Candle]:
        """The stored candles starting in ``[start_ms, end_ms)``, ascending."""
        tf = timeframe

        async def work(conn: _Conn) -> list[tuple[Any, ...]]:
            cur = await conn.execute(
                "SELECT start_ms, open, high, low, close, volume, value, last_trade_ms "
                "FROM candles WHERE market = %s AND timeframe = %s AND start_ms >= %s "
                "AND start_ms < %s ORDER BY start_ms",
                (market, tf.key, start_ms, end_ms),
            )
            return await cur.fetchall()

        rows = await self._run(work)
        name, market = tf.name, sys.intern(market)  # one string shared with upstream's pages
        if len(rows) < 1000:
            return [Candle(market, name, *row) for row in rows]
        return await asyncio.to_thread(lambda: [Candle(market, name, *row) for row in rows])

    async def coverage(self, market: str, timeframe: Timeframe) -> Coverage:
        """The ranges known complete for this series, with its listing if known."""
        key = timeframe.key

        async def work(conn: _Conn) -> Coverage:
            return await self._coverage(conn, market, key)

        return await self._run(work)

    async def set_listing(self, market: str, timeframe: Timeframe, start_ms: int) -> None:
        """Record that no candle of this series starts before ``start_ms`` (the later wins)."""
        key = timeframe.key

        async def work(conn: _Conn) -> None:
            async with conn.transaction():
                await _put_listing(conn, market, key, start_ms)

        await self._run(work, write=True)

    async def listing(self, market: str, timeframe: Timeframe) -> int | None:
        """The recorded listing start, or None when no backfill reached it yet."""
        key = timeframe.key

        async def work(conn: _Conn) -> int | None:
            return await _get_listing(conn, market, key)

        return await self._run(work)

    async def summary(self) -> list[SeriesSummary]:
        """One entry per stored series, sorted by market then timeframe key."""
        return await self._run(self._summary)

    async def _summary(self, conn: _Conn) -> list[SeriesSummary]:
        cur = await conn.execute(
            "SELECT market, timeframe, COUNT(*), MIN(start_ms), MAX(start_ms), "
            "MAX(last_trade_ms) FROM candles GROUP BY market, timeframe"
        )
        counts = {
            (str(m), str(k)): (int(n), f, la, lt) for m, k, n, f, la, lt in await cur.fetchall()
        }
        series = set(counts)
        for table in ("coverage", "listing"):
            cur = await conn.execute(f"SELECT DISTINCT market, timeframe FROM {table}")
            series.update((str(m), str(k)) for m, k in await cur.fetchall())
        summaries = []
        for market, key in sorted(series):
            coverage = await self._coverage(conn, market, key)
            rows, first, last, last_trade = counts.get((market, key), (0, None, None, None))
            summaries.append(
                SeriesSummary(
                    market,
                    _NAME_OF_KEY.get(key, key),
                    coverage.ranges,
                    rows,
                    None if first is None else int(first),
                    None if last is None else int(last),
                    coverage.listing_ms,
                    None if last_trade is None else int(last_trade),
                )
            )
        return summaries

    async def set_delisted(self, market: str, seen_ms: int) -> None:
        """Record that upstream no longer lists ``market`` (first seen at ``seen_ms``; an
        earlier record is kept). Its candles stay."""

        async def work(conn: _Conn) -> None:
            await conn.execute(
                "INSERT INTO delisted VALUES (%s, %s) ON CONFLICT (market) DO NOTHING",
                (market, seen_ms),
            )

        await self._run(work, write=True)

    async def delisted(self) -> dict[str, int]:
        """Markets recorded as delisted → when that was first seen (epoch ms)."""

        async def work(conn: _Conn) -> dict[str, int]:
            cur = await conn.execute("SELECT market, seen_ms FROM delisted")
            return {str(m): int(seen) for m, seen in await cur.fetchall()}

        return await self._run(work)

    async def add_run(self, run: RunRecord) -> None:
        """Keep ``run`` in the run history, pruning that kind's runs beyond the bound (see
        ``SQLiteStore.add_run``). Should the connection be lost just as the transaction
        commits, the run may be kept twice (the one call that is not idempotent; a history
        row, never a candle)."""

        async def work(conn: _Conn) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO run_history (kind, trigger, started_ms, duration_ms, ok, "
                    "markets, results, error, label) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)",
                    history_row(run),
                )
                await conn.execute(
                    "DELETE FROM run_history WHERE kind = %s AND (started_ms < %s OR id IN "
                    "(SELECT id FROM run_history WHERE kind = %s "
                    "ORDER BY started_ms DESC, id DESC OFFSET %s))",
                    (run.kind, run.started_ms - HISTORY_KEEP_MS, run.kind, HISTORY_KEEP_RUNS),
                )

        await self._run(work, write=True)

    async def runs(self, kind: str, limit: int = 100) -> list[RunRecord]:
        """The newest ``limit`` runs of ``kind`` in the run history, newest first."""

        async def work(conn: _Conn) -> list[RunRecord]:
            cur = await conn.execute(
                "SELECT kind, trigger, started_ms, duration_ms, ok, markets, results, error, "
                "label FROM run_history WHERE kind = %s ORDER BY started_ms DESC, id DESC "
                "LIMIT %s",
                (kind, max(0, limit)),
            )
            return [history_record(*row) for row in await cur.fetchall()]

        return await self._run(work)

    async def run_history(self) -> list[RunRecord]:
        """Every run the history keeps, of every kind, oldest first (for ``migrate``)."""
        return await self._run(_run_history)

    async def merge_runs(self, runs: Sequence[RunRecord]) -> int:
        """Add, oldest first and in one transaction, the runs of ``runs`` the history does
        not hold yet (``runs_missing``), so merging the same runs again adds none, even
        when a lost connection has the transaction done again after it committed; nothing
        is pruned here (the next ``add_run`` does). Returns how many were added."""

        async def work(conn: _Conn) -> int:
            async with conn.transaction(), conn.cursor() as cur:
                # Merges take turns: each sees what the one before it added.
                await cur.execute("LOCK TABLE run_history IN SHARE ROW EXCLUSIVE MODE")
                added = runs_missing(await _run_history(conn), runs)
                if not added:
                    return 0
                await cur.executemany(
                    "INSERT INTO run_history (kind, trigger, started_ms, duration_ms, ok, "
                    "markets, results, error, label) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)",
                    [history_row(run) for run in added],
                )
            return len(added)

        return await self._run(work, write=True)

    async def call(self, work: Callable[[_Conn], Awaitable[_T]], *, write: bool = False) -> _T:
        """``work(connection)`` as the store's own calls run (held alone; done again whole on
        a new connection after a loss, so it must leave the same rows when done twice; it
        writes with ``write``): how the recording tables (``_store.recording_postgres``) are
        reached."""
        return await self._run(work, write=write)

    # -- the connection ------------------------------------------------------------------

    async def _run(self, work: Callable[[_Conn], Awaitable[_T]], *, write: bool = False) -> _T:
        """``work`` on the connection, held alone; psycopg errors become StoreError here,
        only here (StoreFullError when the disk is full). ``write``: ``work`` writes.

        Each ``work`` is reads, or one transaction that leaves the same rows when done
        twice; so when the connection is lost under it, it is done again from its start on
        a new connection (``_connection``: backoff, for at most ``reconnect_for_s`` since
        the loss). Raises StoreUnavailableError when the database stays out of reach."""
        async with self._lock:
            for _ in range(_MAX_REDOS):
                conn = await self._connection()
                try:
                    done = await work(conn)
                except psycopg.errors.DiskFull as exc:
                    # The server stays up and the connection usable: only writes fail.
                    error = StoreFullError(
                        f"cannot write the candle database {self._shown}: {self._said(exc)} "
                        "(free space on the server's disk; what is stored is kept)"
                    )
                    self._full_disk.refused(error)
                    raise error from exc
                except psycopg.Error as exc:
                    if not (conn.broken or conn.closed):
                        raise StoreError(
                            f"candle database {self._shown}: {self._said(exc)}"
                        ) from exc
                    await self._lost(self._said(exc))
                    continue
                if write:
                    self._full_disk.written()
                return done
            raise StoreUnavailableError(
                f"the candle database {self._shown} dropped the connection {_MAX_REDOS} "
                "times in one call; retry later",
                retry_after=_BACKOFF_MAX_S,
            )

    async def _connection(self) -> _Conn:
        """The open connection, or a new one. After a loss, an unreachable server is tried
        again at once, then after 0.25, 0.5, 1, ... 8 s, until ``reconnect_for_s`` since
        the loss; past that (or on the first open) one failed try raises
        StoreUnavailableError."""
        if self._closed:
            raise StoreError(f"the candle database {self._shown} is closed")
        if self._conn is not None:
            if not self._conn.closed:
                return self._conn
            # Closed under a call that ended otherwise (cancelled halfway): lost all the same.
            await self._lost("the connection was closed")
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                conn = await self._open()
                break
            except StoreUnavailableError as exc:
                if self._down_since is None:
                    raise  # never connected, or the loss was not this store's to wait out
                down_for = time.monotonic() - self._down_since
                left = self._reconnect_for - down_for
                if left <= 0 or self._closed:
                    cause = exc.__cause__ or exc
                    raise StoreUnavailableError(
                        f"the candle database {self._shown} is out of reach for "
                        f"{down_for:.0f} s: {self._said(cause)}",
                        retry_after=delay,
                    ) from exc
                await asyncio.sleep(min(delay, left))
                delay = min(2 * delay, _BACKOFF_MAX_S)
        self._conn = conn
        if self._down_since is not None:
            down_for = time.monotonic() - self._down_since
            self._down_since = None
            log.info(
                "candle database %s back after %.1f s",
                self._shown,
                down_for,
                extra={
                    "event": "database_back",
                    "key": self._shown,
                    "down_s": round(down_for, 1),
                },
            )
        return conn

    async def _lost(self, said: str) -> None:
        """The connection broke (``said``: how): drop it; the next call reconnects."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None
        if self._down_since is not None:
            return  # one outage, one line (and one alert)
        self._down_since = time.monotonic()
        log.warning(
            "candle database %s lost (%s); reconnecting for up to %.3g s",
            self._shown,
            said,
            self._reconnect_for,
            extra={"event": "database_lost", "key": self._shown, "error": said},
        )

    async def _open(self) -> _Conn:
        """A new connection, the schema migrated. Raises StoreUnavailableError when the
        server cannot be reached or is busy restarting, StoreError when it refuses these
        credentials or this database (retrying will not help)."""
        name: dict[str, Any] = (
            {} if "application_name" in self._info else {"application_name": APPLICATION_NAME}
        )
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5, **name
            )
        except psycopg.OperationalError as exc:
            said = self._said(exc)
            if "FATAL:" in said and not any(p in said for p in _PASSING_REFUSALS):
                raise StoreError(f"the candle database {self._shown} refused: {said}") from exc
            raise StoreUnavailableError(
                f"cannot reach the candle database {self._shown}: {said} "
                "(expected a reachable PostgreSQL server, e.g. postgresql://USER@HOST:5432/DB)",
                retry_after=_BACKOFF_FIRST_S,
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open the candle database {self._shown}: {self._said(exc)}"
            ) from exc
        try:
            await _migrate(conn, self._shown)
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS candles_staging "
                "(LIKE candles) ON COMMIT DELETE ROWS"
            )
        except psycopg.Error as exc:
            await conn.close()
            if conn.broken:
                raise StoreUnavailableError(
                    f"lost the candle database {self._shown} while opening it: {self._said(exc)}",
                    retry_after=_BACKOFF_FIRST_S,
                ) from exc
            raise StoreError(
                f"cannot open the candle database {self._shown}: {self._said(exc)}"
            ) from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    def _said(self, exc: BaseException) -> str:
        """``exc`` on one line, without the URL or its password (a driver message may quote
        the connection string it could not parse)."""
        text = " ".join(str(exc).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_url(text)

    @staticmethod
    async def _coverage(conn: _Conn, market: str, key: str) -> Coverage:
        cur = await conn.execute(
            "SELECT start_ms, end_ms FROM coverage WHERE market = %s AND timeframe = %s "
            "ORDER BY start_ms",
            (market, key),
        )
        ranges = [(int(s), int(e)) for s, e in await cur.fetchall()]
        return Coverage.of(ranges, await _get_listing(conn, market, key))


def _copy_text(value: str) -> str:
    """``value`` escaped for COPY's text format."""
    return value.translate({92: "\\\\", 9: "\\t", 10: "\\n", 13: "\\r"})


async def _nothing(conn: _Conn) -> None:
    """No work: opening the connection is the point (``__aenter__``)."""


def _described(info: dict[str, Any]) -> str:
    """How messages and logs name a PostgreSQL database (its connection parameters, from
    ``conninfo_to_dict``): name, host and port, never the URL, which may hold a password."""
    host = info.get("host") or info.get("hostaddr") or "localhost"
    port = info.get("port") or "5432"
    name = info.get("dbname") or info.get("user") or "postgres"
    return f"PostgreSQL {name!r} at {host}:{port}"


def _copy_data(market: str, tf: Timeframe, candles: Sequence[Candle], covered: Range) -> bytes:
    """The page as COPY text rows (tab-separated), checked as SQLiteStore checks a page;
    the last of a duplicate start wins."""
    start, end = covered
    if start > end:
        raise InvalidRequestError(f"covered range {covered} ends before it starts")
    head = f"{_copy_text(market)}\t{_copy_text(tf.key)}"
    rows: dict[int, str] = {}
    for c in candles:
        if not start <= c.start_ms < end:
            raise InvalidRequestError(
                f"candle at {c.start_ms} lies outside the covered range {covered}"
            )
        if c.market != market or (c.timeframe != tf.name and parse_timeframe(c.timeframe) != tf):
            raise InvalidRequestError(
                f"candle of {c.market} {c.timeframe} written to {market} {tf.name}"
            )
        rows[c.start_ms] = (
            f"{head}\t{c.start_ms}\t{c.open!r}\t{c.high!r}\t{c.low!r}\t{c.close!r}\t"
            f"{c.volume!r}\t{c.value!r}\t{c.last_trade_ms}\n"
        )
    return "".join(rows.values()).encode()


async def _migrate(conn: _Conn, shown: str) -> None:
    """Bring the schema to PG_SCHEMA_VERSION (one process at a time); raises StoreError for
    a newer schema or a foreign ``candles`` table."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        cur = await conn.execute(
            "SELECT to_regclass('marketspine_schema') IS NOT NULL, "
            "to_regclass('candles') IS NOT NULL"
        )
        row = await cur.fetchone()
        assert row is not None
        versioned, has_candles = row
        if not versioned:
            if has_candles:
                raise StoreError(
                    f"{shown} has a table 'candles' that marketspine did not create; "
                    "expected a marketspine database (or pick another schema with "
                    "?options=-csearch_path%3DSCHEMA)"
                )
            await conn.execute("CREATE TABLE marketspine_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO marketspine_schema VALUES (0)")
        cur = await conn.execute("SELECT version FROM marketspine_schema")
        found = await cur.fetchone()
        version = int(found[0]) if found else 0
        if version > PG_SCHEMA_VERSION:
            raise StoreError(
                f"{shown} has schema version {version}, newer than this marketspine supports "
                f"({PG_SCHEMA_VERSION}); upgrade marketspine or use another --db"
            )
        for target in range(version, PG_SCHEMA_VERSION):
            await conn.execute(_MIGRATIONS[target])
            await conn.execute("UPDATE marketspine_schema SET version = %s", (target + 1,))


async def _run_history(conn: _Conn) -> list[RunRecord]:
    cur = await conn.execute(
        "SELECT kind, trigger, started_ms, duration_ms, ok, markets, results, error, label "
        "FROM run_history ORDER BY started_ms, id"
    )
    return [history_record(*row) for row in await cur.fetchall()]


async def _get_listing(conn: _Conn, market: str, key: str) -> int | None:
    cur = await conn.execute(
        "SELECT start_ms FROM listing WHERE market = %s AND timeframe = %s", (market, key)
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _put_listing(conn: _Conn, market: str, key: str, start_ms: int) -> None:
    await conn.execute(
        "INSERT INTO listing VALUES (%s, %s, %s) ON CONFLICT (market, timeframe) "
        "DO UPDATE SET start_ms = GREATEST(listing.start_ms, EXCLUDED.start_ms)",
        (market, key, start_ms),
    )
