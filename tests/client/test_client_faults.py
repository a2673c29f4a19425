"""A hung request costs a multiple of the observed latency, not the fixed 10 s timeout, and
its retry spends exactly one more token."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from helpers import sim_app_stats

from marketspine._budget.local import LocalRateBudget
from marketspine._client.client import Client
from marketspine._client.latency import LatencyTimeout
from marketspine._client.retry import RetryPolicy
from marketspine.errors import InvalidRequestError


def test_the_timeout_follows_the_recent_p99_between_floor_and_ceiling() -> None:
    timeouts = LatencyTimeout(ceiling=10.0)
    assert timeouts.seconds == 3.0  # nothing seen yet: the start, not the ceiling
    for i in range(100):  # 30 ms latency with up to 50 ms jitter
        timeouts.observe(0.030 + 0.050 * i / 99)
    assert timeouts.seconds == 1.5  # 10 x p99 (0.8 s) is below the floor
    assert timeouts.seconds <= 2.0  # the promised bound for a hang at 30 ms latency
    for _ in range(200):  # upstream slows down: the timeout follows
        timeouts.observe(0.4)
    assert timeouts.seconds == pytest.approx(4.0)
    for _ in range(200):
        timeouts.observe(3.0)
    assert timeouts.seconds == 10.0  # never above the configured timeout
    with pytest.raises(InvalidRequestError, match="floor"):
        LatencyTimeout(ceiling=1.0, floor=2.0)


def test_before_enough_replies_a_timeout_doubles_the_wait_up_to_the_ceiling() -> None:
    timeouts = LatencyTimeout(ceiling=10.0, start=3.0)
    limit = timeouts.seconds
    timeouts.timed_out(limit)
    timeouts.timed_out(limit)  # a second request that had the same limit: doubled once
    assert timeouts.seconds == 6.0
    timeouts.timed_out(timeouts.seconds)
    assert timeouts.seconds == 10.0  # never above the ceiling
    slow = LatencyTimeout(ceiling=10.0, start=3.0)
    slow.observe(0.5)  # a first reply slower than start / multiple raises the wait
    assert slow.seconds == 5.0
    slow.observe(0.1)
    assert slow.seconds == 5.0  # the slowest of a few replies, not the last
    for _ in range(10):  # enough replies: the p99, and timeouts no longer double it
        slow.observe(0.05)
    assert slow.seconds == 1.5
    slow.timed_out(1.5)
    assert slow.seconds == 1.5


async def set_faults(app: Any, **faults: float) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as http:
        (await http.post("/sim/faults", json=faults)).raise_for_status()


class CountingBudget(LocalRateBudget):
    """A local budget that counts the replies (or failures) it is told of."""

    observed = 0

    def observe(
        self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
    ) -> None:
        self.observed += 1
        super().observe(group, remaining_sec, sent_at=sent_at)


class HangOnce(httpx.AsyncBaseTransport):
    """The simulator in-process; once a request has hung there, hangs are switched off
    before the next request goes in (so exactly one hangs while ``hang_rate`` is 1)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sim = self._app.state.sim
        if sim.stats.hung:
            sim.faults.update({"hang_rate": 0.0})
        return await self._inner.handle_async_request(request)


async def test_a_hang_costs_a_multiple_of_the_latency_and_one_more_token() -> None:
    from marketspine.sim import SimConfig, create_app

    app = create_app(SimConfig(rate_limit=0, latency_ms=30))
    budget = CountingBudget(limit=1000)
    retry = RetryPolicy(base_delay=0.01, max_delay=0.05)
    async with Client(
        "http://sim",
        transport=HangOnce(app),
        budget=budget,
        retry=retry,
        timeout_floor=0.2,  # the default floor is 1.5 s; a test must not wait that long
    ) as client:
        for i in range(12):  # ordinary requests teach the client upstream's latency
            await client.candles("KRW-BTC", "1m", count=1, to_ms=1_785_000_000_000 - i * 60_000)
        assert 0.2 <= client.statistics().timeout_s < 1.0
        sent_before = budget.statistics().groups["candles"].sent
        requests_before = (await sim_app_stats(app))["requests"]["by_group"]["candles"]
        await set_faults(app, hang_rate=1.0)
        started = time.perf_counter()
        async with asyncio.timeout(5):  # the old fixed timeout would take 10 s
            page = await client.candles("KRW-BTC", "1m", count=5)
        cost = time.perf_counter() - started
        stats = client.statistics()
    assert len(page) == 5
    assert cost < 1.0, f"the hang cost {cost:.2f} s"
    assert stats.timed_out == 1 and stats.retries == 1
    # The hung attempt and its retry: two requests upstream, two tokens — none lost, none twice.
    upstream = await sim_app_stats(app)
    assert upstream["hung"] == 1
    assert upstream["requests"]["by_group"]["candles"] - requests_before == 2
    assert budget.statistics().groups["candles"].sent - sent_before == 2
    # Every send is told back to the budget, the hung one included: it may have reached
    # upstream as late as it was given up, and is counted then.
    assert budget.observed == budget.statistics().groups["candles"].sent
