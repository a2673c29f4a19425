"""The live-feed lease, the wanted markets and the event log, on the machine's Redis: one
holder at a time, renewed by it, taken over once it lapsed, its successor fenced from the
old holder's late publishing; wants united across processes and lapsing with them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from services import RedisSpace

from marketspine._live.lease import LiveLease, WantedMarkets
from marketspine._live.listener import Gap
from marketspine._live.redis_log import RedisFeed
from marketspine._live.shared_stream import feed_prefix
from marketspine.records import Candle, Orderbook, OrderbookUnit, Ticker, Trade

TRADE = Trade("KRW-BTC", 1_790_000_000_000, 100.0, 0.5, "BID", 17_900_000_000_000_001, 99.0, 1.0)


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]], within_s: float, what: str
) -> None:
    """``wait_until`` for a condition that asks Redis."""
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def redis(redis_space: RedisSpace) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_space.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def feed(redis_space: RedisSpace) -> str:
    return feed_prefix(redis_space.prefix, "ws://127.0.0.1:9/websocket/v1")


async def test_the_first_claim_takes_the_lease_and_the_others_see_its_holder(
    redis: Redis, feed: str
) -> None:
    a, b = LiveLease(redis, feed), LiveLease(redis, feed)
    first = await a.claim()
    assert first.held and first.generation == 1 and first.holder == a.token
    other = await b.claim()
    assert not other.held and other.holder == a.token and other.generation == 1
    assert 0 < other.remaining_ms <= a.ttl_ms


async def test_the_holder_renews_its_lease_without_a_new_generation(
    redis: Redis, feed: str
) -> None:
    a = LiveLease(redis, feed, ttl_s=1.5)
    await a.claim()
    await redis.pexpire(f"{feed}lease", 200)  # most of the lease spent
    again = await a.claim()
    assert again.held and again.generation == 1
    assert await redis.pttl(f"{feed}lease") > 1000  # renewed to the full TTL


async def test_a_lapsed_lease_is_taken_over_and_the_old_holder_is_fenced(
    redis: Redis, feed: str
) -> None:
    a, b = LiveLease(redis, feed), LiveLease(redis, feed)
    log = RedisFeed(redis, feed)
    assert (await a.claim()).held
    assert await log.publish(a.token, [TRADE])
    await redis.delete(f"{feed}lease")  # what the TTL does once a killed holder stops renewing
    taken = await b.claim()
    assert taken.held and taken.generation == 2 and taken.holder == b.token
    late = await a.claim()  # the old holder, back from a pause: it is no longer the holder
    assert not late.held and late.holder == b.token
    assert not await log.publish(a.token, [TRADE])  # fenced: nothing appended
    assert await redis.xlen(log.key) == 1


async def test_a_lease_lapses_by_itself_when_not_renewed(redis: Redis, feed: str) -> None:
    # A second: b's first claim, just after a's, came more than 50 ms later on a busy
    # machine, when a's lease had lapsed already.
    a, b = LiveLease(redis, feed, ttl_s=1.0), LiveLease(redis, feed)
    assert (await a.claim()).held
    assert not (await b.claim()).held
    claims: list[bool] = []

    async def b_holds() -> bool:
        claims.append((await b.claim()).held)
        return claims[-1]

    await wait_until_async(b_holds, 10, "b to take the lapsed lease")
    assert claims[-1] and not (await a.claim()).held


async def test_a_released_lease_is_free_at_once(redis: Redis, feed: str) -> None:
    a, b = LiveLease(redis, feed), LiveLease(redis, feed)
    await a.claim()
    assert not await b.release()  # not b's to release
    assert await a.release()
    assert (await b.claim()).held


async def test_wants_are_united_across_processes_at_the_deepest_book(
    redis: Redis, feed: str
) -> None:
    a = WantedMarkets(redis, feed, token="a")
    b = WantedMarkets(redis, feed, token="b")
    await a.publish({("trade", "KRW-BTC", 0), ("orderbook", "KRW-BTC", 5)})
    await b.publish({("ticker", "KRW-ETH", 0), ("orderbook", "KRW-BTC", 15)})
    assert await a.union() == {
        ("trade", "KRW-BTC", 0),
        ("ticker", "KRW-ETH", 0),
        ("orderbook", "KRW-BTC", 15),
    }
    await b.withdraw()
    assert await a.union() == {("trade", "KRW-BTC", 0), ("orderbook", "KRW-BTC", 5)}


async def test_a_dead_process_wants_lapse(redis: Redis, feed: str) -> None:
    alive = WantedMarkets(redis, feed, token="alive")
    dead = WantedMarkets(redis, feed, token="dead", ttl_s=0.001)
    await alive.publish({("trade", "KRW-BTC", 0)})
    await dead.publish({("trade", "KRW-ETH", 0)})

    async def dead_lapsed() -> bool:
        return await alive.union() == {("trade", "KRW-BTC", 0)}

    await wait_until_async(dead_lapsed, 10, "the dead process's wants to lapse")
    assert await redis.hkeys(f"{feed}wants") == [b"alive"]


async def test_the_log_gives_back_every_kind_of_event_in_order(redis: Redis, feed: str) -> None:
    lease, log = LiveLease(redis, feed), RedisFeed(redis, feed)
    await lease.claim()
    assert await log.tail() == "0-0"
    events: list[Trade | Ticker | Orderbook | Candle | Gap] = [
        TRADE,
        Ticker(
            "KRW-BTC",
            1,
            1,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            "EVEN",
            0.0,
            0.0,
            1.0,
            1.0,
            1.0,
            2.0,
            3.0,
            4.0,
            "2026-01-01",
            0.5,
            "2026-02-01",
        ),
        Orderbook("KRW-BTC", 1, 2.0, 3.0, (OrderbookUnit(1.0, 2.0, 0.5, 3.0),), 0.0),
        Candle("KRW-BTC", "1m", 0, 1.0, 2.0, 0.5, 1.5, 3.0, 4.0, 5),
        Gap("KRW-BTC", 1, 2, 3, False, "why"),
    ]
    assert await log.publish(lease.token, events)
    last, read = await log.read("0-0")
    assert read == events
    assert last == await log.tail()
    assert await log.read(last) == (last, [])
