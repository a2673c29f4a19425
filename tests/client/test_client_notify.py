"""Alerts from real upstream trouble (a simulator on a loopback port, a real apprise
``json://`` URL to a loopback receiver): the circuit opening under 5xx faults and closing
again, and a 418 block with its length."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from helpers import run_sim
from receiver import Receiver, receiver

from marketspine import Client
from marketspine._client.circuit import CircuitBreaker
from marketspine._client.retry import RetryPolicy
from marketspine._spine.notify import NotifyHandler, attach_notify, detach_notify
from marketspine.errors import RetryLaterError
from marketspine.sim import SimConfig


@pytest.fixture
def got() -> Iterator[Receiver]:
    with receiver() as found:
        yield found


@pytest.fixture
def notifier(got: Receiver) -> Iterator[NotifyHandler]:
    handler = attach_notify([got.url])
    yield handler
    detach_notify(handler)


async def test_the_circuit_opening_and_closing_is_told_once_each(
    notifier: NotifyHandler, got: Receiver
) -> None:
    with run_sim(SimConfig(rate_limit=0)) as url:
        faults = httpx.AsyncClient(base_url=url)
        (await faults.post("/sim/faults", json={"error_rate": 1.0})).raise_for_status()
        breaker = CircuitBreaker(failure_threshold=2, cool_down=0, name=url)
        retry = RetryPolicy(attempts=2, base_delay=0, max_delay=0)
        async with Client(url, breaker=breaker, retry=retry) as client:
            with pytest.raises(RetryLaterError):
                await client.markets()
            with pytest.raises(RetryLaterError):  # a second request: upstream is down
                await client.markets(details=False)
            (await faults.post("/sim/faults", json={"error_rate": 0.0})).raise_for_status()
            await faults.aclose()
            assert await client.markets()  # the probe goes through and closes it
    notifier.flush()
    opened, closed = got.wait_for(2)
    assert opened["title"] == "marketspine: circuit open"
    assert f"circuit to {url} opened after 2 consecutive failures" in opened["message"]
    assert closed["title"] == "marketspine: circuit closed"
    assert f"circuit to {url} closed" in closed["message"]
    assert len(got.messages) == 2


async def test_a_418_block_is_told_with_its_length(notifier: NotifyHandler, got: Receiver) -> None:
    with run_sim(SimConfig(rate_limit=1)) as url:
        # Strikes of 429 until the simulator blocks this IP (its limits: 10 strikes).
        async with httpx.AsyncClient(base_url=url) as raw:
            for _ in range(100):
                if (await raw.get("/v1/market/all")).status_code == 418:
                    break
            else:
                raise AssertionError("the simulator never blocked")
        retry = RetryPolicy(attempts=1)
        async with Client(url, retry=retry) as client:
            with pytest.raises(RetryLaterError):
                await client.markets()
    notifier.flush()
    (ban,) = [m for m in got.wait_for(1) if m["title"] == "marketspine: ban"]
    assert "Upbit blocked this IP (418) for" in ban["message"]
    seconds = [line for line in ban["message"].splitlines() if line.startswith("seconds: ")]
    assert seconds and int(seconds[0].removeprefix("seconds: ")) >= 1
