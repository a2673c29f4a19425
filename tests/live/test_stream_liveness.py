"""Stall detection on hand-driven time: with the default ping settings a
socket that stops answering is noticed within 6 s, and a socket that answers its pings is
never called stalled, however long its markets stay quiet."""

from __future__ import annotations

import asyncio

import pytest
from helpers import FakeTime

from marketspine._live.stream import DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, Stream


class FakeSocket:
    """What the ping loop needs of a WebSocket: ``ping()`` returns the pong's waiter. Until
    ``stall()`` every ping is answered at once; afterwards none is."""

    def __init__(self) -> None:
        self.pings = 0
        self.stalled = False

    def stall(self) -> None:
        self.stalled = True

    async def ping(self) -> asyncio.Future[float]:
        self.pings += 1
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if not self.stalled:
            pong.set_result(0.03)
        return pong


def test_the_default_ping_settings_notice_a_stall_within_six_seconds() -> None:
    assert DEFAULT_PING_INTERVAL + DEFAULT_PING_TIMEOUT <= 6.0
    assert DEFAULT_PING_TIMEOUT >= 1.0  # far above a pong's round trip: no false alarms


async def test_a_stall_is_noticed_within_six_seconds_and_a_quiet_socket_never() -> None:
    fake = FakeTime()
    stream = Stream("ws://sim/websocket/v1", clock=fake.clock, sleep=fake.sleep)
    socket = FakeSocket()
    async with stream:
        loop = asyncio.ensure_future(stream._ping_loop(socket))  # type: ignore[arg-type]
        # Ten quiet minutes: no market data at all, every ping answered.
        await fake.run_until(lambda: fake.now >= 1000.0 + 600, max_seconds=700)
        assert not loop.done(), "a socket that answers its pings was given up"
        assert stream.statistics().pongs == socket.pings >= 600 / DEFAULT_PING_INTERVAL - 1
        socket.stall()
        stalled_at = fake.now
        with pytest.raises(Exception, match="no pong within"):
            await fake.run(loop)
        noticed_after = fake.now - stalled_at
        assert stream.statistics().state == "stalled"
    assert noticed_after <= 6.0, noticed_after
