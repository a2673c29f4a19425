"""collect --db postgresql:// --redis, and migrate SQLite → PostgreSQL, through the real CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import psycopg
import pytest
from clitools import run, run_in_process
from helpers import run_sim
from services import PgSpace, PrivateRedis, RedisSpace

from marketspine._base.time import parse_time

pytestmark = pytest.mark.process

SINCE, UNTIL = "2026-01-01", "2026-01-03T05:00:00"
HOURS = 2 * 24 + 5


def collect(url: str, db: str, *extra: str) -> dict[str, object]:
    done = run(
        "collect", "KRW-BTC", "-t", "1h", "--since", SINCE, "--until", UNTIL,
        "--db", db, "--upstream", url, "--json", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def test_collect_into_postgresql_sharing_redis_resumes_from_its_coverage(
    running_sim: Callable[..., AbstractContextManager[str]],
    pg_space: PgSpace,
    redis_space: RedisSpace,
) -> None:
    from marketspine.sim import SimConfig

    with running_sim(SimConfig(rate_limit=10)) as url:
        first = collect(url, pg_space.url, "--redis", redis_space.url)
        assert first["candles_written"] == HOURS
        again = collect(url, pg_space.url, "--redis", redis_space.url)
        assert again["upstream_calls"] == 0
    since_ms, until_ms = parse_time(SINCE), parse_time(UNTIL)
    with psycopg.connect(pg_space.url) as conn:
        asked = conn.execute(
            "SELECT COUNT(*) FROM candles WHERE start_ms >= %s AND start_ms < %s",
            (since_ms, until_ms),
        ).fetchone()
    assert asked == (HOURS,)


def test_migrate_copies_and_verifies_and_can_run_again(
    running_sim: Callable[..., AbstractContextManager[str]], pg_space: PgSpace, tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    db = str(tmp_path / "spine.db")
    with running_sim(SimConfig(rate_limit=0)) as url:
        collect(url, db)
    recorded = asyncio.run(record_some(db))
    asyncio.run(add_run(db))
    source = json.loads(run("status", "--db", db, "--json").stdout)
    for added in (1, 0):  # a second run changes nothing and verifies again
        moved = run("migrate", "--from", db, "--to", pg_space.url, "--json")
        assert moved.returncode == 0, moved.stderr
        report = json.loads(moved.stdout)
        assert report["series"] == 1 and report["verified"]
        assert report["candles"] == sum(s["rows"] for s in source["series"]) >= HOURS
        assert report["recorded_rows"] == recorded
        assert (report["runs"], report["runs_added"]) == (1, added)
    target = json.loads(run("status", "--db", pg_space.url, "--json").stdout)
    assert source.pop("db") == db and target.pop("db") == pg_space.url
    assert source == target and source["recorded"]
    assert asyncio.run(recorded_back(pg_space.url)) == asyncio.run(recorded_back(db))
    assert asyncio.run(runs_back(pg_space.url)) == asyncio.run(runs_back(db)) != []


async def add_run(db: str) -> None:
    """A finished backfill job in ``db``'s run history, as serve keeps one."""
    from marketspine._store.sqlite import RunRecord, SQLiteStore

    job = RunRecord(
        "backfill", "job", parse_time("2026-01-03"), 1200, True, 1,
        ({"market": "KRW-BTC", "ok": True, "candles": HOURS, "error": None},), None, "job-1 1h",
    )  # fmt: skip
    async with SQLiteStore(Path(db)) as store:
        await store.add_run(job)


async def runs_back(db: str) -> list[object]:
    """``db``'s run history, as ``/api/backfill/history`` reads it."""
    from marketspine._cli.commands import open_store

    async with open_store(db, must_exist=True) as store:
        return list(await store.runs("backfill"))


async def record_some(db: str) -> int:
    """What ``record`` would keep, written into ``db``: 12,000 trades of two markets (more
    than one read batch, 17-digit ids), books, tickers and a known gap; the rows written."""
    from marketspine._store.recording import TradeGap
    from marketspine._store.recording_store import recording_for
    from marketspine._store.sqlite import SQLiteStore
    from marketspine.records import Orderbook, OrderbookUnit, Ticker, Trade

    t0 = parse_time("2026-01-02")
    trades = [
        Trade(market, t0 + i * 50, 95_000_000.0 + i, 0.00012345, "BID" if i % 2 else "ASK",
              (t0 + i * 50) * 10_000 + 1, 94_000_000.0, 1000.0 + i,
              *((95_001_000.0, 0.5, 95_000_000.0, 0.25) if i % 3 else (None,) * 4))
        for market in ("KRW-BTC", "KRW-ETH") for i in range(6000)
    ]  # fmt: skip
    books = [
        Orderbook("KRW-BTC", t0 + i * 1000, 1.5, 2.5,
                  tuple(OrderbookUnit(100.0 + k, 0.1, 99.0 - k, 0.2) for k in range(15)), 0.0)
        for i in range(100)
    ]  # fmt: skip
    tickers = [
        Ticker("KRW-ETH", t0 + i * 1000, t0 + i * 1000 - 5, 101.5, 100.0, 102.0, 99.0, 100.0,
               "RISE", 1.5, 0.015, 0.001, 1234.5, 125_000.25, 2000.0, 200_000.5, 150.0,
               "2025-03-01", 50.0, "2025-08-01", "BID", 12.5, 13.25, "ACTIVE", None)
        for i in range(50)
    ]  # fmt: skip
    a, b = trades[10], trades[11]
    gap = TradeGap("KRW-BTC", a.seq, b.seq, a.ms, b.ms, "REST trades failed: 503", t0)
    async with SQLiteStore(Path(db)) as store:
        await recording_for(store).write(trades, orderbooks=books, tickers=tickers, gaps=[gap])
    return len(trades) + len(books) + len(tickers) + 1


async def recorded_back(db: str) -> list[object]:
    """Every recorded row of ``db``, as records."""
    from marketspine._cli.commands import open_store
    from marketspine._store.recording_store import recording_for

    async with open_store(db, must_exist=True) as store:
        recording = recording_for(store)
        rows: list[object] = []
        for market in ("KRW-BTC", "KRW-ETH"):
            rows += await recording.trades(market, 0, 2**62)
            rows += await recording.orderbooks(market, 0, 2**62)
            rows += await recording.tickers(market, 0, 2**62)
            rows += await recording.trade_gaps(market)
        return rows


def test_migrate_says_what_is_wrong(tmp_path: Path, pg_space: PgSpace) -> None:
    missing = run("migrate", "--from", str(tmp_path / "none.db"), "--to", pg_space.url)
    assert missing.returncode == 2 and "no database at" in missing.stderr
    same = run("migrate", "--from", pg_space.url, "--to", pg_space.url)
    assert same.returncode == 2 and "same database" in same.stderr
    bad = run("collect", "KRW-BTC", "-t", "1h", "--db", str(tmp_path / "x.db"),
              "--redis", "http://nope", "--upstream", "http://127.0.0.1:9")  # fmt: skip
    assert bad.returncode == 2 and "expected redis://" in bad.stderr
    assert "Traceback" not in missing.stderr + same.stderr + bad.stderr


async def test_collect_takes_the_market_list_a_warmup_left_in_redis(
    running_sim: Callable[..., AbstractContextManager[str]],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    from marketspine._spine.spine import Spine
    from marketspine.sim import SimConfig

    def market_calls(url: str) -> int:
        return int(httpx.get(url + "/sim/stats").json()["requests"]["by_group"].get("market", 0))

    with running_sim(SimConfig(rate_limit=0)) as url:
        async with Spine(url, tmp_path / "spine.db", redis=private_redis.url) as spine:
            assert (await spine.warmup())["success"] is True
        assert market_calls(url) == 1
        summary = collect(url, str(tmp_path / "collect.db"), "--redis", private_redis.url)
        assert summary["candles_written"] == HOURS
        assert market_calls(url) == 1  # the listing check read market:info:upbit instead


def test_warmup_into_postgresql_opens_it_and_makes_no_folder(
    pg_space: PgSpace, tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    with run_sim(SimConfig(rate_limit=0)) as url:
        done = run_in_process("warmup", "--upstream", url, "--db", pg_space.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Before: the URL was taken for a file path, and "postgresql:/..." folders were made.
    assert list(tmp_path.iterdir()) == []
    with psycopg.connect(pg_space.url) as conn:
        opened = conn.execute("SELECT to_regclass('marketspine_schema') IS NOT NULL").fetchone()
    assert opened == (True,)
