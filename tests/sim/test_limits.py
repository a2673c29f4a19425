"""Upbit's rate limits in the simulator: per-group budgets, Remaining-Req, 429, growing 418
blocks, the Origin group. Windows are fixed one-second windows of an injected clock."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import httpx
import pytest
from helpers import wait_until, wait_until_sync
from starlette.applications import Starlette

from marketspine.sim import SimConfig, create_app, running
from marketspine.sim._history import Bar, History
from marketspine.sim._limits import (
    FIRST_BLOCK_S,
    STRIKES_BEFORE_BLOCK,
    RateLimiter,
)

# pyupbit parses the header with exactly this regex and fails without a match.
PYUPBIT_REMAINING_REQ = re.compile(r"group=([a-z\-]+); min=([0-9]+); sec=([0-9]+)")


class StepClock:
    """Seconds that move only when the test says so."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_budget_per_second_counts_down_and_refills_next_window() -> None:
    clock = StepClock(1000.2)
    limiter = RateLimiter(clock)
    left = [limiter.check("1.2.3.4", "candles", 10).remaining for _ in range(10)]
    assert left == list(range(9, -1, -1))
    assert limiter.check("1.2.3.4", "candles", 10).status == 429
    clock.t = 1000.99  # same fixed window
    assert limiter.check("1.2.3.4", "candles", 10).status == 429
    clock.t = 1001.0  # next window
    verdict = limiter.check("1.2.3.4", "candles", 10)
    assert (verdict.status, verdict.remaining) == (200, 9)


def test_a_request_checked_late_counts_in_the_window_it_arrived_in() -> None:
    clock = StepClock(1001.3)
    limiter = RateLimiter(clock)
    for _ in range(2):  # the new window's requests are checked first...
        assert limiter.check("a", "candles", 2).status == 200
    # ...then one that arrived in the window before, checked late: it counts there...
    assert limiter.check("a", "candles", 2, at=1000.99).status == 200
    assert limiter.check("a", "candles", 2, at=1000.995).status == 200
    assert limiter.check("a", "candles", 2, at=1000.998).status == 429
    # ...and the new window keeps its count.
    assert limiter.check("a", "candles", 2).status == 429


def test_groups_and_clients_have_separate_budgets() -> None:
    limiter = RateLimiter(StepClock())
    for _ in range(3):
        assert limiter.check("a", "candles", 3).status == 200
    assert limiter.check("a", "candles", 3).status == 429
    assert limiter.check("a", "ticker", 3).status == 200
    assert limiter.check("b", "candles", 3).status == 200


def test_persisting_after_429_blocks_with_418_and_blocks_grow() -> None:
    clock = StepClock(50.0)
    limiter = RateLimiter(clock)
    for _ in range(2):
        limiter.check("a", "candles", 2)
    statuses = [limiter.check("a", "candles", 2).status for _ in range(STRIKES_BEFORE_BLOCK)]
    assert statuses == [429] * (STRIKES_BEFORE_BLOCK - 1) + [418]
    first = limiter.check("a", "ticker", 2)  # a block covers every group
    assert first.status == 418
    assert first.blocked_for_s == pytest.approx(FIRST_BLOCK_S)
    clock.t += FIRST_BLOCK_S  # block over
    assert limiter.check("a", "ticker", 2).status == 200
    for _ in range(2):
        limiter.check("a", "ticker", 2)
    verdicts = [limiter.check("a", "ticker", 2) for _ in range(STRIKES_BEFORE_BLOCK)]
    assert verdicts[-1].status == 418
    assert verdicts[-1].blocked_for_s == pytest.approx(2 * FIRST_BLOCK_S)
    assert limiter.check("b", "ticker", 2).status == 200  # other clients are not blocked


def test_strikes_are_forgotten_after_a_quiet_second() -> None:
    clock = StepClock(10.0)
    limiter = RateLimiter(clock)
    for second in range(3):
        clock.t = 10.0 + 2 * second  # a clean second between bursts
        limiter.check("a", "candles", 1)
        statuses = [limiter.check("a", "candles", 1).status for _ in range(5)]
        assert statuses == [429] * 5


def test_origin_requests_get_one_per_ten_seconds() -> None:
    clock = StepClock(100.0)
    limiter = RateLimiter(clock)
    first = limiter.check("a", "candles", 10, origin=True)
    assert (first.status, first.group, first.remaining) == (200, "origin", 0)
    clock.t = 105.0
    assert limiter.check("a", "ticker", 10, origin=True).status == 429
    assert limiter.check("a", "ticker", 10).status == 200  # without Origin: normal budget
    clock.t = 110.0
    assert limiter.check("a", "ticker", 10, origin=True).status == 200


def test_reset_forgets_blocks() -> None:
    limiter = RateLimiter(StepClock())
    for _ in range(STRIKES_BEFORE_BLOCK + 1):
        limiter.check("a", "candles", 1)
    assert limiter.check("a", "candles", 1).status == 418
    limiter.reset()
    assert limiter.check("a", "candles", 1).status == 200


# -- through the app ----------------------------------------------------------------------------


def _client(rate_limit: int, clock: StepClock) -> httpx.AsyncClient:
    app = create_app(SimConfig(rate_limit=rate_limit), limit_clock=clock)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


async def test_remaining_req_header_counts_down_per_group() -> None:
    async with _client(10, StepClock()) as client:
        seen = []
        for _ in range(3):
            response = await client.get("/v1/market/all")
            assert response.status_code == 200
            assert response.headers["limit-by-ip"] == "Yes"
            match = PYUPBIT_REMAINING_REQ.fullmatch(response.headers["Remaining-Req"])
            assert match is not None
            seen.append(match.groups())
        assert seen == [("market", "600", "9"), ("market", "600", "8"), ("market", "600", "7")]
        response = await client.get("/v1/ticker", params={"markets": "KRW-BTC"})
        assert response.headers["Remaining-Req"] == "group=ticker; min=600; sec=9"
        response = await client.get("/v1/candles/days", params={"market": "KRW-BTC"})
        assert response.headers["Remaining-Req"] == "group=candles; min=600; sec=9"


async def test_over_the_limit_is_429_text_then_418_with_block_time() -> None:
    clock = StepClock()
    async with _client(3, clock) as client:
        statuses = [(await client.get("/v1/market/all")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await client.get("/v1/market/all")
        assert limited.status_code == 429
        assert limited.text == "Too many API requests."
        assert limited.headers["content-type"].startswith("text/plain")
        assert limited.headers["Remaining-Req"] == "group=market; min=600; sec=0"
        for _ in range(STRIKES_BEFORE_BLOCK - 2):
            assert (await client.get("/v1/market/all")).status_code == 429
        blocked = await client.get("/v1/market/all")
        assert blocked.status_code == 418
        error = blocked.json()["error"]
        assert error["name"] == 418
        assert f"blocked for {int(FIRST_BLOCK_S)} seconds" in error["message"]
        assert blocked.headers["Retry-After"] == str(int(FIRST_BLOCK_S))
        other_group = await client.get("/v1/ticker", params={"markets": "KRW-BTC"})
        assert other_group.status_code == 418
        clock.t += FIRST_BLOCK_S
        assert (await client.get("/v1/market/all")).status_code == 200
        stats = (await client.get("/sim/stats")).json()
        assert stats["429"] == STRIKES_BEFORE_BLOCK - 1
        assert stats["418"] == 2


async def test_origin_header_limits_to_one_request_per_ten_seconds() -> None:
    clock = StepClock()
    async with _client(10, clock) as client:
        origin = {"Origin": "https://example.com"}
        first = await client.get("/v1/market/all", headers=origin)
        assert first.status_code == 200
        assert first.headers["Remaining-Req"] == "group=origin; min=6; sec=0"
        assert (
            await client.get("/v1/ticker/all?quote_currencies=KRW", headers=origin)
        ).status_code == 429
        clock.t += 10
        assert (await client.get("/v1/market/all", headers=origin)).status_code == 200


async def test_stats_list_a_429_with_the_arrivals_that_filled_its_window() -> None:
    clock = StepClock(1000.25)
    async with _client(2, clock) as client:
        for t in (1000.25, 1000.5, 1000.75):
            clock.t = t
            await client.get("/v1/market/all")
        clock.t = 1001.0
        assert (await client.get("/v1/market/all")).status_code == 200  # a new window
        (rejection,) = (await client.get("/sim/stats")).json()["rejections"]
        assert rejection["at"] == 1000.75 and rejection["group"] == "market"
        assert [at for at, _ in rejection["counted"]] == [1000.25, 1000.5]
        assert rejection["client"] == "127.0.0.1" and rejection["source"] == "123"
        assert (await client.post("/sim/reset")).json()["rejections"] == []


async def test_rate_limit_zero_means_unlimited() -> None:
    async with _client(0, StepClock()) as client:
        statuses = {(await client.get("/v1/market/all")).status_code for _ in range(40)}
        assert statuses == {200}


async def test_sim_paths_are_not_limited_and_carry_no_remaining_req() -> None:
    async with _client(1, StepClock()) as client:
        for _ in range(5):
            response = await client.get("/sim/stats")
            assert response.status_code == 200
            assert "Remaining-Req" not in response.headers


async def test_rate_limit_changes_at_run_time() -> None:
    async with _client(1, StepClock()) as client:
        assert (await client.get("/v1/market/all")).status_code == 200
        assert (await client.get("/v1/market/all")).status_code == 429
        changed = await client.post("/sim/faults", json={"rate_limit": 5})
        assert changed.json()["rate_limit"] == 5
        assert (await client.get("/v1/market/all")).status_code == 200


class _SlowHistory(History):
    """The simulator's history, each candle page taking ``cost_s`` of the limiter's clock to
    generate, as an uncached page takes milliseconds of the event loop's time."""

    def __init__(self, clock: StepClock, cost_s: float) -> None:
        super().__init__(SimConfig().seed, markets=SimConfig().markets)
        self.clock, self.cost_s = clock, cost_s

    def candles(self, *args: Any, **kwargs: Any) -> list[Bar]:
        self.clock.t += self.cost_s
        return super().candles(*args, **kwargs)


async def test_requests_arriving_together_are_counted_when_they_arrived_not_when_answered() -> None:
    """Three pages arriving at once, then three more a second later (cached by then), each
    window holding the limit: all answered, however long the first three take to generate
    in turn."""
    clock = StepClock(1000.5)
    history = _SlowHistory(clock, 0.3)
    app = create_app(SimConfig(rate_limit=3), limit_clock=clock, history=history)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:

        async def burst() -> list[int]:
            pages = [
                client.get("/v1/candles/minutes/1", params={"market": "KRW-BTC", "to": to})
                for to in ("2026-11-20T10:00:00Z", "2026-11-19T10:00:00Z", "2026-11-18T10:00:00Z")
            ]
            return [answer.status_code for answer in await asyncio.gather(*pages)]

        assert await burst() == [200, 200, 200]
        assert clock.t == pytest.approx(1001.4)  # the last one was answered in the next window
        clock.t, history.cost_s = 1001.5, 0.0
        assert await burst() == [200, 200, 200]


class _HeldHistory(History):
    """The simulator's history, its first candle page held (``started`` set) until
    ``release`` is set or 5 s pass; ``released`` says whether it was released before that."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__(SimConfig().seed, markets=SimConfig().markets)
        self.started = threading.Event()
        self.release = release
        self.released: list[bool] = []

    def candles(self, *args: Any, **kwargs: Any) -> list[Bar]:
        if not self.started.is_set():
            self.started.set()
            self.released.append(self.release.wait(timeout=5))
        return super().candles(*args, **kwargs)


async def test_served_on_a_socket_an_arrival_is_stamped_while_another_page_is_generated() -> None:
    """As Upbit's gateway does: a ticker request arriving while a candle page is being
    generated is counted then, not once the page is done (pages off the event loop). On the
    loop, the held page would have kept the ticker from being stamped until it gave up."""
    stamps: list[float] = []
    second_stamp = threading.Event()

    def clock() -> float:
        stamps.append(1000.5)
        if len(stamps) == 2:
            second_stamp.set()
        return stamps[-1]

    history = _HeldHistory(second_stamp)
    app = create_app(
        SimConfig(rate_limit=10), limit_clock=clock, history=history, pages_off_loop=True
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        page = asyncio.ensure_future(
            client.get(
                "/v1/candles/minutes/1", params={"market": "KRW-BTC", "to": "2026-11-20T10:00:00Z"}
            )
        )
        await wait_until(history.started.is_set, 10, "the page being generated")
        ticker = await client.get("/v1/ticker", params={"markets": "KRW-BTC"})
        answers = [await page, ticker]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert history.released == [True]  # the ticker was stamped while the page was held
    assert len(answers[0].json()) == 1


def _history_page_worker(app: Starlette) -> threading.Thread:
    """Serve ``app``, ask it one history page, stop it: the thread that generated the page."""
    before = set(threading.enumerate())
    params = {"market": "KRW-BTC", "to": "2026-11-20T10:00:00Z", "count": "200"}
    with running(app=app) as base:
        page = httpx.get(f"{base}/v1/candles/minutes/1", params=params, timeout=30)
        assert page.status_code == 200 and len(page.json()) == 200
        (worker,) = [  # the page went to the simulator's one worker
            thread
            for thread in threading.enumerate()
            if thread not in before and thread.name.startswith("sim-pages")
        ]
    return worker


def test_served_a_history_page_goes_to_a_thread_that_ends_with_the_server() -> None:
    """The worker is the server's: it ends when the server stops, though the app lives on,
    and the app served again starts another."""
    app = create_app(SimConfig(rate_limit=0), pages_off_loop=True)
    first = _history_page_worker(app)
    wait_until_sync(lambda: not first.is_alive(), 10, "the page thread to end")
    second = _history_page_worker(app)
    assert second is not first
    wait_until_sync(lambda: not second.is_alive(), 10, "the second page thread to end")
