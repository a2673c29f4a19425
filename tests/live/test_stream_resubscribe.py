"""A subscription change on a live connection loses no trade of the markets already streaming.

Adding a market re-sends the whole request; upstream (and the simulator) replaces the
subscription and answers afresh: each code's latest trade as a SNAPSHOT, then realtime
trades. Trades made between the old answer's last frame and the new answer's start are not
sent. The simulator's clock is moved by hand, and moved *while* the simulator takes the new
request, so whether trades fall in that switch window is decided by the test, not by timing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import ManualClock, run_sim, wait_until
from services import RedisSpace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketspine._client.client import Client
from marketspine._live.listener import Event, Gap, Listener
from marketspine._live.shared_stream import SharedStream
from marketspine._live.stream import Stream
from marketspine.records import Trade

STREAMING = "KRW-BTC"  # ~1 trade/s of simulated time
ADDED = "KRW-ETH"
TICKS = "/v1/trades/ticks"


class AdvanceOnRequest:
    """ASGI middleware: when a WebSocket connection's ``nth`` request message reaches the
    simulator, move ``clock`` on by ``ms`` first. The simulator builds the new answer in the
    same step (no await in between), so the old subscription never streams that span: its
    trades fall in the switch window, as when upstream trades while a request is in flight."""

    def __init__(self, app: ASGIApp, *, clock: ManualClock, ms: int, nth: int) -> None:
        self.app = app
        self.clock = clock
        self.ms = ms
        self.nth = nth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        requests = 0

        async def advancing() -> Message:
            nonlocal requests
            message = await receive()
            data = message.get("text") or message.get("bytes") or ""
            text = data if isinstance(data, str) else data.decode(errors="replace")
            requests += '"ticket"' in text
            if '"ticket"' in text and requests == self.nth:
                self.clock.advance(self.ms)
            return message

        await self.app(scope, advancing, send)


@contextlib.contextmanager
def switching_sim(window_ms: int) -> Iterator[tuple[str, ManualClock, Any]]:
    """A loopback simulator on a hand-moved clock that moves ``window_ms`` on as it takes
    a connection's second request (the first change); yields its URL, the clock and its
    state (history, stats)."""
    from marketspine.sim import SimConfig, create_app

    clock = ManualClock()
    app = create_app(SimConfig(rate_limit=0), clock=clock)
    app.add_middleware(AdvanceOnRequest, clock=clock, ms=window_ms, nth=2)
    with run_sim(app=app) as base:
        yield base, clock, app.state.sim


def assert_as_in_history(sim: Any, delivered: list[Trade]) -> None:
    """``delivered`` is the simulator's history from its first trade on: none missing,
    none twice, in order."""
    market = delivered[0].market
    history = sim.history.trades_between(market, delivered[0].ms, delivered[-1].ms + 1)
    expected = [t.seq for t in history]
    expected = expected[expected.index(delivered[0].seq) :]
    assert [t.seq for t in delivered] == expected


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/websocket/v1"


class Collected:
    """What a listener delivered so far (drained on every check)."""

    def __init__(self, events: Listener) -> None:
        self.events = events
        self.got: list[Event] = []

    def trades(self, market: str) -> list[Trade]:
        self.got.extend(iter(self.events.get_nowait, None))
        return [e for e in self.got if isinstance(e, Trade) and e.market == market]

    def reached(self, market: str, last: Any) -> bool:
        trades = self.trades(market)
        return bool(trades) and trades[-1].seq == last.seq


def all_reached(seen: list[Collected], last: Any) -> bool:
    return all(got.reached(STREAMING, last) for got in seen)


@pytest.mark.parametrize("window_ms", [0, 8_000], ids=["nothing-in-the-switch", "trades-in-it"])
@pytest.mark.parametrize("change", ["add", "remove"])
async def test_a_subscription_change_loses_no_trade_of_a_market_streaming_across_it(
    change: str, window_ms: int
) -> None:
    with switching_sim(window_ms) as (base, clock, sim):
        async with Client(base) as client:
            stream = Stream(ws_url(base), client=client)
            async with stream, stream.listen({"trade"}, maxsize=100_000) as events:
                seen = Collected(events)
                first = [STREAMING] if change == "add" else [STREAMING, ADDED]
                await stream.subscribe("trade", first)
                clock.advance(20_000)  # trades flowing on the first answer
                before_switch = sim.history.last_trade(STREAMING, clock.ms)
                await wait_until(lambda: seen.reached(STREAMING, before_switch), 20, "trades")
                switch_at = clock.ms
                if change == "add":  # the whole request is re-sent
                    await stream.subscribe("trade", [ADDED])
                else:
                    await stream.unsubscribe("trade", [ADDED])
                await wait_until(lambda: sim.stats.ws_messages_received >= 2, 20, "the change")
                clock.advance(20_000)  # trades flowing on the new answer
                last = sim.history.last_trade(STREAMING, clock.ms)
                await wait_until(lambda: seen.reached(STREAMING, last), 20, "the later trades")
                stats = stream.statistics()
                rest_fills = sim.stats.by_path[TICKS]
    assert_as_in_history(sim, seen.trades(STREAMING))
    gaps = [e for e in seen.got if isinstance(e, Gap)]
    in_window = sim.history.trades_between(STREAMING, switch_at + 1, switch_at + window_ms + 1)
    assert stats.messages_sent == 2 and stats.connections == 1
    if not window_ms:
        # The new answer's SNAPSHOT trade was delivered already: no REST call at all.
        assert (stats.gaps, rest_fills, gaps) == (0, 0, [])
        assert stats.duplicate_trades >= 1
    else:
        assert len(in_window) >= 2  # the snapshot shows the newest; the others need REST
        assert stats.gaps == len(gaps) >= 1
        assert rest_fills >= 1
        assert sum(g.filled for g in gaps) == len(in_window) - 1 == stats.gap_trades_filled
        assert all(g.complete for g in gaps)


async def test_the_shared_feed_loses_no_trade_when_a_follower_adds_a_market(
    redis_space: RedisSpace,
) -> None:
    """The holder's own Stream does the re-sending, so its sequencer fills the switch
    window; the fill is published, and a follower sees the market complete too."""
    with switching_sim(8_000) as (base, clock, sim):
        async with Client(base) as client, contextlib.AsyncExitStack() as stack:
            feeds = [
                SharedStream(
                    ws_url(base),
                    client=client,
                    redis_url=redis_space.url,
                    prefix=redis_space.prefix,
                    poll_s=0.05,
                )
                for _ in range(2)
            ]
            holder, follower = feeds
            seen: list[Collected] = []
            for feed in feeds:  # the first to come holds the lease
                await stack.enter_async_context(feed)
                events = await stack.enter_async_context(feed.listen({"trade"}, maxsize=100_000))
                seen.append(Collected(events))
                await feed.subscribe("trade", [STREAMING])
                await wait_until(lambda: holder.role == "holder", 20, "a holder")
            await wait_until(lambda: follower.role == "follower", 20, "a follower")
            await wait_until(lambda: follower.role == "follower", 20, "a follower")
            clock.advance(20_000)
            before_switch = sim.history.last_trade(STREAMING, clock.ms)
            switch_at = clock.ms
            await wait_until(lambda: all_reached(seen, before_switch), 20, "trades")
            await follower.subscribe("trade", [ADDED])  # the holder re-sends its request
            await wait_until(lambda: bool(seen[1].trades(ADDED)), 20, "the added market")
            clock.advance(20_000)
            last = sim.history.last_trade(STREAMING, clock.ms)
            await wait_until(lambda: all_reached(seen, last), 20, "the later trades")
    in_window = sim.history.trades_between(STREAMING, switch_at + 1, switch_at + 8_001)
    assert len(in_window) >= 2
    for got in seen:
        assert_as_in_history(sim, got.trades(STREAMING))
        # The fill reaches trade listeners as on a Stream: the Gap, then the missing trades.
        assert [g.filled for g in got.got if isinstance(g, Gap)] == [len(in_window) - 1]
    assert sim.stats.by_path[TICKS] >= 1
