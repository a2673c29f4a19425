"""Opening a marketspine SQLite file: read-write (WAL, schema migrated inside the write
transaction, so concurrent openers of a new file never collide) or read-only (never creates
or writes anything), an optional check of every page, and sqlite3 errors as one-line
StoreErrors that say what to do (read-only file, damaged file)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import StoreError, StoreFullError
from .default_path import sibling_hint

__all__ = ["open_read_only", "open_read_write", "store_error", "verify_pages"]


def open_read_write(path: Path, migrations: Sequence[str]) -> sqlite3.Connection:
    """A read-write connection in WAL mode with the schema brought up to date by
    ``migrations`` (index i moves version i to i + 1); StoreError when it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(
            f"cannot open the candle database {path}: {_cause(exc)} "
            "(expected a writable file path for a marketspine SQLite database)"
        ) from exc
    try:
        _check_pages(conn)
        _use_wal(conn)
        # NORMAL in WAL mode survives a killed process (only power loss may drop the
        # last commits), at a fraction of FULL's fsync cost.
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn, path, migrations)
    except (sqlite3.Error, StoreError) as exc:
        conn.close()
        if isinstance(exc, StoreError):
            raise
        if _is_read_only(exc):
            raise StoreError(
                f"cannot write the candle database {path}: {_cause(exc)} "
                "(the file or its folder is read-only; `status` and `export` can still "
                "read it, `collect` needs a writable --db)"
            ) from exc
        raise StoreError(
            f"cannot use {path} as a candle database: {_cause(exc)} "
            "(expected a marketspine SQLite database, or a new or empty file)"
        ) from exc
    return conn


def open_read_only(path: Path, schema_version: int) -> sqlite3.Connection:
    """A connection that never writes (status, export): a read-only file, or one in a
    read-only folder, can be read. StoreError when there is no marketspine database."""
    if not path.is_file():
        raise StoreError(
            f"no database at {path}: run `marketspine collect` first or pass --db"
            + sibling_hint(path)
        )
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the candle database {path}: {_cause(exc)}") from exc
    try:
        _check_pages(conn)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        if _is_read_only(exc):
            # A WAL database whose -shm cannot be created (read-only folder): when no
            # writer is active the file alone is the whole database.
            return _open_immutable(path, schema_version)
        raise StoreError(
            f"cannot use {path} as a candle database: {_cause(exc)} "
            "(expected a marketspine SQLite database)"
        ) from exc
    try:
        _check_version(conn, path, version, schema_version, expect_schema=True)
    except StoreError:
        conn.close()
        raise
    return conn


def _open_immutable(path: Path, schema_version: int) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        _check_pages(conn)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        _check_version(conn, path, version, schema_version, expect_schema=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the candle database {path}: {_cause(exc)}") from exc
    return conn


def _migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> None:
    """Bring the schema to len(migrations); raises StoreError for a newer, unknown schema.

    The version is read inside the write transaction (BEGIN IMMEDIATE), so of two processes
    opening the same new file at once one migrates and the other then sees the new version.
    """
    schema_version = len(migrations)
    for _ in range(schema_version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            _check_version(conn, path, version, schema_version, expect_schema=False)
            if version == schema_version:
                conn.execute("COMMIT")
                return
            for statement in migrations[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _check_version(
    conn: sqlite3.Connection, path: Path, version: int, schema_version: int, *, expect_schema: bool
) -> None:
    """StoreError for a newer schema, another program's database, or (``expect_schema``,
    when reading) a file with no marketspine schema yet."""
    if version > schema_version:
        raise StoreError(
            f"{path} has schema version {version}, newer than this marketspine supports "
            f"({schema_version}); upgrade marketspine or use another --db"
        )
    if version == 0:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if tables:
            raise StoreError(
                f"{path} is an SQLite database of something else (tables: "
                f"{', '.join(t for (t,) in tables)}); expected a marketspine database"
            )
        if expect_schema:
            raise StoreError(
                f"{path} holds no marketspine data yet: run `marketspine collect` first"
            )


def _use_wal(conn: sqlite3.Connection, *, timeout_s: float = 10.0) -> None:
    """Switch to WAL mode. SQLite answers "database is locked" at once, without its busy
    handler, when another connection switches the same new file at that instant: wait and
    retry (on the store's own thread) as the busy timeout would."""
    deadline = time.monotonic() + timeout_s
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)


def _check_pages(conn: sqlite3.Connection) -> None:
    """Ask SQLite to check every b-tree page as it is read, so a damaged page fails the
    query (StoreError) instead of quietly dropping rows."""
    conn.execute("PRAGMA cell_size_check = ON")


def verify_pages(conn: sqlite3.Connection, path: Path) -> None:
    """StoreError naming the first problem when any page of the database is damaged."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.Error as exc:
        raise StoreError(_damaged(path, _cause(exc))) from exc
    if problems != ["ok"]:
        lines = [line for text in problems for line in str(text).splitlines()]
        found = [line for line in lines if not line.startswith("***")]
        raise StoreError(_damaged(path, "; ".join(found[:2]) + ("; ..." if len(found) > 2 else "")))


def _damaged(path: Path, cause: str) -> str:
    return (
        f"the candle database {path} is damaged ({cause}): "
        "restore it from a copy, or collect again into a new --db"
    )


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    return "malformed" in str(exc)


def _is_read_only(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) == sqlite3.SQLITE_READONLY:
        return True
    return "readonly" in str(exc) or "read-only" in str(exc)


def _cause(exc: BaseException) -> str:
    """The one-line reason of an OSError or sqlite3 error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _is_full(exc: sqlite3.Error) -> bool:
    """Whether the disk holding the database (or its size limit) is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) == sqlite3.SQLITE_FULL:
        return True
    return "disk is full" in str(exc)


def store_error(exc: sqlite3.Error, path: Path) -> StoreError:
    """The StoreError for a failed statement on an open database."""
    if _is_full(exc):
        return StoreFullError(
            f"cannot write the candle database {path}: {_cause(exc)} "
            "(free space on its disk; what is stored is kept)"
        )
    if _is_read_only(exc):
        return StoreError(
            f"cannot write the candle database {path}: {_cause(exc)} "
            "(opened read-only, or the file is read-only)"
        )
    if _is_corrupt(exc):
        return StoreError(_damaged(path, _cause(exc)))
    return StoreError(f"candle database {path}: {_cause(exc)}")
