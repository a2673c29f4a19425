"""The REST client against the simulator: exact pages under faults, zero 429s at the ceiling,
429/418 recovery, shared in-flight requests counted upstream, the breaker, priorities.

Most tests run the simulator in-process with its rate limiter and its latency on the same
virtual clock as the client's budget (``limit_clock``, ``sleep``), so a ten-second workload
takes milliseconds; one test runs on real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from helpers import FakeTime, sim_app_stats

from marketspine._budget.local import DEFAULT_MARGIN, LocalRateBudget
from marketspine._budget.rules import Priority
from marketspine._client.circuit import CircuitBreaker
from marketspine._client.client import Client
from marketspine._client.retry import RetryPolicy
from marketspine.errors import CircuitOpenError, UpstreamError
from marketspine.records import Candle

MARKET = "KRW-BTC"
FAST_RETRY = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.1, rate_limited_delay=0.5)


def make_app(sim_clock: Callable[[], int], fake: FakeTime | None = None, **config: Any) -> Any:
    from marketspine.sim import SimConfig, create_app

    if fake is None:
        return create_app(SimConfig(**config), clock=sim_clock)
    # Limits and latency on the fake clock of the client's budget.
    return create_app(
        SimConfig(**config), clock=sim_clock, limit_clock=fake.clock, sleep=fake.sleep
    )


def client_for(app: Any, fake: FakeTime | None = None, **kwargs: Any) -> Client:
    kwargs.setdefault("retry", FAST_RETRY)
    if fake is not None:
        kwargs.setdefault("clock", fake.clock)
        kwargs.setdefault("sleep", fake.sleep)
    return Client("http://sim", transport=httpx.ASGITransport(app=app), **kwargs)


async def set_faults(app: Any, **faults: float) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as http:
        (await http.post("/sim/faults", json=faults)).raise_for_status()


async def page_back(client: Client, timeframe: str, pages: int, **kw: Any) -> list[Candle]:
    """Page backwards from now: next ``to`` = the oldest candle start received."""
    candles: list[Candle] = []
    to_ms = None
    for _ in range(pages):
        page = await client.candles(MARKET, timeframe, count=200, to_ms=to_ms, **kw)
        if not page:
            break
        candles += page
        to_ms = page[-1].start_ms
    return candles


@pytest.fixture
async def reference(sim_clock: Callable[[], int]) -> AsyncIterator[Client]:
    async with client_for(make_app(sim_clock, rate_limit=0)) as client:
        yield client


async def test_every_page_arrives_exactly_despite_errors_hangs_and_jitter(
    sim_clock: Callable[[], int], reference: Client, fake: FakeTime
) -> None:
    expected = await page_back(reference, "1m", 8)
    assert len(expected) == 1600
    # Frequent enough that every run meets both kinds (about 40 requests in all).
    app = make_app(sim_clock, fake, error_rate=0.1, hang_rate=0.08, jitter_ms=3.0)
    breaker = CircuitBreaker(failure_threshold=50, clock=fake.clock)
    async with client_for(app, fake, timeout=0.1, breaker=breaker) as client:

        async def concurrent_pages() -> list[list[Candle]]:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(page_back(client, timeframe, 4))
                    for timeframe in ("1m", "5m", "1h", "1d")
                ]
            return [t.result() for t in tasks]

        got = await fake.run(concurrent_pages())
        got_1m = await fake.run(page_back(client, "1m", 8))
        stats = client.statistics()
    assert got_1m == expected
    assert got[0] == expected[:800]
    for timeframe, candles in zip(("5m", "1h", "1d"), got[1:], strict=True):
        assert candles == await page_back(reference, timeframe, 4)
    upstream = await sim_app_stats(app)
    failures = sum(n for code, n in upstream["status"].items() if code.startswith("5"))
    assert failures > 0, "no 5xx was injected: the test proves nothing about them"
    assert upstream["hung"] > 0, "no request hung: the test proves nothing about hangs"
    assert stats.retries >= failures + upstream["hung"]
    assert upstream["429"] == 0


async def test_on_virtual_time_a_request_is_counted_its_latency_after_it_left(
    sim_clock: Callable[[], int], fake: FakeTime
) -> None:
    # The simulator counts a request when it arrives. Were its latency a real wait, the fake
    # clock would jump meanwhile to the next sleeper (a budget waiting for the next window)
    # and count a request of one second in the next: 11 in a second, a 429 the client never
    # earned. One request a second, 0.2 s latency: 1000.7 → 1000.9, 1001.0
    # → 1001.2, one in each second.
    app = make_app(sim_clock, fake, rate_limit=1, latency_ms=200.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as http:

        async def send_at(moment: float) -> int:
            await fake.sleep(moment - fake.now)
            return (await http.get("/v1/market/all")).status_code

        async def both() -> list[int]:
            start = fake.now
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(send_at(start + left)) for left in (0.7, 1.0)]
            return [t.result() for t in tasks]

        statuses = await fake.run(both())
    assert statuses == [200, 200], "a request was counted later than it arrived"
    assert fake.now == pytest.approx(1001.2)  # the latency passed on the fake clock


async def test_zero_429s_at_the_ceiling_with_concurrent_callers(
    sim_clock: Callable[[], int], fake: FakeTime
) -> None:
    app = make_app(sim_clock, fake)  # Upbit's 10/s, fixed calendar seconds
    sent_at: list[float] = []
    async with client_for(app, fake) as client:

        async def caller(index: int) -> None:
            for k in range(10):
                to_ms = 1_785_000_000_000 - (index * 10 + k) * 60_000  # all different
                await client.candles(MARKET, "1m", count=5, to_ms=to_ms)
                sent_at.append(fake.now)

        async def callers() -> None:
            async with asyncio.TaskGroup() as tg:
                for index in range(12):
                    tg.create_task(caller(index))

        start = fake.now
        await fake.run(callers())
        elapsed = fake.now - start
        stats = client.statistics()
    upstream = await sim_app_stats(app)
    assert upstream["429"] == 0 and upstream["418"] == 0
    assert upstream["requests"]["by_group"]["candles"] == 120 == stats.sent["candles"]
    assert stats.rate_limited == 0
    # At the ceiling: 120 requests need at least 11 windows, and not much more.
    assert 110 / 10 <= elapsed <= 120 * (1 + DEFAULT_MARGIN) / 10 + 0.05


async def test_zero_429s_on_real_time(sim_clock: Callable[[], int]) -> None:
    app = make_app(sim_clock, jitter_ms=2.0)
    async with client_for(app) as client:

        async def caller(index: int) -> None:
            for k in range(4):
                to_ms = 1_785_000_000_000 - (index * 4 + k) * 60_000
                await client.candles(MARKET, "1m", count=2, to_ms=to_ms)

        async with asyncio.TaskGroup() as tg:
            for index in range(6):
                tg.create_task(caller(index))
    upstream = await sim_app_stats(app)
    assert upstream["requests"]["total"] == 24
    assert upstream["429"] == 0


async def test_two_processes_on_one_ip_recover_from_429s_and_418s(
    sim_clock: Callable[[], int], reference: Client, fake: FakeTime
) -> None:
    # Two clients with their own budgets share the IP, like two processes: together they
    # send twice the limit. Upstream answers 429 (and 418 once strikes pile up); every page
    # must still arrive exactly.
    expected = await page_back(reference, "1m", 6)
    app = make_app(sim_clock, fake)
    first = client_for(app, fake)
    second = client_for(app, fake, budget=LocalRateBudget(clock=fake.clock, sleep=fake.sleep))
    async with first, second:

        async def hammer(client: Client) -> list[list[Candle]]:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(page_back(client, "1m", 6)) for _ in range(4)]
            return [t.result() for t in tasks]

        async def both() -> tuple[list[list[Candle]], list[list[Candle]]]:
            async with asyncio.TaskGroup() as tg:
                a = tg.create_task(hammer(first))
                b = tg.create_task(hammer(second))
            return a.result(), b.result()

        results_a, results_b = await fake.run(both())
        stats = [first.statistics(), second.statistics()]
    assert all(result == expected for result in results_a + results_b)
    upstream = await sim_app_stats(app)
    assert upstream["429"] > 0, "upstream never pushed back: the test proves nothing"
    assert sum(s.rate_limited for s in stats) == upstream["429"]
    assert sum(s.banned for s in stats) == upstream["418"]
    # Remaining-Req told each client about the other's spending.
    assert sum(s.budget.groups["candles"].external for s in stats) > 0


async def test_a_418_block_is_waited_out(sim_clock: Callable[[], int], fake: FakeTime) -> None:
    # A budget that believes in 100/s and ignores Remaining-Req makes strikes pile up fast.
    class Reckless(LocalRateBudget):
        def observe(
            self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
        ) -> None:
            pass

    app = make_app(sim_clock, fake)
    budget = Reckless(limit=100, clock=fake.clock, sleep=fake.sleep)
    async with client_for(app, fake, budget=budget) as client:

        async def burst() -> list[list[Candle]]:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(client.candles(MARKET, "1d", count=1, to_ms=to_ms))
                    for to_ms in range(1_785_000_000_000, 1_785_000_000_000 + 40_000_000, 10**6)
                ]
            return [t.result() for t in tasks]

        results = await fake.run(burst())
        stats = client.statistics()
    assert len(results) == 40 and all(len(page) == 1 for page in results)
    upstream = await sim_app_stats(app)
    assert upstream["418"] >= 1 and stats.banned == upstream["418"]
    assert stats.budget.groups["market"].penalties >= 1  # the block covers every group


async def test_identical_requests_make_one_upstream_call(sim_clock: Callable[[], int]) -> None:
    app = make_app(sim_clock, latency_ms=20.0)
    async with client_for(app) as client:
        results = await asyncio.gather(*(client.tickers([MARKET, "KRW-ETH"]) for _ in range(10)))
        assert client.statistics().coalesced == 9
    assert all(r == results[0] and len(r) == 2 for r in results)
    upstream = await sim_app_stats(app)
    assert upstream["requests"]["by_path"] == {"/v1/ticker": 1}


async def test_breaker_opens_on_a_failing_upstream_and_closes_after_a_probe(
    sim_clock: Callable[[], int], fake: FakeTime
) -> None:
    app = make_app(sim_clock, fake, error_rate=1.0)
    breaker = CircuitBreaker(failure_threshold=4, cool_down=15.0, clock=fake.clock)
    async with client_for(app, fake, breaker=breaker) as client:
        # Four different requests failing (one request's own 5xx would count once).
        for market in ("KRW-ETH", "KRW-XRP", "KRW-SOL"):
            with pytest.raises(UpstreamError):
                await fake.run(client.tickers([market]))
        with pytest.raises(CircuitOpenError):
            await fake.run(client.markets())
        total = (await sim_app_stats(app))["requests"]["total"]
        assert total == 3 * FAST_RETRY.attempts + 1
        with pytest.raises(CircuitOpenError):
            await fake.run(client.tickers([MARKET]))  # fails fast
        assert (await sim_app_stats(app))["requests"]["total"] == total
        await set_faults(app, error_rate=0.0)
        fake.now += 15.0
        (ticker,) = await fake.run(client.tickers([MARKET]))
        assert ticker.market == MARKET
        assert client.statistics().breaker.state == "closed"
    assert (await sim_app_stats(app))["requests"]["total"] == total + 1


async def test_retry_bound_gives_upstream_error_not_none(
    sim_clock: Callable[[], int], fake: FakeTime
) -> None:
    app = make_app(sim_clock, fake, error_rate=1.0)
    breaker = CircuitBreaker(failure_threshold=100, clock=fake.clock)
    async with client_for(app, fake, breaker=breaker, retry=RetryPolicy(attempts=3)) as client:
        with pytest.raises(UpstreamError, match=r"answered 5\d\d"):
            await fake.run(client.trades(MARKET))
    assert (await sim_app_stats(app))["requests"]["total"] == 3


async def test_critical_goes_first_while_a_low_backfill_saturates(
    sim_clock: Callable[[], int], fake: FakeTime
) -> None:
    app = make_app(sim_clock, fake)
    interval = (1.0 + DEFAULT_MARGIN) / 10
    async with client_for(app, fake) as client:
        stop = False
        waits: list[float] = []

        async def backfill(index: int) -> None:
            to_ms = 1_785_000_000_000 - index * 10**9
            while not stop:
                page = await client.candles(MARKET, "1m", to_ms=to_ms, priority=Priority.LOW)
                to_ms = page[-1].start_ms

        async def scenario() -> None:
            nonlocal stop
            async with asyncio.TaskGroup() as tg:
                for index in range(6):
                    tg.create_task(backfill(index))
                for _ in range(8):
                    await fake.sleep(0.61)
                    asked = fake.now
                    await client.tickers([MARKET], priority=Priority.CRITICAL)
                    await client.candles(MARKET, "1m", count=1, priority=Priority.CRITICAL)
                    waits.append(fake.now - asked)
                stop = True

        await fake.run(scenario())
        stats = client.statistics()
    assert stats.sent["candles"] > 40  # the backfill kept the group busy
    assert max(waits) <= interval + 1e-6, waits
    assert (await sim_app_stats(app))["429"] == 0
