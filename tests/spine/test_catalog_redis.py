"""The exchange catalog in Redis, in the design documents' keys (``market:info:{exchange}``,
``precision:cache:{exchange}``, ``supported:exchanges``), refreshed by the one process that
holds the warmup lease; the others take it from Redis without calling upstream."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_until
from redis.asyncio import Redis
from services import RedisSpace

from marketspine._spine.catalog_redis import RedisCatalog
from marketspine._spine.spine import Spine
from marketspine._store.redis_lease import RedisLease
from marketspine.sim import SimConfig, create_app


class Gate:
    """The simulator behind a gate that holds market-list requests until opened, counting
    requests per path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.opened = asyncio.Event()
        self.opened.set()
        self.paths: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths[scope["path"]] += 1
            if scope["path"] == "/v1/market/all":
                await self.opened.wait()
        await self.app(scope, receive, send)

    @property
    def market_calls(self) -> int:
        return self.paths["/v1/market/all"]


@pytest.fixture
def gate() -> Gate:
    return Gate(create_app(SimConfig(seed=3, rate_limit=0)))


def spine(gate: Gate, space: RedisSpace, db: Path, **kwargs: Any) -> Spine:
    return Spine(
        "http://sim",
        db,
        redis=space.url,
        redis_prefix=space.prefix,
        transport=httpx.ASGITransport(app=gate),
        **kwargs,
    )


async def stored(redis: Redis, key: str) -> bytes:
    """The value at ``key``, which must be there."""
    value = await redis.get(key)
    assert isinstance(value, bytes), (key, value)
    return value


def catalog_of(s: Spine) -> RedisCatalog:
    assert s._shared is not None
    return s._shared.catalog


async def test_the_warmup_writes_the_design_documents_keys(
    gate: Gate, redis_space: RedisSpace, tmp_path: Path
) -> None:
    async with spine(gate, redis_space, tmp_path / "a.sqlite") as first:
        report = await first.warmup()
        markets = await first.markets()
    assert report["success"] is True and gate.market_calls == 1
    redis = Redis.from_url(redis_space.url)
    try:
        p = redis_space.prefix
        info = json.loads(await stored(redis, f"{p}market:info:upbit"))
        precision = json.loads(await stored(redis, f"{p}precision:cache:upbit"))
        supported = json.loads(await stored(redis, f"{p}supported:exchanges"))
    finally:
        await redis.aclose()
    assert supported == ["upbit"]
    assert info["exchange"] == "upbit" and info["url"] == "http://sim"
    assert isinstance(info["fetched_ms"], int)
    assert [m["market"] for m in info["markets"]] == [m.market for m in markets]
    assert set(info["markets"][0]) == {
        "market", "korean_name", "english_name", "warning", "caution", "delisted",
    }  # fmt: skip
    assert precision["url"] == "http://sim"
    assert {i["market"] for i in precision["instruments"]} == {m.market for m in markets}
    assert set(precision["instruments"][0]) == {
        "market", "quote_currency", "tick_size", "supported_levels",
    }  # fmt: skip


async def test_a_process_started_while_the_catalog_is_fresh_calls_upstream_zero_times(
    gate: Gate, redis_space: RedisSpace, tmp_path: Path
) -> None:
    async with spine(gate, redis_space, tmp_path / "a.sqlite") as first:
        await first.warmup()
        btc_tick = first.tick_size("KRW-BTC", 100_000_000.0)
        listed = await first.markets()
    before = dict(gate.paths)
    # Another process (its own database, so nothing on disk): markets and ticks from Redis.
    async with spine(gate, redis_space, tmp_path / "b.sqlite") as second:
        assert second.tick_size("KRW-BTC", 100_000_000.0) == btc_tick
        assert await second.markets() == listed
        report = await second.warmup()
        assert catalog_of(second).adopted == 1 and catalog_of(second).fetched == 0
    assert dict(gate.paths) == before  # not one upstream call
    assert report["success"] is True and report["refreshed_exchanges"] == ["upbit"]
    assert report["exchange_details"]["upbit"]["source"] == "redis"
    assert report["total_markets"] == len(listed)


async def test_concurrent_warmups_call_upstream_once_the_lease_holder_for_all(
    gate: Gate, redis_space: RedisSpace, tmp_path: Path
) -> None:
    spines = [spine(gate, redis_space, tmp_path / f"{i}.sqlite") for i in range(3)]
    gate.opened.clear()  # the holder's market-list call waits until the others wait too
    async with spines[0] as a, spines[1] as b, spines[2] as c:
        warmups = [asyncio.create_task(s.warmup()) for s in (a, b, c)]
        await wait_until(lambda: gate.market_calls == 1, 30, "the lease holder's call")
        await wait_until(
            lambda: sum(catalog_of(s).waits > 0 for s in (a, b, c)) == 2,
            30,
            "the two others waiting on the lease",
        )
        gate.opened.set()
        reports = await asyncio.gather(*warmups)
        ticks = {s.tick_size("KRW-ETH", 5_000_000.0) for s in (a, b, c)}
        assert len({tuple(m.market for m in await s.markets()) for s in (a, b, c)}) == 1
    assert gate.market_calls == 1
    assert all(r["success"] for r in reports)
    assert sorted(catalog_of(s).fetched for s in spines) == [0, 0, 1]
    assert len(ticks) == 1


async def test_a_round_published_as_the_lease_is_taken_is_adopted_not_fetched_again(
    gate: Gate, redis_space: RedisSpace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # b looks for a round (none yet), and before it takes the lease, a warms up whole:
    # takes the lease, fetches, publishes its round and lets the lease go. b then gets the
    # lease; it must adopt a's round, not fetch again (two serve processes started together
    # warmed up twice so, once in a while).
    async with (
        spine(gate, redis_space, tmp_path / "a.sqlite") as a,
        spine(gate, redis_space, tmp_path / "b.sqlite") as b,
    ):
        lease = catalog_of(b)._lease
        take = lease.try_acquire
        overtaken: list[bool] = []

        async def overtaken_then_take() -> bool:
            if not overtaken:
                overtaken.append(True)
                await a.warmup()
            return await take()

        monkeypatch.setattr(lease, "try_acquire", overtaken_then_take)
        report = await b.warmup()
        assert overtaken == [True] and report["success"] is True
        assert await lease.try_acquire()  # b let the lease go again
    assert gate.market_calls == 1
    assert (catalog_of(a).fetched, catalog_of(b).fetched, catalog_of(b).adopted) == (1, 0, 1)


async def test_a_forced_refresh_fetches_again_and_the_others_follow(
    gate: Gate, redis_space: RedisSpace, tmp_path: Path
) -> None:
    async with (
        spine(gate, redis_space, tmp_path / "a.sqlite") as a,
        spine(gate, redis_space, tmp_path / "b.sqlite") as b,
    ):
        await a.warmup()
        await b.warmup()  # fresh: taken from Redis
        assert gate.market_calls == 1
        await b.warmup(max_age_s=0)  # the admin's refresh button: fetched now, for all
        assert gate.market_calls == 2
        await a.warmup()
        assert gate.market_calls == 2 and catalog_of(a).adopted == 1


async def test_a_lapsed_lease_of_a_dead_holder_is_taken_over(
    gate: Gate, redis_space: RedisSpace, tmp_path: Path
) -> None:
    redis = Redis.from_url(redis_space.url)
    try:
        async with spine(gate, redis_space, tmp_path / "a.sqlite") as a:
            # A holder that died holding the lease, which lapses in 0.5 s. Set once the
            # Spine has started: starting took longer than the lapse on a busy machine.
            await redis.set(f"{redis_space.prefix}warmup:lease", "dead", px=500)
            report = await a.warmup()
            assert catalog_of(a).waits > 0 and catalog_of(a).fetched == 1
    finally:
        await redis.aclose()
    assert report["success"] is True and gate.market_calls == 1


async def test_without_redis_the_warmup_is_made_here(gate: Gate, tmp_path: Path) -> None:
    async with Spine(
        "http://sim",
        tmp_path / "a.sqlite",
        redis="redis://127.0.0.1:1/0",  # nothing listens there
        transport=httpx.ASGITransport(app=gate),
    ) as alone:
        report = await alone.warmup()
        assert len(await alone.markets()) == report["total_markets"]
    assert report["success"] is True and gate.market_calls == 1


async def test_the_lease_is_exclusive_renewed_while_held_and_released_by_its_holder(
    redis_space: RedisSpace,
) -> None:
    redis = Redis.from_url(redis_space.url)
    key = f"{redis_space.prefix}lease"
    try:
        mine, theirs = RedisLease(redis, key, lease_s=1.0), RedisLease(redis, key, lease_s=1.0)
        assert await mine.try_acquire()
        assert not await theirs.try_acquire()
        await theirs.release()  # not theirs to give back
        assert await redis.exists(key)

        async def work() -> str:
            await asyncio.sleep(2.5)  # 2.5 lease times: alive only by renewal
            assert not await theirs.try_acquire()
            return "done"

        assert await mine.holding(work) == "done"
        assert not await redis.exists(key)  # released at the end
        assert await theirs.try_acquire()
    finally:
        await redis.aclose()
