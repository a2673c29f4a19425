"""Fixtures for the machine's real Redis and PostgreSQL (imported by conftest).

Each test gets its own Redis key prefix or PostgreSQL schema, removed afterwards. Where a
service is absent the test skips with a reason; with ``MARKETSPINE_REQUIRE_SERVICES=1`` (set
by ``.ci/run``) it fails instead. ``MARKETSPINE_TEST_REDIS`` / ``MARKETSPINE_TEST_PG`` point
elsewhere than 127.0.0.1:6379 / postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("MARKETSPINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("MARKETSPINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_REQUIRED = os.environ.get("MARKETSPINE_REQUIRE_SERVICES") == "1"


def _absent(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({exc})"
    if _REQUIRED:
        pytest.fail(f"{message} and MARKETSPINE_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{message}; start it to run this test")


@dataclass(frozen=True)
class RedisSpace:
    """A Redis URL and the key prefix this test owns."""

    url: str
    prefix: str


@pytest.fixture
async def redis_space() -> AsyncIterator[RedisSpace]:
    """The machine's Redis with a unique key prefix; every key under it is deleted after."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        await client.ping()
    except Exception as exc:  # any failure to reach it means: not here
        await client.aclose()
        _absent(f"Redis at {REDIS_URL}", exc)
    prefix = f"mstest:{uuid.uuid4().hex[:12]}:"
    try:
        yield RedisSpace(REDIS_URL, prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@dataclass(frozen=True)
class PgSpace:
    """A PostgreSQL URL whose search_path is a schema this test owns."""

    url: str  # with options=-csearch_path=SCHEMA
    base_url: str
    schema: str


@pytest.fixture
def pg_space() -> Iterator[PgSpace]:
    """The machine's PostgreSQL with a fresh schema; dropped (CASCADE) after the test."""
    import psycopg

    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=2)
    except psycopg.Error as exc:
        _absent(f"PostgreSQL at {PG_URL}", exc)
    schema = f"mstest_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in PG_URL else "?"
        try:
            yield PgSpace(f"{PG_URL}{sep}options=-csearch_path%3D{schema}", PG_URL, schema)
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, to stop and start at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _absent("redis-server (the binary)", FileNotFoundError("not on PATH"))
        assert binary is not None
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started private redis-server (stopped after the test)."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
