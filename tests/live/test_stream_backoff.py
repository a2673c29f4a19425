"""The reconnect loop for real (real sockets, fake sleep): failures are never swallowed into
an instant success, the backoff grows to its cap, and resets only after a connection that
delivered data."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from marketspine._live.listener import Health
from marketspine._live.stream import Backoff, Stream

BACKOFF = Backoff(initial=0.1, factor=2.0, cap=0.8, jitter=0.5)
ATTEMPTS = 7
PING_INTERVAL = 600.0


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/websocket/v1"


class FakeSleep:
    """Records each requested delay and returns at once, until ``limit`` delays were asked
    for; then parks until the stream is closed."""

    def __init__(self, limit: int) -> None:
        self.delays: list[float] = []
        self.limit = limit
        self.enough = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        if seconds == PING_INTERVAL:
            await asyncio.Future()  # the ping loop: connections here end before it matters
        self.delays.append(seconds)
        if len(self.delays) >= self.limit:
            self.enough.set()
            await asyncio.Future()
        await asyncio.sleep(0)


async def run_until_attempts(url: str, sleep: FakeSleep) -> tuple[Stream, list[Health]]:
    stream = Stream(
        url, backoff=BACKOFF, sleep=sleep, rand=lambda: 0.0, ping_interval=PING_INTERVAL
    )
    async with stream, stream.listen() as events:
        await stream.subscribe("trade", ["KRW-BTC"])
        await asyncio.wait_for(sleep.enough.wait(), 10)
        health = [e for e in iter(events.get_nowait, None) if isinstance(e, Health)]
    return stream, health


def assert_grows_to_cap(delays: list[float]) -> None:
    assert delays[0] == BACKOFF.initial
    assert all(b == min(BACKOFF.cap, a * BACKOFF.factor) for a, b in itertools.pairwise(delays))
    assert delays[-1] == BACKOFF.cap


async def test_refused_connections_back_off_growing_to_the_cap() -> None:
    sleep = FakeSleep(ATTEMPTS)
    stream, health = await run_until_attempts(refused_url(), sleep)
    assert_grows_to_cap(sleep.delays)
    stats = stream.statistics()
    assert stats.connect_failures == ATTEMPTS
    assert stats.connections == 0
    assert not stats.connected
    assert [h.state for h in health] == ["reconnecting"] * ATTEMPTS
    assert all("cannot connect" in h.reason for h in health)


ServerHandler = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: ServerHandler) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/websocket/v1"


async def close_at_once(ws: ServerConnection) -> None:
    await ws.close()


async def say_up_then_close(ws: ServerConnection) -> None:
    await ws.recv()  # the subscription request
    await ws.send(b'{"status":"UP"}')
    await ws.close()


async def test_connections_that_close_at_once_still_back_off() -> None:
    """A handshake that succeeds is not yet a success: a server closing every connection
    at once is not hammered without delay."""
    sleep = FakeSleep(ATTEMPTS)
    async with serving(close_at_once) as url:
        stream, health = await run_until_attempts(url, sleep)
    assert_grows_to_cap(sleep.delays)
    assert stream.statistics().connections == ATTEMPTS
    assert all(h.state == "reconnecting" for h in health)
    assert all("closed by upstream" in h.reason for h in health)


async def test_backoff_resets_after_a_connection_that_delivered_data() -> None:
    sleep = FakeSleep(4)
    async with serving(say_up_then_close) as url:
        stream, _ = await run_until_attempts(url, sleep)
    assert sleep.delays == [BACKOFF.initial] * 4
    assert stream.statistics().frames == 4


async def test_the_stream_does_not_connect_while_nothing_is_subscribed() -> None:
    connected = asyncio.Event()

    async def note(ws: ServerConnection) -> None:
        connected.set()
        await ws.wait_closed()

    async with serving(note) as url:
        stream = Stream(url)
        async with stream:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(connected.wait(), 0.3)
            await stream.subscribe("ticker", "KRW-BTC")
            await asyncio.wait_for(connected.wait(), 5)
