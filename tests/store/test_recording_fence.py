"""Fenced recording writes (``record --redis``), SQLite and PostgreSQL: a write under a lease
generation older than one that wrote is refused whole, from another connection too; other
lease names and unfenced writes are not affected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from marketspine._base.time import parse_time
from marketspine._store.postgres import PostgresStore
from marketspine._store.recording import WriterFence
from marketspine._store.recording_store import recording_for
from marketspine._store.sqlite import SQLiteStore
from marketspine.errors import FencedError
from marketspine.records import Trade

T0 = parse_time("2026-01-05")

MakeStore = Callable[[], SQLiteStore | PostgresStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "db.sqlite")
    url = request.getfixturevalue("pg_space").url
    return lambda: PostgresStore(url)


def trades(first: int, n: int) -> list[Trade]:
    return [
        Trade("KRW-BTC", T0 + i, 100.0 + i, 0.5, "BID", 1_000 + i, 99.0, 1.0 + i)
        for i in range(first, first + n)
    ]


async def test_a_write_of_an_older_generation_is_refused_whole(make_store: MakeStore) -> None:
    async with make_store() as old_store, make_store() as new_store:
        old, new = recording_for(old_store), recording_for(new_store)
        assert await old.write(trades(0, 5), fence=WriterFence("db1", 1)) == 5
        assert await new.write(fence=WriterFence("db1", 2)) == 0  # the takeover's fencing
        with pytest.raises(FencedError, match="generation 1 may not write any more"):
            await old.write(trades(5, 5), fence=WriterFence("db1", 1))
        assert await new.trade_count() == 5  # nothing of the refused batch
        assert await new.write(trades(5, 5), fence=WriterFence("db1", 2)) == 5
        assert await old.write(trades(10, 1), fence=WriterFence("db2", 1)) == 1  # another lease
        assert await old.write(trades(11, 1)) == 1  # an unfenced writer (no --redis)
        with pytest.raises(FencedError):
            await old.write(fence=WriterFence("db1", 1))
        assert await new.trade_count() == 12
