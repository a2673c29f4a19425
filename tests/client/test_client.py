"""The REST client against scripted upstream answers (httpx.MockTransport) on fake time:
request shape, error mapping, retries, 429/418 handling, the breaker, shared requests."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers import FakeTime

from marketspine._base.time import format_utc, parse_time
from marketspine._budget.local import LocalRateBudget
from marketspine._budget.rules import Priority
from marketspine._client.circuit import CircuitBreaker
from marketspine._client.client import MARKETS_PER_REQUEST, Client
from marketspine._client.retry import RetryPolicy
from marketspine.errors import (
    BannedError,
    CircuitOpenError,
    ClosedError,
    InvalidRequestError,
    RateLimitedError,
    UnknownMarketError,
    UpstreamError,
)

CANDLES: list[dict[str, Any]] = [
    {
        "market": "KRW-BTC",
        "candle_date_time_utc": format_utc(parse_time("2026-07-30T07:41:00") - k * 60_000),
        "candle_date_time_kst": "ignored",
        "opening_price": 100.0 + k,
        "high_price": 110.0 + k,
        "low_price": 90.0 + k,
        "trade_price": 105.0 + k,
        "timestamp": parse_time("2026-07-30T07:41:30") - k * 60_000,
        "candle_acc_trade_price": 1000.0,
        "candle_acc_trade_volume": 10.0,
        "unit": 1,
    }
    for k in range(3)
]


def ticker_row(market: str, ms: int = 1785397260707) -> dict[str, Any]:
    return {
        "market": market, "trade_timestamp": ms - 50, "opening_price": 1.0,
        "high_price": 2.0, "low_price": 0.5, "trade_price": 1.5, "prev_closing_price": 1.0,
        "change": "RISE", "change_price": 0.5, "change_rate": 0.5,
        "signed_change_price": 0.5, "signed_change_rate": 0.5, "trade_volume": 1.0,
        "acc_trade_price": 1.0, "acc_trade_price_24h": 1.0, "acc_trade_volume": 1.0,
        "acc_trade_volume_24h": 1.0, "highest_52_week_price": 2.0,
        "highest_52_week_date": "2026-01-01", "lowest_52_week_price": 0.1,
        "lowest_52_week_date": "2025-09-01", "timestamp": ms,
    }  # fmt: skip


def ok(body: Any, group: str = "candles", sec: int = 9, **headers: str) -> httpx.Response:
    return httpx.Response(
        200,
        content=json.dumps(body).encode(),
        headers={"Remaining-Req": f"group={group}; min=600; sec={sec}", **headers},
    )


def upbit_error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"name": status, "message": message}})


class Upstream:
    """A scripted upstream: each request pops the next answer (the last one repeats)."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], Any]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if callable(answer):
            result = answer(request)
            if asyncio.iscoroutine(result):
                result = await result
            assert isinstance(result, httpx.Response)
            return result
        return answer


def make_client(fake: FakeTime, upstream: Upstream, **kwargs: Any) -> Client:
    kwargs.setdefault("retry", RetryPolicy(attempts=4))
    kwargs.setdefault("rng", lambda: 1.0)
    return Client(
        "http://upbit.test",
        transport=httpx.MockTransport(upstream),
        clock=fake.clock,
        sleep=fake.sleep,
        **kwargs,
    )


async def test_request_shape_no_origin_gzip_and_encoded_to(fake: FakeTime) -> None:
    upstream = Upstream(ok(CANDLES))
    async with make_client(fake, upstream) as client:
        candles = await client.candles(
            "KRW-BTC", "1m", count=3, to_ms=parse_time("2026-07-30T07:42:00.250Z")
        )
    (request,) = upstream.requests
    assert request.url.path == "/v1/candles/minutes/1"
    assert "origin" not in request.headers
    assert request.headers["accept-encoding"] == "gzip"
    # ':' URL-encoded; a fractional `to` rounds up so the 07:42:00 candle stays included.
    assert b"to=2026-07-30T07%3A42%3A01Z" in request.url.query
    assert request.url.params["market"] == "KRW-BTC" and request.url.params["count"] == "3"
    assert [c.start_ms for c in candles] == [
        parse_time(row["candle_date_time_utc"]) for row in CANDLES
    ]
    assert candles[0].timeframe == "1m"


async def test_argument_errors_are_raised_before_any_request(fake: FakeTime) -> None:
    upstream = Upstream(ok([]))
    async with make_client(fake, upstream) as client:
        with pytest.raises(InvalidRequestError, match="count"):
            await client.candles("KRW-BTC", "1m", count=201)
        with pytest.raises(InvalidRequestError, match="timeframe"):
            await client.candles("KRW-BTC", "2m")
        with pytest.raises(InvalidRequestError, match="market code"):
            await client.candles("KRW-BTC,KRW-ETH", "1d")
        with pytest.raises(InvalidRequestError, match="HHmmss"):
            await client.trades("KRW-BTC", to="13:00")
        with pytest.raises(InvalidRequestError, match="days_ago"):
            await client.trades("KRW-BTC", days_ago=8)
        with pytest.raises(InvalidRequestError, match="list of codes"):
            await client.tickers("KRW-BTC")
    assert upstream.requests == []


async def test_unknown_market_404(fake: FakeTime) -> None:
    upstream = Upstream(upbit_error(404, "Code not found"))
    async with make_client(fake, upstream) as client:
        with pytest.raises(UnknownMarketError) as caught:
            await client.candles("KRW-NOPE", "1d")
    assert caught.value.market == "KRW-NOPE"
    assert "Code not found" in str(caught.value)
    assert len(upstream.requests) == 1  # not retried


async def test_other_400_carries_upbits_message(fake: FakeTime) -> None:
    message = "Invalid parameter. Check the given value!"
    upstream = Upstream(upbit_error(400, message))
    async with make_client(fake, upstream) as client:
        with pytest.raises(InvalidRequestError, match="Invalid parameter") as caught:
            await client.trades("KRW-BTC")
    assert not isinstance(caught.value, UnknownMarketError)
    assert len(upstream.requests) == 1


async def test_unrouted_404_is_an_invalid_request(fake: FakeTime) -> None:
    body = {"error": {"name": "not_found", "message": "no Route matched with those values"}}
    upstream = Upstream(httpx.Response(404, json=body))
    async with make_client(fake, upstream) as client:
        with pytest.raises(InvalidRequestError, match="no such Upbit path") as caught:
            await client.markets()
    assert not isinstance(caught.value, UnknownMarketError)


async def test_429_retries_the_same_request_after_pausing_the_group(fake: FakeTime) -> None:
    too_many = httpx.Response(429, text="Too many API requests.")
    upstream = Upstream(too_many, ok(CANDLES))
    async with make_client(fake, upstream, retry=RetryPolicy(rate_limited_delay=1.0)) as client:
        start = fake.now
        candles = await fake.run(client.candles("KRW-BTC", "1m", count=3))
        stats = client.statistics()
    assert len(candles) == 3
    first, second = upstream.requests
    assert first.url == second.url
    assert fake.now - start >= 1.0
    assert stats.rate_limited == 1 and stats.retries == 1
    assert stats.budget.groups["candles"].penalties == 1


async def test_persistent_429_raises_rate_limited_after_the_bound(fake: FakeTime) -> None:
    upstream = Upstream(httpx.Response(429, text="Too many API requests."))
    async with make_client(fake, upstream, retry=RetryPolicy(attempts=3)) as client:
        with pytest.raises(RateLimitedError) as caught:
            await fake.run(client.candles("KRW-BTC", "1m"))
        stats = client.statistics()
    assert len(upstream.requests) == 3
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    assert stats.rate_limited == 3 and stats.failed == 1
    assert stats.breaker.state == "closed"  # upstream is up, it is just busy


async def test_418_is_waited_out_with_a_warning(
    fake: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = upbit_error(418, "this IP is blocked for 7 seconds")
    blocked.headers["Retry-After"] = "7"
    upstream = Upstream(blocked, ok([ticker_row("KRW-BTC")], group="ticker"))
    async with make_client(fake, upstream) as client:
        start = fake.now
        with caplog.at_level(logging.WARNING, logger="marketspine.client"):
            (ticker,) = await fake.run(client.tickers(["KRW-BTC"]))
        stats = client.statistics()
    assert ticker.market == "KRW-BTC"
    assert fake.now - start >= 7.0
    assert any("418" in r.getMessage() and "7 s" in r.getMessage() for r in caplog.records)
    # The block covers the IP: every group waits.
    assert all(g.penalties == 1 for g in stats.budget.groups.values())
    assert stats.banned == 1


async def test_418_block_time_from_the_body_alone(fake: FakeTime) -> None:
    upstream = Upstream(upbit_error(418, "blocked for 3 seconds"), ok([], group="market"))
    async with make_client(fake, upstream) as client:
        start = fake.now
        await fake.run(client.markets())
    assert 3.0 <= fake.now - start < 4.0


async def test_418_without_block_time_backs_off(fake: FakeTime) -> None:
    upstream = Upstream(httpx.Response(418, text="I'm a teapot"), ok([], group="market"))
    policy = RetryPolicy(default_ban=4.0)
    async with make_client(fake, upstream, retry=policy) as client:
        start = fake.now
        await fake.run(client.markets())
    assert fake.now - start >= 4.0


async def test_418_longer_than_we_wait_raises_banned(fake: FakeTime) -> None:
    blocked = upbit_error(418, "blocked")
    blocked.headers["Retry-After"] = "3600"
    upstream = Upstream(blocked)
    async with make_client(fake, upstream) as client:
        with pytest.raises(BannedError) as caught:
            await fake.run(client.markets())
    assert caught.value.retry_after == 3600
    assert len(upstream.requests) == 1


async def test_418_longer_than_we_wait_opens_the_breaker_for_the_block(fake: FakeTime) -> None:
    blocked = upbit_error(418, "blocked")
    blocked.headers["Retry-After"] = "600"
    upstream = Upstream(blocked)
    async with make_client(fake, upstream) as client:
        with pytest.raises(BannedError):
            await fake.run(client.markets())
        with pytest.raises(CircuitOpenError) as caught:  # no second request while banned
            await fake.run(client.tickers(["KRW-BTC"]))
        stats = client.statistics()
    assert len(upstream.requests) == 1
    assert stats.breaker.state == "open"
    assert caught.value.retry_after is not None and caught.value.retry_after > 590


async def test_5xx_retried_with_capped_exponential_full_jitter(fake: FakeTime) -> None:
    upstream = Upstream(httpx.Response(502, text="<html>502</html>"))
    delays: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        delays.append(seconds)
        await fake.sleep(seconds)

    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    draws = iter([0.5, 1.0, 0.25, 1.0, 0.1])
    client = Client(
        "http://upbit.test",
        transport=httpx.MockTransport(upstream),
        clock=fake.clock,
        sleep=recording_sleep,
        rng=lambda: next(draws),
        retry=policy,
        breaker=CircuitBreaker(failure_threshold=100, clock=fake.clock),
    )
    async with client:
        with pytest.raises(UpstreamError, match="502") as caught:
            await fake.run(client.candles("KRW-BTC", "1d"))
    assert not isinstance(caught.value, CircuitOpenError)
    assert len(upstream.requests) == 6
    ceilings = [min(3.0, 0.5 * 2**n) for n in range(5)]
    assert delays == [d * c for d, c in zip([0.5, 1.0, 0.25, 1.0, 0.1], ceilings, strict=True)]


async def test_connection_errors_become_upstream_error_with_cause(fake: FakeTime) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    upstream = Upstream(refuse)
    async with make_client(fake, upstream, retry=RetryPolicy(attempts=2)) as client:
        with pytest.raises(UpstreamError, match=r"cannot reach .*: connection refused") as caught:
            await fake.run(client.markets())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(upstream.requests) == 2


async def test_a_hung_request_times_out_and_the_retry_succeeds(fake: FakeTime) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    upstream = Upstream(hang, ok([], group="market"))
    async with make_client(fake, upstream, timeout=0.05) as client:
        assert await fake.run(client.markets()) == []
        assert client.statistics().retries == 1
    assert len(upstream.requests) == 2


async def test_breaker_opens_fails_fast_then_one_probe_closes_it(fake: FakeTime) -> None:
    answers: list[httpx.Response] = [httpx.Response(503)] * 3
    upstream = Upstream(*answers, ok([], group="market"))
    breaker = CircuitBreaker(failure_threshold=3, cool_down=30.0, clock=fake.clock)
    async with make_client(
        fake, upstream, breaker=breaker, retry=RetryPolicy(attempts=1)
    ) as client:
        # Three different requests failing: upstream is down (one request failing again
        # and again would be that request's own failure, see the next test).
        for request in (client.tickers(["KRW-BTC"]), client.tickers(["KRW-ETH"]), client.markets()):
            with pytest.raises(UpstreamError, match="answered 503"):
                await fake.run(request)
        assert len(upstream.requests) == 3
        with pytest.raises(CircuitOpenError) as caught:
            await client.candles("KRW-BTC", "1d")  # fails fast, no request
        assert caught.value.retry_after == pytest.approx(30.0, abs=5.0)
        # This request, then the failure that made upstream's (another request's).
        said = "GET /v1/candles/days not sent, upstream failing: GET /v1/market/all failed"
        assert str(caught.value).startswith(said), caught.value
        assert len(upstream.requests) == 3
        assert client.statistics().breaker.state == "open"
        fake.now += 30.0
        assert await client.markets() == []  # the probe
        assert client.statistics().breaker.state == "closed"
    assert len(upstream.requests) == 4


async def test_a_cursor_that_is_no_sequential_id_is_refused_before_sending(
    fake: FakeTime,
) -> None:
    upstream = Upstream(ok([], group="trade"))
    async with make_client(fake, upstream) as client:
        for cursor in (-1, 2**63, 10**25):
            with pytest.raises(InvalidRequestError, match="invalid cursor"):
                await client.trades("KRW-BTC", cursor=cursor)
        assert await client.trades("KRW-BTC", cursor=2**63 - 1) == []
    assert len(upstream.requests) == 1


async def test_one_requests_own_5xx_and_4xx_never_open_the_breaker(fake: FakeTime) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "cursor" in request.url.params:  # upstream cannot answer this one request
            return httpx.Response(500, json={"error": {"name": 500, "message": "boom"}})
        if request.url.params.get("market") == "KRW-XRP":  # nor this one, its fault
            return upbit_error(400, "Invalid parameter. Check the given value!")
        return ok([], group="trade")

    upstream = Upstream(answer)
    breaker = CircuitBreaker(failure_threshold=3, cool_down=30.0, clock=fake.clock)
    async with make_client(
        fake, upstream, breaker=breaker, retry=RetryPolicy(attempts=6)
    ) as client:
        for _ in range(3):  # retried, and asked again: still that request's own failure
            with pytest.raises(UpstreamError, match="answered 500"):
                await fake.run(client.trades("KRW-BTC", cursor=7))
        assert len(upstream.requests) == 18
        for _ in range(5):  # a 4xx: upstream works, the request is wrong (never retried)
            with pytest.raises(InvalidRequestError, match="rejected by Upbit"):
                await fake.run(client.trades("KRW-XRP"))
        stats = client.statistics().breaker
        assert (stats.state, stats.opened, stats.consecutive_failures) == ("closed", 0, 0)
        assert await fake.run(client.trades("KRW-BTC")) == []  # another request goes
        assert client.statistics().breaker.state == "closed"


async def test_half_open_lets_one_probe_while_others_fail_fast(fake: FakeTime) -> None:
    release = asyncio.Event()

    async def slow_ok(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return ok([], group="market")

    upstream = Upstream(httpx.Response(500), slow_ok)
    breaker = CircuitBreaker(failure_threshold=1, cool_down=5.0, clock=fake.clock)
    async with make_client(fake, upstream, breaker=breaker) as client:
        with pytest.raises(CircuitOpenError):
            await fake.run(client.markets())
        fake.now += 5.0
        probe = asyncio.ensure_future(client.markets())
        await fake.settle()
        with pytest.raises(CircuitOpenError, match="probe"):
            await client.markets(details=False)
        release.set()
        assert await probe == []
        assert await client.markets(details=False) == []


async def test_identical_requests_in_flight_make_one_upstream_call(fake: FakeTime) -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return ok(CANDLES)

    upstream = Upstream(slow)
    async with make_client(fake, upstream) as client:
        calls = [asyncio.ensure_future(client.candles("KRW-BTC", "1m", count=3)) for _ in range(5)]
        other = asyncio.ensure_future(client.candles("KRW-BTC", "1m", count=2))
        await fake.settle()
        release.set()
        results = await asyncio.gather(*calls, other)
        assert client.statistics().coalesced == 4
    assert len(upstream.requests) == 2  # count=3 once, count=2 once
    assert all(r == results[0] for r in results[:5])


async def test_shared_requests_share_the_error(fake: FakeTime) -> None:
    release = asyncio.Event()

    async def slow_404(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return upbit_error(404, "Code not found")

    upstream = Upstream(slow_404)
    async with make_client(fake, upstream) as client:
        calls = [asyncio.ensure_future(client.tickers(["KRW-NOPE"])) for _ in range(3)]
        await fake.settle()
        release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert len(upstream.requests) == 1
    assert all(isinstance(o, UnknownMarketError) for o in outcomes)


async def test_a_cancelled_leader_hands_the_request_to_a_follower(fake: FakeTime) -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return ok([], group="market")

    upstream = Upstream(slow)
    async with make_client(fake, upstream) as client:
        leader = asyncio.ensure_future(client.markets())
        await fake.settle()
        follower = asyncio.ensure_future(client.markets())
        await fake.settle()
        leader.cancel()
        await fake.settle()
        release.set()
        assert await follower == []
    assert leader.cancelled()
    assert len(upstream.requests) == 2  # the follower fetched for itself


async def test_long_market_lists_are_split(fake: FakeTime) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        codes = request.url.params["markets"].split(",")
        return ok([ticker_row(code) for code in codes], group="ticker")

    upstream = Upstream(answer)
    markets = [f"KRW-C{i:03d}" for i in range(2 * MARKETS_PER_REQUEST + 5)]
    async with make_client(fake, upstream) as client:
        tickers = await fake.run(client.tickers([*markets, markets[0]]))
    assert [t.market for t in tickers] == markets  # deduplicated, in order
    assert len(upstream.requests) == 3
    assert all(b"%2C" in r.url.query for r in upstream.requests)  # commas encoded


async def test_a_failing_chunk_fails_the_call_instead_of_dropping_markets(
    fake: FakeTime,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        codes = request.url.params["markets"].split(",")
        if "KRW-NOPE" in codes:
            return upbit_error(404, "Code not found")
        return ok([ticker_row(code) for code in codes], group="ticker")

    upstream = Upstream(answer)
    markets = [f"KRW-C{i:03d}" for i in range(MARKETS_PER_REQUEST + 5)] + ["KRW-NOPE"]
    async with make_client(fake, upstream) as client:
        with pytest.raises(UnknownMarketError):
            await fake.run(client.tickers(markets))
    assert len(upstream.requests) == 2


async def test_orderbook_level_and_count_params(fake: FakeTime) -> None:
    upstream = Upstream(ok([], group="orderbook"))
    async with make_client(fake, upstream) as client:
        await client.orderbooks(["KRW-BTC"], count=5, level=10000.0)
        await client.orderbooks(["KRW-DOGE"], level=0.1)
    first, second = upstream.requests
    assert first.url.params["level"] == "10000" and first.url.params["count"] == "5"
    assert second.url.params["level"] == "0.1"


async def test_remaining_req_below_our_count_is_believed(fake: FakeTime) -> None:
    budget = LocalRateBudget(clock=fake.clock, sleep=fake.sleep)
    upstream = Upstream(ok([], group="market", sec=0))
    async with make_client(fake, upstream, budget=budget) as client:
        await client.markets()
    stats = budget.statistics().groups["market"]
    assert stats.external == 9 and stats.tokens == 0


async def test_upstream_clock_from_date_header_and_tick_times(fake: FakeTime) -> None:
    wall = parse_time("2026-07-30T07:41:00Z")
    upstream = Upstream(
        ok([], group="market", date="Thu, 30 Jul 2026 07:40:50 GMT"),  # upstream is behind
        ok([ticker_row("KRW-BTC", ms=wall - 9_500)], group="ticker"),
        ok([], group="market", date="Thu, 30 Jul 2026 07:41:05 GMT"),  # now it is ahead
        ok([ticker_row("KRW-BTC", ms=wall + 5_800)], group="ticker"),
    )
    async with make_client(fake, upstream, wall_ms=lambda: wall) as client:
        assert client.upstream_now_ms() == wall  # no evidence yet
        await client.markets()
        # Upstream's clock is below 07:40:51 (Date floors to the second).
        assert client.upstream_now_ms() == wall - 9_000
        await client.tickers(["KRW-BTC"])  # a tick at -9.5 s changes nothing
        assert client.upstream_now_ms() == wall - 9_000
        await client.markets(details=False)  # the clocks were reset: contradiction
        assert client.upstream_now_ms() == wall + 5_000
        await client.tickers(["KRW-ETH"])  # a tick at +5.8 s: upstream is at least there
        assert client.upstream_now_ms() == wall + 5_800


async def test_old_ticks_do_not_drag_the_clock_into_the_past(fake: FakeTime) -> None:
    wall = parse_time("2026-07-30T07:41:00Z")
    upstream = Upstream(ok(CANDLES[::-1][:1], group="candles"))  # a candle from last year
    async with make_client(fake, upstream, wall_ms=lambda: wall + 3_600_000 * 24 * 365) as client:
        await client.candles("KRW-BTC", "1m", count=1, to_ms=wall)
        assert client.upstream_now_ms() == wall + 3_600_000 * 24 * 365


def one_slot(fake: FakeTime) -> tuple[LocalRateBudget, Upstream]:
    """A budget of one request per window on virtual time, and an upstream that answers
    every orderbook-group request (reporting the window used up)."""
    budget = LocalRateBudget(limit=1, clock=fake.clock, sleep=fake.sleep)
    return budget, Upstream(lambda r: ok([], group="orderbook", sec=0))


async def test_priority_reaches_the_budget(fake: FakeTime) -> None:
    budget, upstream = one_slot(fake)
    order: list[str] = []
    async with make_client(fake, upstream, budget=budget) as client:
        await client.instruments(["KRW-ETH"])  # uses the only slot

        async def call(name: str, priority: Priority) -> None:
            await client.instruments([name], priority=priority)
            order.append(name)

        async def both() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(call("KRW-LOW", Priority.LOW))
                tg.create_task(call("KRW-CRIT", Priority.CRITICAL))

        await fake.run(both())
    assert order == ["KRW-CRIT", "KRW-LOW"]


async def test_client_must_be_opened(fake: FakeTime) -> None:
    client = make_client(fake, Upstream(ok([])))
    with pytest.raises(ClosedError, match="async with"):
        await client.markets()


async def test_a_critical_caller_raises_the_shared_request_it_joins(fake: FakeTime) -> None:
    # The bot asks (CRITICAL) for exactly what a LOW backfill already queued: it must not
    # wait behind NORMAL work the LOW request would yield to, nor cost a second call.
    budget, upstream = one_slot(fake)
    order: list[str] = []
    async with make_client(fake, upstream, budget=budget) as client:
        await client.instruments(["KRW-BTC"])  # uses the only slot

        async def call(name: str, market: str, priority: Priority) -> None:
            await client.instruments([market], priority=priority)
            order.append(name)

        # Virtual time stands still outside fake.run: set the scene, then let it move.
        low = asyncio.create_task(call("low", "KRW-ETH", Priority.LOW))
        normal = asyncio.create_task(call("normal", "KRW-XRP", Priority.NORMAL))
        await fake.settle()  # both queued for the budget
        critical = asyncio.create_task(call("critical", "KRW-ETH", Priority.CRITICAL))
        await fake.settle()
        await fake.run(asyncio.gather(low, normal, critical))
    assert order.index("critical") < order.index("normal")
    assert order.index("low") < order.index("normal")  # the shared request went first
    sent = [r.url.params["markets"] for r in upstream.requests]
    assert sent == ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
    assert client.statistics().coalesced == 1


def waiting(budget: LocalRateBudget) -> dict[str, int]:
    return {k: n for k, n in budget.statistics().groups["orderbook"].waiting.items() if n}


async def test_a_caller_cancelled_while_queued_leaves_the_budget_queue(fake: FakeTime) -> None:
    budget, upstream = one_slot(fake)
    async with make_client(fake, upstream, budget=budget) as client:
        await client.instruments(["KRW-BTC"])  # uses the only slot
        queued = asyncio.create_task(client.instruments(["KRW-ETH"], priority=Priority.LOW))
        await fake.settle()
        assert waiting(budget) == {"LOW": 1}
        # A more urgent caller joins, then gives up: the request goes on, raised.
        joined = asyncio.create_task(client.instruments(["KRW-ETH"], priority=Priority.HIGH))
        await fake.settle()
        joined.cancel()
        await fake.settle()
        assert waiting(budget) == {"HIGH": 1}
        queued.cancel()
        await fake.settle()
        assert waiting(budget) == {}
        assert queued.cancelled() and joined.cancelled()
    assert [r.url.params["markets"] for r in upstream.requests] == ["KRW-BTC"]
