"""The candle store: a small ``CandleStore`` interface and its SQLite implementation.

Rows are keyed by (market, ``Timeframe.key``, start_ms). ``Timeframe.key`` (``1min`` vs
``1month``) keeps minutes and months apart even where names are compared without case.
Each page of candles is committed together with the coverage it proves, in one transaction,
so a crash at any instant leaves either both or neither.

SQLite calls are blocking, so ``SQLiteStore`` runs every one of them on ONE dedicated worker
thread that owns the connection; the event loop only awaits the results.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from .._base.coverage import Coverage, Range
from .._base.time import DAY_MS
from .._base.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from ..errors import InvalidRequestError, StoreError, StoreFullError
from ..records import Candle
from .recording import SQLITE_PACKED_SIZES, SQLITE_RECORDING_SCHEMA
from .room import FullDisk
from .sqlite_open import open_read_only, open_read_write, store_error, verify_pages

__all__ = [
    "HISTORY_KEEP_MS",
    "HISTORY_KEEP_RUNS",
    "SCHEMA_VERSION",
    "CandleStore",
    "RunRecord",
    "SQLiteStore",
    "SeriesSummary",
    "history_record",
    "history_row",
    "run_key",
    "runs_missing",
]


T = TypeVar("T")

_NAME_OF_KEY = {tf.key: tf.name for tf in TIMEFRAMES.values()}

# Index i holds the script that moves the schema from version i to i + 1. Append, never edit.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE candles (
        market TEXT NOT NULL,
        timeframe TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        open REAL NOT NULL,
        high REAL NOT NULL,
        low REAL NOT NULL,
        close REAL NOT NULL,
        volume REAL NOT NULL,
        value REAL NOT NULL,
        last_trade_ms INTEGER NOT NULL,
        PRIMARY KEY (market, timeframe, start_ms)
    ) WITHOUT ROWID;
    CREATE TABLE coverage (
        market TEXT NOT NULL,
        timeframe TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        PRIMARY KEY (market, timeframe, start_ms)
    ) WITHOUT ROWID;
    CREATE TABLE listing (
        market TEXT NOT NULL,
        timeframe TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        PRIMARY KEY (market, timeframe)
    ) WITHOUT ROWID;
    """,
    # Markets upstream stopped listing (404) while this store held their candles.
    """
    CREATE TABLE delisted (
        market TEXT NOT NULL PRIMARY KEY,
        seen_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # The run history: every finished warmup and backfill job (see ``RunRecord``).
    """
    CREATE TABLE run_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        markets INTEGER NOT NULL,
        results TEXT NOT NULL,
        error TEXT,
        label TEXT
    );
    CREATE INDEX run_history_by_kind ON run_history (kind, started_ms);
    """,
    # What ``marketspine record`` keeps: trades, known trade gaps, books, tickers.
    SQLITE_RECORDING_SCHEMA,
    # A trade's sizes of at most 8 decimals as integer counts of 1e-8 (13 bytes less a trade).
    SQLITE_PACKED_SIZES,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# The run history is bounded: per kind, the last HISTORY_KEEP_RUNS runs that started within
# HISTORY_KEEP_MS of the newest one; older runs are pruned as a new one is added.
HISTORY_KEEP_RUNS = 1000
HISTORY_KEEP_MS = 90 * DAY_MS


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """What is stored for one market and timeframe (for ``marketspine status``)."""

    market: str
    timeframe: str
    ranges: tuple[Range, ...]
    rows: int
    first_ms: int | None
    last_ms: int | None
    listing_ms: int | None
    last_trade_ms: int | None = None  # of the newest stored candle


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One finished warmup or backfill job, as the run history keeps it."""

    kind: str  # "warmup" or "backfill"
    trigger: str  # "start", "scheduled", "manual" (warmups) or "job"
    started_ms: int  # epoch ms
    duration_ms: int
    ok: bool
    markets: int  # markets listed (warmup) or asked for (backfill job)
    # Per exchange for a warmup ({exchange, ok, markets, duration_ms, error}), per market
    # for a backfill job ({market, ok, candles, error}).
    results: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    label: str | None = None  # a backfill job's id and series, e.g. "job-3 1m"


class CandleStore(Protocol):
    """Where candles and their coverage live. SQLite now; PostgreSQL can slot in later."""

    async def write_page(
        self,
        market: str,
        timeframe: Timeframe,
        candles: Sequence[Candle],
        covered: Range,
        *,
        listing_ms: int | None = None,
    ) -> None: ...

    async def read(
        self, market: str, timeframe: Timeframe, start_ms: int, end_ms: int
    ) -> list[Candle]: ...

    async def coverage(self, market: str, timeframe: Timeframe) -> Coverage: ...

    async def set_listing(self, market: str, timeframe: Timeframe, start_ms: int) -> None: ...

    async def listing(self, market: str, timeframe: Timeframe) -> int | None: ...

    async def summary(self) -> list[SeriesSummary]: ...

    async def set_delisted(self, market: str, seen_ms: int) -> None: ...

    async def delisted(self) -> dict[str, int]: ...

    async def add_run(self, run: RunRecord) -> None: ...

    async def runs(self, kind: str, limit: int = 100) -> list[RunRecord]: ...

    async def run_history(self) -> list[RunRecord]: ...

    async def merge_runs(self, runs: Sequence[RunRecord]) -> int: ...

    async def aclose(self) -> None: ...


class SQLiteStore:
    """A ``CandleStore`` in one SQLite file (WAL). Use as ``async with SQLiteStore(path)``
    or call ``aclose()``. Every method raises StoreError when the file cannot be used."""

    def __init__(self, path: str | Path, *, read_only: bool = False, verify: bool = False) -> None:
        self.path = Path(path)
        # Read-only opens never create, migrate or write the file (nor its directory), so
        # a database on a read-only file or file system can still be read.
        self.read_only = read_only
        # A damaged page can make a range read quietly skip rows; ``verify`` checks every
        # page once at open (PRAGMA quick_check: linear, about 0.25 s per 150 MB) for
        # readers that must not miss any (export, status).
        self.verify = verify
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="marketspine-db")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._full_disk = FullDisk(str(self.path))
        self._opened: Future[None] = self._executor.submit(self._open)

    async def __aenter__(self) -> SQLiteStore:
        try:
            await self._run(lambda: None)
        except BaseException:
            await self.aclose()  # no __aexit__ follows a failed __aenter__: stop the thread
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the async interface -------------------------------------------------------------

    async def write_page(
        self,
        market: str,
        timeframe: Timeframe,
        candles: Sequence[Candle],
        covered: Range,
        *,
        listing_ms: int | None = None,
    ) -> None:
        """Store ``candles`` and mark ``covered`` complete, atomically (one transaction).
        ``listing_ms``, when given, records that no candle starts before it.

        Raises InvalidRequestError when a candle lies outside ``covered`` or belongs to
        another series (coverage must stay exact); StoreError when the write fails.
        """
        await self._run(lambda: self._write_page(market, timeframe, candles, covered, listing_ms))

    async def read(
        self, market: str, timeframe: Timeframe, start_ms: int, end_ms: int
    ) -> list[Candle]:
        """The stored candles starting in ``[start_ms, end_ms)``, ascending."""
        return await self._run(lambda: self._read(market, timeframe, start_ms, end_ms))

    async def coverage(self, market: str, timeframe: Timeframe) -> Coverage:
        """The ranges known complete for this series, with its listing if known."""
        key = timeframe.key
        return await self._run(lambda: self._coverage(self._connection(), market, key))

    async def set_listing(self, market: str, timeframe: Timeframe, start_ms: int) -> None:
        """Record that no candle of this series starts before ``start_ms`` (a later value
        than the one stored wins: both statements are true)."""
        key = timeframe.key
        await self._run(
            lambda: self._in_transaction(lambda c: _put_listing(c, market, key, start_ms))
        )

    async def listing(self, market: str, timeframe: Timeframe) -> int | None:
        """The recorded listing start, or None when no backfill reached it yet."""
        key = timeframe.key
        return await self._run(lambda: _get_listing(self._connection(), market, key))

    async def summary(self) -> list[SeriesSummary]:
        """One entry per stored series, sorted by market then timeframe key."""
        return await self._run(self._summary)

    async def set_delisted(self, market: str, seen_ms: int) -> None:
        """Record that upstream no longer lists ``market`` (first seen at ``seen_ms``; an
        earlier record is kept). Its candles stay."""

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO delisted VALUES (?, ?) ON CONFLICT (market) DO NOTHING",
                (market, seen_ms),
            )

        await self._run(lambda: self._in_transaction(put))

    async def delisted(self) -> dict[str, int]:
        """Markets recorded as delisted → when that was first seen (epoch ms)."""
        return await self._run(self._delisted)

    async def add_run(self, run: RunRecord) -> None:
        """Keep ``run`` in the run history, pruning that kind's runs beyond the bound
        (``HISTORY_KEEP_RUNS``, ``HISTORY_KEEP_MS`` before ``run.started_ms``)."""
        row = history_row(run)

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO run_history (kind, trigger, started_ms, duration_ms, ok, markets, "
                "results, error, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.execute(
                "DELETE FROM run_history WHERE kind = ? AND (started_ms < ? OR id IN "
                "(SELECT id FROM run_history WHERE kind = ? "
                "ORDER BY started_ms DESC, id DESC LIMIT -1 OFFSET ?))",
                (run.kind, run.started_ms - HISTORY_KEEP_MS, run.kind, HISTORY_KEEP_RUNS),
            )

        await self._run(lambda: self._in_transaction(put))

    async def runs(self, kind: str, limit: int = 100) -> list[RunRecord]:
        """The newest ``limit`` runs of ``kind`` in the run history, newest first."""
        return await self._run(lambda: self._runs(kind, limit))

    async def run_history(self) -> list[RunRecord]:
        """Every run the history keeps, of every kind, oldest first (for ``migrate``)."""
        return await self._run(lambda: self._run_history(self._connection()))

    async def merge_runs(self, runs: Sequence[RunRecord]) -> int:
        """Add, oldest first and in one transaction, the runs of ``runs`` the history does
        not hold yet (``runs_missing``), so merging the same runs again adds none; nothing
        is pruned here (the next ``add_run`` does). Returns how many were added."""
        added: list[RunRecord] = []

        def put(conn: sqlite3.Connection) -> None:
            added[:] = runs_missing(self._run_history(conn), runs)
            if not added:
                return
            conn.executemany(
                "INSERT INTO run_history (kind, trigger, started_ms, duration_ms, ok, markets, "
                "results, error, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [history_row(run) for run in added],
            )

        await self._run(lambda: self._in_transaction(put))
        return len(added)

    async def call(self, work: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """``work(connection)`` on the store's own thread (in ONE write transaction with
        ``write``): how the recording tables (``_store.recording_sqlite``) are reached."""
        if not write:
            return await self._run(lambda: work(self._connection()))
        found: list[T] = []
        await self._run(lambda: self._in_transaction(lambda conn: found.append(work(conn))))
        return found[0]

    async def aclose(self) -> None:
        """Close the connection and stop the worker thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    # -- the worker thread ---------------------------------------------------------------

    async def _run(self, job: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError(f"the candle database {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._guarded(job))

    def _guarded(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the worker thread; sqlite3 errors become StoreError here, only here."""
        self._opened.result()
        try:
            return job()
        except sqlite3.Error as exc:
            error = store_error(exc, self.path)
            if isinstance(error, StoreFullError):
                self._full_disk.refused(error)
            raise error from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the candle database {self.path} is not open")
        return self._conn

    def _open(self) -> None:
        if self.read_only:
            self._conn = open_read_only(self.path, SCHEMA_VERSION)
        else:
            self._conn = open_read_write(self.path, _MIGRATIONS)
        if self.verify:
            try:
                verify_pages(self._conn, self.path)
            except BaseException:
                self._close()
                raise

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _in_transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a COMMIT refused (disk full) may leave it open
                conn.execute("ROLLBACK")
            raise
        self._full_disk.written()

    def _write_page(
        self,
        market: str,
        tf: Timeframe,
        candles: Sequence[Candle],
        covered: Range,
        listing_ms: int | None,
    ) -> None:
        start, end = covered
        if start > end:
            raise InvalidRequestError(f"covered range {covered} ends before it starts")
        key = tf.key
        rows = []
        for c in candles:
            if not start <= c.start_ms < end:
                raise InvalidRequestError(
                    f"candle at {c.start_ms} lies outside the covered range {covered}"
                )
            if c.market != market or (
                c.timeframe != tf.name and parse_timeframe(c.timeframe) != tf
            ):
                raise InvalidRequestError(
                    f"candle of {c.market} {c.timeframe} written to {market} {tf.name}"
                )
            rows.append(
                (market, key, c.start_ms, c.open, c.high, c.low, c.close, c.volume, c.value,
                 c.last_trade_ms)
            )  # fmt: skip

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR REPLACE INTO candles VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            merged = self._coverage(conn, market, key).add(*covered)
            conn.execute("DELETE FROM coverage WHERE market = ? AND timeframe = ?", (market, key))
            conn.executemany(
                "INSERT INTO coverage VALUES (?,?,?,?)",
                [(market, key, start, end) for start, end in merged.ranges],
            )
            if listing_ms is not None:
                _put_listing(conn, market, key, listing_ms)

        self._in_transaction(work)

    def _read(self, market: str, tf: Timeframe, start_ms: int, end_ms: int) -> list[Candle]:
        cursor = self._connection().execute(
            "SELECT start_ms, open, high, low, close, volume, value, last_trade_ms FROM candles "
            "WHERE market = ? AND timeframe = ? AND start_ms >= ? AND start_ms < ? "
            "ORDER BY start_ms",
            (market, tf.key, start_ms, end_ms),
        )
        name, market = tf.name, sys.intern(market)  # one string shared with upstream's pages
        return [Candle(market, name, *row) for row in cursor]

    @staticmethod
    def _coverage(conn: sqlite3.Connection, market: str, key: str) -> Coverage:
        ranges = conn.execute(
            "SELECT start_ms, end_ms FROM coverage WHERE market = ? AND timeframe = ? "
            "ORDER BY start_ms",
            (market, key),
        ).fetchall()
        return Coverage.of(ranges, _get_listing(conn, market, key))

    def _summary(self) -> list[SeriesSummary]:
        conn = self._connection()
        counts = {
            (market, key): (rows, first, last, last_trade)
            for market, key, rows, first, last, last_trade in conn.execute(
                "SELECT market, timeframe, COUNT(*), MIN(start_ms), MAX(start_ms), "
                "MAX(last_trade_ms) FROM candles GROUP BY market, timeframe"
            )
        }
        series = set(counts)
        series.update(conn.execute("SELECT DISTINCT market, timeframe FROM coverage").fetchall())
        series.update(conn.execute("SELECT market, timeframe FROM listing").fetchall())
        summaries = []
        for market, key in sorted(series):
            coverage = self._coverage(conn, market, key)
            rows, first, last, last_trade = counts.get((market, key), (0, None, None, None))
            summaries.append(
                SeriesSummary(
                    market,
                    _NAME_OF_KEY.get(key, key),
                    coverage.ranges,
                    rows,
                    first,
                    last,
                    coverage.listing_ms,
                    last_trade,
                )
            )
        return summaries

    def _delisted(self) -> dict[str, int]:
        conn = self._connection()
        try:
            rows = conn.execute("SELECT market, seen_ms FROM delisted").fetchall()
        except sqlite3.OperationalError:  # a read-only open of a store from before the table
            return {}
        return {market: seen for market, seen in rows}

    def _runs(self, kind: str, limit: int) -> list[RunRecord]:
        try:
            rows = (
                self._connection()
                .execute(
                    "SELECT kind, trigger, started_ms, duration_ms, ok, markets, results, error, "
                    "label FROM run_history WHERE kind = ? ORDER BY started_ms DESC, id DESC "
                    "LIMIT ?",
                    (kind, max(0, limit)),
                )
                .fetchall()
            )
        except sqlite3.OperationalError:  # a read-only open of a store from before the table
            return []
        return [history_record(*row) for row in rows]

    @staticmethod
    def _run_history(conn: sqlite3.Connection) -> list[RunRecord]:
        try:
            rows = conn.execute(
                "SELECT kind, trigger, started_ms, duration_ms, ok, markets, results, error, "
                "label FROM run_history ORDER BY started_ms, id"
            ).fetchall()
        except sqlite3.OperationalError:  # a read-only open of a store from before the table
            return []
        return [history_record(*row) for row in rows]


def _get_listing(conn: sqlite3.Connection, market: str, key: str) -> int | None:
    row = conn.execute(
        "SELECT start_ms FROM listing WHERE market = ? AND timeframe = ?", (market, key)
    ).fetchone()
    return None if row is None else int(row[0])


def _put_listing(conn: sqlite3.Connection, market: str, key: str, start_ms: int) -> None:
    conn.execute(
        "INSERT INTO listing VALUES (?, ?, ?) ON CONFLICT (market, timeframe) "
        "DO UPDATE SET start_ms = MAX(start_ms, excluded.start_ms)",
        (market, key, start_ms),
    )


def history_row(run: RunRecord) -> tuple[Any, ...]:
    """``run`` as the columns of a run_history row (results as JSON text)."""
    return (
        run.kind,
        run.trigger,
        run.started_ms,
        run.duration_ms,
        bool(run.ok),
        run.markets,
        json.dumps(list(run.results), separators=(",", ":")),
        run.error,
        run.label,
    )


def history_record(
    kind: str,
    trigger: str,
    started_ms: int,
    duration_ms: int,
    ok: object,
    markets: int,
    results: object,
    error: str | None,
    label: str | None,
) -> RunRecord:
    """A run_history row back as a ``RunRecord`` (results as JSON text or already decoded)."""
    found = json.loads(results) if isinstance(results, str | bytes) else results
    items = found if isinstance(found, list) else []
    return RunRecord(
        str(kind),
        str(trigger),
        int(started_ms),
        int(duration_ms),
        bool(ok),
        int(markets),
        tuple(item for item in items if isinstance(item, dict)),
        error,
        label,
    )


def run_key(run: RunRecord) -> tuple[Any, ...]:
    """What makes two kept runs the same run: every field, the results as JSON with sorted
    keys (PostgreSQL's jsonb does not keep the order they were written in)."""
    row = history_row(run)
    return (*row[:6], json.dumps(list(run.results), sort_keys=True), *row[7:])


def runs_missing(held: Sequence[RunRecord], runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs of ``runs`` that ``held`` does not hold, in their order: a run counts as
    held as many times as ``held`` has it (two equal runs are kept twice), so merging the
    same runs again adds none."""
    left = Counter(run_key(run) for run in held)
    missing = []
    for run in runs:
        key = run_key(run)
        if left[key]:
            left[key] -= 1
        else:
            missing.append(run)
    return missing
