"""Opening databases: many openers of one new file at once, read-only files, damaged pages."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from clitools import closed_port, minute_db, run, run_in_process, shared_tmp, unprivileged

from marketspine._base.time import parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.sqlite import SCHEMA_VERSION, SQLiteStore
from marketspine.errors import StoreError

T0 = parse_time("2026-01-05T00:00:00")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_many_stores_opening_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(30):
        path = tmp_path / f"new-{round_}.db"
        stores = [SQLiteStore(path) for _ in range(6)]  # six connections, six threads
        try:
            await asyncio.gather(*(store.__aenter__() for store in stores))
            assert [await s.summary() for s in stores] == [[]] * 6
        finally:
            for store in stores:
                await store.aclose()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


@pytest.mark.process
def test_processes_opening_one_new_file_at_once_never_trip_over_the_schema(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    import subprocess

    from clitools import CONSOLE_SCRIPT

    path = tmp_path / "new.db"
    with running_sim() as url:
        # the store opens first; then upstream answers 404 at once (exit 2, no backoff)
        upstream = f"{url}/nothing-here"
        argv = [CONSOLE_SCRIPT, "collect", "KRW-BTC", "-t", "1m", "--db", str(path)]
        procs = [
            subprocess.Popen(
                [*argv, "--upstream", upstream],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert "already exists" not in err and "Traceback" not in err, err
            assert "locked" not in err, err
            assert proc.returncode == 2 and "404" in err, err  # upstream, not the database
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


@pytest.mark.process
def test_a_read_only_database_is_read_by_status_and_export_but_not_by_collect() -> None:
    with shared_tmp() as folder:
        db = folder / "spine.db"
        minute_db(db, T0, 120)
        db.chmod(0o444)
        folder.chmod(0o555)  # no -wal or -shm can be created either
        before = digest(db)
        user = unprivileged()
        status = run("status", "--db", str(db), "--json", user=user)
        assert status.returncode == 0, status.stderr
        assert '"rows":120' in status.stdout
        with shared_tmp() as writable:
            target = writable / "x.csv"
            done = run(
                "export", "KRW-BTC", "-t", "5m", "--db", str(db), "--out", str(target),
                user=user,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            with target.open() as handle:
                assert len(list(csv.DictReader(handle))) == 24  # 120 minutes as 5m
        collect = run(
            "collect", "KRW-BTC", "-t", "1m", "--db", str(db), "--upstream", closed_port(),
            user=user,
        )  # fmt: skip
        assert collect.returncode == 2, collect.stderr
        assert "cannot write the candle database" in collect.stderr
        assert "read-only" in collect.stderr and "Traceback" not in collect.stderr
        assert digest(db) == before
        assert sorted(p.name for p in folder.iterdir()) == ["spine.db"]


def damage_root_page(path: Path) -> None:
    """Zero the second half of the candles table's root page: a range read then quietly
    skips the rows below the lost child pointers (no SQLite error on that path)."""
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'candles'"
        ).fetchone()
    with path.open("r+b") as handle:
        handle.seek((root - 1) * page_size + page_size // 2)
        handle.write(b"\0" * (page_size // 2))


def test_a_damaged_page_is_an_error_not_a_short_export(tmp_path: Path) -> None:
    db = tmp_path / "spine.db"
    minute_db(db, T0, 5000)
    damage_root_page(db)
    out = tmp_path / "x.csv"
    done = run_in_process("export", "KRW-BTC", "-t", "1m", "--db", str(db), "--out", str(out))
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "is damaged" in done.stderr and str(db) in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    status = run_in_process("status", "--db", str(db))
    assert status.returncode == 2 and "is damaged" in status.stderr


async def test_a_read_only_store_never_writes(tmp_path: Path) -> None:
    db = tmp_path / "spine.db"
    await asyncio.to_thread(minute_db, db, T0, 10)
    before = digest(db)
    async with SQLiteStore(db, read_only=True) as store:
        assert len(await store.read("KRW-BTC", TF["1m"], T0, T0 + 600_000)) == 10
        with pytest.raises(StoreError, match="cannot write"):
            await store.set_listing("KRW-BTC", TF["1m"], T0)
    assert digest(db) == before
    with pytest.raises(StoreError, match="no database"):
        async with SQLiteStore(tmp_path / "missing.db", read_only=True):
            pass
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    "command", ["collect KRW-BTC -t 1m", "warmup", "status", "export KRW-BTC -t 1m -o x.csv"]
)
def test_a_db_under_a_file_is_one_line_and_exit_2_for_every_command(
    command: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x")
    db = tmp_path / "a-file" / "x.db"
    online = ["--upstream", closed_port()] if command.startswith(("collect", "warmup")) else []
    done = run_in_process(*command.split(), "--db", str(db), *online, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert str(db) in done.stderr
