"""``SharedStream`` in one process against a real loopback simulator and Redis: the holder
streams what the others want and they see it as if from their own socket; a holder that
leaves hands over without a lost or repeated trade; with Redis gone each process reads its
own socket (and says so), and comes back to the shared feed when Redis does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack
from pathlib import Path

import httpx
import pytest
from helpers import afternoon_clock, wait_until
from services import PrivateRedis, RedisSpace

from marketspine._client.client import Client
from marketspine._live.listener import Event, Listener
from marketspine._live.shared_stream import SharedStream
from marketspine._spine.spine import Spine
from marketspine.records import Orderbook, Ticker, Trade
from marketspine.sim import SimConfig

POLL_S = 0.05  # elections this often: a test waits on conditions, not on these


@pytest.fixture
def sim(running_sim: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with running_sim(SimConfig(speed=60.0, rate_limit=0), afternoon_clock(60.0)) as url:
        yield url


def feed_of(spine: Spine) -> SharedStream:
    stream = spine._feed._stream  # the Spine's stream, opened by its first watch
    assert isinstance(stream, SharedStream)
    return stream


def shared(
    sim: str,
    client: Client,
    redis_url: str,
    prefix: str,
    *,
    poll_s: float = POLL_S,
    lease_s: float = 1.5,
) -> SharedStream:
    ws = sim.replace("http://", "ws://") + "/websocket/v1"
    return SharedStream(
        ws, client=client, redis_url=redis_url, prefix=prefix, poll_s=poll_s, lease_s=lease_s
    )


async def hold_then_leave(
    stack: AsyncExitStack, sim: str, client: Client, space: RedisSpace, *, b_poll_s: float
) -> tuple[SharedStream, list[Event]]:
    """a holds the lease and streams KRW-BTC trades to b (kept open in ``stack``, checking
    the lease every ``b_poll_s``), then a closes cleanly (its lease released); returns b
    and what b's listener saw (and goes on seeing)."""
    a = shared(sim, client, space.url, space.prefix)
    await a.__aenter__()
    try:
        await a.subscribe("trade", ["KRW-BTC"])
        await wait_until(lambda: a.role == "holder", 10, "a to hold the lease")
        b = shared(sim, client, space.url, space.prefix, poll_s=b_poll_s)
        b = await stack.enter_async_context(b)
        seen = await stack.enter_async_context(collecting(b.listen()))
        await b.subscribe("trade", ["KRW-BTC"])
        await wait_until(lambda: len(trades(seen, "KRW-BTC")) >= 3, 20, "trades via a")
    finally:
        await a.__aexit__(None, None, None)
    return b, seen


async def collect(listener: Listener, into: list[Event]) -> None:
    async for event in listener:
        into.append(event)


@contextlib.asynccontextmanager
async def collecting(listener: Listener) -> AsyncIterator[list[Event]]:
    seen: list[Event] = []
    async with listener:
        task = asyncio.create_task(collect(listener, seen))
        try:
            yield seen
        finally:
            task.cancel()


def trades(events: list[Event], market: str) -> list[int]:
    return [e.seq for e in events if isinstance(e, Trade) and e.market == market]


def history(sim: str, market: str) -> list[int]:
    rows = httpx.get(f"{sim}/v1/trades/ticks", params={"market": market, "count": 500}).json()
    return [row["sequential_id"] for row in reversed(rows)]


def assert_consecutive(sim: str, market: str, got: list[int]) -> None:
    assert got and len(got) == len(set(got)), f"{market}: duplicates in {got}"
    full = history(sim, market)
    start = full.index(got[0])
    assert got == full[start : start + len(got)], f"{market}: missing or reordered trades"


async def test_a_follower_sees_what_it_wants_from_the_holders_socket(
    sim: str, redis_space: RedisSpace
) -> None:
    # Roles must not change here: with the 1.5 s lease, this worker stalled that long in a
    # CI run and b took over from a (a's renewal came after b's claim).
    lease_s = 10.0
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(sim))
        a = await stack.enter_async_context(
            shared(sim, client, redis_space.url, redis_space.prefix, lease_s=lease_s)
        )
        await wait_until(lambda: a.role == "holder", 10, "a to hold the lease")
        b = await stack.enter_async_context(
            shared(sim, client, redis_space.url, redis_space.prefix, lease_s=lease_s)
        )
        await wait_until(lambda: b.role == "follower", 10, "b to follow")
        a_seen = await stack.enter_async_context(collecting(a.listen()))
        b_seen = await stack.enter_async_context(collecting(b.listen()))
        await a.subscribe("trade", ["KRW-BTC"])
        await b.subscribe("ticker", ["KRW-ETH"])
        await b.subscribe("orderbook", ["KRW-ETH"], depth=5)
        await b.subscribe("trade", ["KRW-BTC", "KRW-ETH"])
        await wait_until(
            lambda: (
                any(isinstance(e, Ticker) for e in b_seen)
                and any(isinstance(e, Orderbook) for e in b_seen)
                and all(trades(b_seen, m) for m in ("KRW-BTC", "KRW-ETH"))
            ),
            20,
            "the follower's ticker, book and trades",
        )
        # Every subscription change re-sends the holder's whole request, and the simulator
        # (like Upbit) starts its answer afresh: trades are checked once the wants settled.
        settled = {m: len(trades(b_seen, m)) - 1 for m in ("KRW-BTC", "KRW-ETH")}
        await wait_until(
            lambda: all(len(trades(b_seen, m)) >= n + 4 for m, n in settled.items()),
            20,
            "trades of both markets through the follower",
        )
        assert b.statistics().received > 0 and a.statistics().published > 0
        assert b.statistics().published == 0
    # Each process hands its listeners only what it asked for, at the depth it asked for.
    assert {e.market for e in a_seen if isinstance(e, Trade | Ticker | Orderbook)} == {"KRW-BTC"}
    assert not any(isinstance(e, Ticker | Orderbook) for e in a_seen)
    assert all(len(e.units) <= 5 for e in b_seen if isinstance(e, Orderbook))
    for market, n in settled.items():
        assert_consecutive(sim, market, trades(b_seen, market)[n:])


async def test_a_holder_that_leaves_is_replaced_without_a_lost_or_repeated_trade(
    sim: str, redis_space: RedisSpace
) -> None:
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(sim))
        b, seen = await hold_then_leave(stack, sim, client, redis_space, b_poll_s=POLL_S)
        await wait_until(lambda: b.role == "holder", 10, "b to take over")
        after = len(trades(seen, "KRW-BTC"))
        await wait_until(lambda: len(trades(seen, "KRW-BTC")) >= after + 3, 20, "b's own trades")
        assert b.statistics().takeovers == 1
    assert_consecutive(sim, "KRW-BTC", trades(seen, "KRW-BTC"))


@pytest.mark.process
async def test_without_redis_a_process_reads_its_own_socket_and_returns_when_it_is_back(
    sim: str, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="marketspine")
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(sim))
        a = await stack.enter_async_context(shared(sim, client, private_redis.url, "t:"))
        seen = await stack.enter_async_context(collecting(a.listen()))
        await a.subscribe("trade", ["KRW-BTC"])
        await wait_until(lambda: a.role == "holder", 10, "a to hold the lease")
        await wait_until(lambda: len(trades(seen, "KRW-BTC")) >= 2, 20, "trades")
        private_redis.stop()
        await wait_until(lambda: a.role == "alone", 10, "a to read its own socket")
        assert "Redis unreachable" in caplog.text
        count = len(trades(seen, "KRW-BTC"))
        await wait_until(lambda: len(trades(seen, "KRW-BTC")) >= count + 2, 20, "trades alone")
        private_redis.start()
        await wait_until(lambda: a.role == "holder", 20, "a back on the shared feed")
        assert "Redis is back" in caplog.text
        count = len(trades(seen, "KRW-BTC"))
        await wait_until(lambda: len(trades(seen, "KRW-BTC")) >= count + 2, 20, "trades shared")
        assert a.statistics().published > 0
    assert_consecutive(sim, "KRW-BTC", trades(seen, "KRW-BTC"))


async def test_a_new_process_taking_a_free_lease_continues_the_trades_of_the_last_holder(
    sim: str, redis_space: RedisSpace
) -> None:
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(sim))
        # b claims the lease rarely, so the newcomer c wins the lease a gives up.
        b, seen = await hold_then_leave(stack, sim, client, redis_space, b_poll_s=5.0)
        c = await stack.enter_async_context(  # a long lease, as in the follower test
            shared(sim, client, redis_space.url, redis_space.prefix, lease_s=10.0)
        )
        await wait_until(lambda: c.role == "holder", 10, "c to take the free lease")
        after = len(trades(seen, "KRW-BTC"))
        await wait_until(lambda: len(trades(seen, "KRW-BTC")) >= after + 3, 20, "trades via c")
        assert b.role == "follower" and c.statistics().published > 0
    assert_consecutive(sim, "KRW-BTC", trades(seen, "KRW-BTC"))


async def test_spines_sharing_a_redis_share_one_live_feed(
    sim: str, redis_space: RedisSpace, tmp_path: Path
) -> None:
    def spine(name: str) -> Spine:
        return Spine(
            sim, tmp_path / f"{name}.db", redis=redis_space.url,
            redis_prefix=redis_space.prefix, warmup_every_s=-1,
        )  # fmt: skip

    async with spine("a") as a, spine("b") as b:
        await a.watch(["trade"], ["KRW-BTC"])  # a opens its feed first: it holds the lease
        await wait_until(lambda: feed_of(a).role == "holder", 10, "a to hold the lease")
        await b.watch(["ticker"], ["KRW-ETH"])
        assert feed_of(b).role in ("starting", "follower")
        live = b._live  # fed through Redis from the holder's socket
        await wait_until(lambda: live.ticker("KRW-ETH") is not None, 20, "b's live ticker")
        tickers = await b.tickers(["KRW-ETH"], max_age_s=60)
        assert tickers[0].market == "KRW-ETH" and tickers.meta.sources == ("live",)
        seen: list[Trade] = []
        async for event in b.stream(["trade"], ["KRW-BTC"]):
            if isinstance(event, Trade):
                seen.append(event)
            if len(seen) == 3:
                break
        assert feed_of(b).role == "follower" and feed_of(b).statistics().received > 0
