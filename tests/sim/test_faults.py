"""Faults (5xx, hangs, latency), their run-time control through /sim/faults, and the
/sim/stats counters with /sim/reset."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import pytest
from helpers import FakeTime

from marketspine.sim import SimConfig, create_app

TICKER = "/v1/ticker?markets=KRW-BTC"


def client_for(config: SimConfig, now_ms: int) -> httpx.AsyncClient:
    app = create_app(config, clock=lambda: now_ms)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


async def test_error_rate_answers_a_share_with_varied_5xx(sim_now_ms: int) -> None:
    async with client_for(SimConfig(rate_limit=0, error_rate=0.3), sim_now_ms) as client:
        statuses = Counter([(await client.get(TICKER)).status_code for _ in range(300)])
        stats = (await client.get("/sim/stats")).json()
    failed = {code: n for code, n in statuses.items() if code != 200}
    assert set(statuses) <= {200, 500, 502, 503, 504}
    assert len(failed) >= 3  # not always the same error
    assert 0.2 <= sum(failed.values()) / 300 <= 0.4
    assert {int(code): n for code, n in stats["status"].items()} == dict(statuses)


async def test_injected_errors_look_like_upbit_or_its_gateway(sim_now_ms: int) -> None:
    async with client_for(SimConfig(rate_limit=0, error_rate=1.0), sim_now_ms) as client:
        responses = [await client.get(TICKER) for _ in range(40)]
    for response in responses:
        if response.status_code == 500:
            assert response.json()["error"]["name"] == 500
        else:
            assert response.headers["content-type"].startswith("text/html")
            assert str(response.status_code) in response.text


async def test_faults_are_reproducible_for_a_seed(sim_now_ms: int) -> None:
    async def statuses(seed: int) -> list[int]:
        config = SimConfig(seed=seed, rate_limit=0, error_rate=0.5)
        async with client_for(config, sim_now_ms) as client:
            return [(await client.get(TICKER)).status_code for _ in range(60)]

    first = await statuses(3)
    assert first == await statuses(3)
    assert first != await statuses(4)


def test_hung_requests_are_never_answered(
    running_sim: Callable[..., AbstractContextManager[str]], sim_now_ms: int
) -> None:
    config = SimConfig(rate_limit=0, hang_rate=1.0)
    with running_sim(config, clock=lambda: sim_now_ms) as url, httpx.Client(base_url=url) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.get(TICKER, timeout=0.3)
        assert time.monotonic() - started >= 0.3
        assert client.get("/sim/stats").json()["hung"] == 1  # /sim paths never hang
        client.post("/sim/faults", json={"hang_rate": 0})
        assert client.get(TICKER, timeout=5).status_code == 200


async def test_hang_waits_until_the_client_gives_up(sim_now_ms: int) -> None:
    async with client_for(SimConfig(rate_limit=0, hang_rate=1.0), sim_now_ms) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get(TICKER), timeout=0.2)
        assert (await client.get("/sim/stats")).json()["hung"] == 1


async def test_latency_and_jitter_delay_answers(sim_now_ms: int) -> None:
    config = SimConfig(rate_limit=0, latency_ms=100, jitter_ms=50)
    async with client_for(config, sim_now_ms) as client:
        elapsed = []
        for _ in range(5):
            started = time.monotonic()
            assert (await client.get(TICKER)).status_code == 200
            elapsed.append(time.monotonic() - started)
        started = time.monotonic()
        await client.get("/sim/stats")
        inspection = time.monotonic() - started
    assert min(elapsed) >= 0.1
    assert max(elapsed) < 1.0  # loose: a shared CI core may be slow, but not this slow
    assert len({round(e, 3) for e in elapsed}) > 1  # jitter varies
    assert inspection < 0.1  # /sim paths are not delayed


async def test_faults_change_at_run_time(sim_now_ms: int) -> None:
    async with client_for(SimConfig(rate_limit=0), sim_now_ms) as client:
        assert (await client.get(TICKER)).status_code == 200
        changed = await client.post("/sim/faults", json={"error_rate": 1.0, "latency_ms": 5})
        assert changed.status_code == 200
        settings = changed.json()
        assert settings["error_rate"] == 1.0 and settings["latency_ms"] == 5.0
        assert settings == (await client.get("/sim/faults")).json()
        assert (await client.get(TICKER)).status_code >= 500
        await client.post("/sim/faults", json={"error_rate": 0})
        assert (await client.get(TICKER)).status_code == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error_rat": 0.5}', "accepted are latency_ms, jitter_ms, error_rate"),
        (b'{"error_rate": 2}', "between 0 and 1"),
        (b'{"latency_ms": -1}', ">= 0"),
        (b'{"latency_ms": "slow"}', "must be a number"),
        (b"[1, 2]", "accepted are latency_ms"),
        (b"not json", "accepted are latency_ms"),
    ],
)
async def test_bad_fault_settings_are_400_and_change_nothing(
    sim_now_ms: int, body: bytes, expected: str
) -> None:
    async with client_for(SimConfig(rate_limit=0), sim_now_ms) as client:
        before = (await client.get("/sim/faults")).json()
        response = await client.post("/sim/faults", content=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["name"] == 400 and expected in error["message"]
        assert (await client.get("/sim/faults")).json() == before


async def test_stats_count_requests_by_group_and_path_and_reset_zeroes_them(
    sim_now_ms: int,
) -> None:
    async with client_for(SimConfig(rate_limit=0), sim_now_ms) as client:
        await client.get(TICKER)
        await client.get("/v1/ticker/all?quote_currencies=KRW")
        await client.get("/v1/candles/minutes/1?market=KRW-BTC")
        await client.get("/v1/candles/minutes/1?market=KRW-NOPE")
        await client.get("/v1/nope")
        stats = (await client.get("/sim/stats")).json()
        assert stats["requests"]["total"] == 5
        assert stats["requests"]["by_group"] == {"ticker": 2, "candles": 2}
        assert stats["requests"]["by_path"] == {
            "/v1/ticker": 1,
            "/v1/ticker/all": 1,
            "/v1/candles/minutes/1": 2,
            "/v1/nope": 1,
        }
        assert stats["status"] == {"200": 3, "404": 2}
        assert set(stats["websocket"]) >= {"connections", "messages_sent"}
        reset = await client.post("/sim/reset")
        assert reset.status_code == 200
        assert reset.json()["requests"]["total"] == 0
        assert (await client.get("/sim/stats")).json()["status"] == {}


async def test_a_new_connection_pays_connect_ms_before_its_first_requests_only(
    sim_now_ms: int,
) -> None:
    # A client at a distance pays its TCP and TLS handshakes once per connection; the
    # simulator tells connections apart by the client's address and port.
    time_ = FakeTime()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        await time_.sleep(seconds)

    app = create_app(
        SimConfig(rate_limit=0, latency_ms=100, connect_ms=200), clock=lambda: sim_now_ms,
        limit_clock=time_.clock, sleep=sleep,
    )  # fmt: skip

    async def get(port: int) -> int:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", port))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            return (await client.get(TICKER)).status_code

    for port in (5000, 5000, 5001, 5000):
        assert await time_.run(get(port)) == 200
    assert slept == [0.3, 0.1, 0.3, 0.1]
    # Requests sent together on one new connection (HTTP/2) all wait for its handshakes.
    slept.clear()
    assert list(await time_.run(asyncio.gather(get(5002), get(5002), get(5002)))) == [200] * 3
    assert slept == [0.3, 0.3, 0.3]
    async with client_for(SimConfig(rate_limit=0), sim_now_ms) as client:
        assert (await client.get(TICKER)).status_code == 200
        stats = (await client.get("/sim/stats")).json()
        assert (await client.get("/sim/faults")).json()["connect_ms"] == 0.0
    assert stats["connections"] == 1
    assert app.state.sim.stats.snapshot()["connections"] == 3
