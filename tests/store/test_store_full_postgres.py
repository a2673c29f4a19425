"""A full disk under the PostgreSQL store, as under SQLite (test_store_full.py): a write is
refused with StoreFullError (what recorders wait out with ``write_when_room``), said once in
the log and once more when a write goes through again; what was stored stays readable.

The disk is real: a database whose tablespace is a small tmpfs of its own, mounted here (as
root) for the test and filled up by a file beside PostgreSQL's, so the server itself meets
"No space left on device" (SQLSTATE 53100) when it extends a table."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from helpers import database_alerts, rising_minutes
from services import PG_URL, _absent

from marketspine import StoreFullError, StoreUnavailableError
from marketspine._base.time import MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.postgres import PostgresStore
from marketspine.records import Candle

T0 = parse_time("2024-01-01")


@dataclass(frozen=True)
class SmallDisk:
    """A database on a tmpfs of its own, and a way to fill that tmpfs up and free it."""

    url: str
    mount: Path

    def fill(self) -> None:
        """Take every byte left on the disk (a file written until ENOSPC)."""
        with open(self.mount / "filler", "wb") as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()

    def free(self) -> None:
        (self.mount / "filler").unlink()


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    import psycopg

    try:
        server = psycopg.connect(PG_URL, autocommit=True, connect_timeout=2)
    except psycopg.Error as exc:
        _absent(f"PostgreSQL at {PG_URL}", exc)
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    mount = Path(tempfile.mkdtemp(prefix="marketspine-pg-full-", dir="/tmp"))
    name = f"ms_full_{uuid.uuid4().hex[:12]}"
    mounted = made = False
    try:
        if owner is None:
            _absent("a tmpfs of its own (mounted as root)", PermissionError("not root"))
        assert owner is not None
        mount.chmod(0o755)
        options = f"size=24m,uid={owner.pw_uid},gid={owner.pw_gid},mode=0700"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            _absent("a tmpfs of its own", OSError(result.stderr.strip()))
        mounted = True
        try:
            server.execute(f"CREATE TABLESPACE {name} LOCATION '{mount}'")
        except psycopg.Error as exc:  # a server elsewhere cannot see this machine's tmpfs
            _absent("a PostgreSQL server on this machine (a tablespace here)", exc)
        server.execute(f"CREATE DATABASE {name} TABLESPACE {name}")
        made = True
        parts = urlsplit(PG_URL)
        yield SmallDisk(urlunsplit(parts._replace(path=f"/{name}")), mount)
    finally:
        if made:
            server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        with contextlib.suppress(psycopg.Error):
            server.execute(f"DROP TABLESPACE IF EXISTS {name}")
        server.close()
        if mounted:
            subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def span(page: list[Candle]) -> tuple[int, int]:
    return page[0].start_ms, page[-1].start_ms + MINUTE_MS


@pytest.mark.process  # mount and umount
async def test_a_full_disk_under_postgresql_refuses_writes_says_so_once_and_writes_again(
    small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = rising_minutes(T0, 200), rising_minutes(T0 + 200 * MINUTE_MS, 2000)
    caplog.set_level(logging.INFO, logger="marketspine")
    async with PostgresStore(small_disk.url) as store:
        await store.write_page("KRW-BTC", TF["1m"], first, span(first))
        small_disk.fill()
        refused = []
        for _ in range(2):
            with pytest.raises(StoreFullError) as caught:
                await store.write_page("KRW-BTC", TF["1m"], second, span(second))
            refused.append(caught.value)
        # What was stored is kept and read as before; the refused pages left nothing.
        assert await store.read("KRW-BTC", TF["1m"], T0, T0 + 10**9) == first
        assert (await store.coverage("KRW-BTC", TF["1m"])).ranges == (span(first),)
        assert [event for _, event, _ in database_alerts(caplog)] == ["database_full"]
        small_disk.free()
        await store.write_page("KRW-BTC", TF["1m"], second, span(second))
        assert await store.read("KRW-BTC", TF["1m"], T0, T0 + 10**9) == first + second
    error = refused[0]
    assert isinstance(error, StoreUnavailableError)  # retry later: the same write will do
    assert "No space left on device" in str(error) and "free space" in str(error)
    assert [(level, event) for level, event, _ in database_alerts(caplog)] == [
        ("WARNING", "database_full"),
        ("INFO", "database_writable"),
    ]
