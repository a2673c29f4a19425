"""``Spine.stream(since=...)``: trades read with ``trades()`` join the live stream without a
hole or a repeat, against a loopback simulator on a hand-driven clock.

The simulator's WebSocket traffic passes a ``SimGate`` that holds the Spine's subscription
request (the market trades before upstream's stream goes live) or the frames it sends (the
live stream lags the REST read), so each race is played out the same way every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ManualClock, SimGate, aclose, run_sim, wait_until

from marketspine import (
    Gap,
    Health,
    InvalidRequestError,
    Overflow,
    RetryPolicy,
    Spine,
    Ticker,
    Trade,
)
from marketspine._live.stream import Stream
from marketspine.sim import SimConfig, create_app

pytestmark = pytest.mark.timeout(60)

BTC = "KRW-BTC"
ETH = "KRW-ETH"
WAIT_S = 15.0


@pytest.fixture
def gate() -> SimGate:
    return SimGate()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def upstream(gate: SimGate, clock: ManualClock) -> Iterator[str]:
    with run_sim(app=gate.wrap(create_app(SimConfig(rate_limit=0), clock=clock))) as url:
        yield url


@pytest.fixture
async def spine(upstream: str, tmp_path: Path) -> AsyncIterator[Spine]:
    # One try per request: a REST failure the test injects is final at once.
    async with Spine(upstream, db=tmp_path / "since.db", retry=RetryPolicy(attempts=1)) as s:
        yield s


async def history(spine: Spine, after: int, last: int) -> list[Trade]:
    """The simulator's trades listed after ``after`` up to ``last`` (sequential ids),
    oldest first, paged back from ``last`` by cursor."""
    (newest,) = await spine.client.trades(BTC, count=1)
    assert newest.seq == last, "the simulator traded after the last trade"
    newest_first = [newest]
    while True:
        page = await spine.client.trades(BTC, count=500, cursor=newest_first[-1].seq)
        assert page, "the history ended before the trade asked for"
        for trade in page:
            if trade.seq == after:
                return newest_first[::-1]
            newest_first.append(trade)


async def newest_seq(spine: Spine) -> int:
    (newest,) = await spine.client.trades(BTC, count=1)
    return newest.seq


async def events_until(
    events: AsyncIterator[Any], first: asyncio.Task[Any], last: int
) -> list[Any]:
    """``first`` (the pending first event) and the events after it, up to the trade ``last``."""
    got = [await first]
    async with asyncio.timeout(WAIT_S):
        while not (isinstance(got[-1], Trade) and got[-1].seq == last):
            got.append(await anext(events))
    return got


def rows(trades: list[Any]) -> list[tuple[int, int, float, float, str]]:
    return [(t.seq, t.ms, t.price, t.volume, t.side) for t in trades if isinstance(t, Trade)]


async def stream_while_held(
    spine: Spine, gate: SimGate, clock: ManualClock, since: dict[str, Any] | None
) -> tuple[list[Any], int]:
    """Stream BTC's trades while the subscription request waits and the market trades for
    a minute, then let it through and, once upstream streams, trade 30 s more. The events
    up to the newest trade, and that trade's sequential_id."""
    gate.requests.clear()
    events = spine.stream(["trade"], [BTC], since=since)
    first = asyncio.ensure_future(anext(events))
    try:
        await wait_until(lambda: gate.held_requests >= 1, WAIT_S, "the held subscription")
        clock.advance(60_000)  # these trades happen before upstream's stream goes live
        gate.requests.set()
        stream = spine._feed._stream
        assert isinstance(stream, Stream), stream  # its own socket: no Redis here
        await wait_until(lambda: stream.statistics().frames >= 1, WAIT_S, "the live stream")
        clock.advance(30_000)  # and these after it
        newest = await newest_seq(spine)
        return await events_until(events, first, newest), newest
    finally:
        first.cancel()
        await aclose(events)


async def test_without_since_the_trades_before_the_subscription_are_missing(
    spine: Spine, gate: SimGate, clock: ManualClock
) -> None:
    (last,) = await spine.trades(BTC, 1)
    got, newest = await stream_while_held(spine, gate, clock, None)
    trades = [e for e in got if isinstance(e, Trade)]
    # The hole ``since`` closes: REST lists trades between ``last`` and the first streamed.
    missing = await history(spine, last.seq, newest)
    streamed = {t.seq for t in trades}
    assert sum(1 for t in missing if t.seq not in streamed) > 0


@pytest.mark.parametrize("given", ["trade", "sequential_id"])
async def test_since_delivers_every_trade_after_it_once_in_order(
    spine: Spine, gate: SimGate, clock: ManualClock, given: str
) -> None:
    (last,) = await spine.trades(BTC, 1)
    since = {BTC: last if given == "trade" else last.seq}
    got, newest = await stream_while_held(spine, gate, clock, since)
    assert not [e for e in got if isinstance(e, Gap)]
    want = await history(spine, last.seq, newest)
    assert len(want) > 3
    assert rows(got) == rows(want)


async def test_live_trades_older_than_since_are_dropped(
    spine: Spine, gate: SimGate, clock: ManualClock
) -> None:
    """The market is streamed already but the stream lags: ``since`` (read from REST) is
    newer than the first trades it delivers."""
    gate.frames.clear()
    plain = spine.stream(["trade"], [BTC])  # shows what the live stream delivers
    plain_first = asyncio.ensure_future(anext(plain))
    await wait_until(lambda: gate.held >= 1, WAIT_S, "the upstream trade snapshot")
    clock.advance(60_000)  # trades streamed later than REST lists them
    (last,) = await spine.trades(BTC, 1)  # not watched with a trade yet: REST
    assert last.seq == await newest_seq(spine)
    events = spine.stream(["trade"], [BTC], since={BTC: last})
    first = asyncio.ensure_future(anext(events))
    try:
        stream = spine._feed._stream  # the pump's, the plain stream's and this listener
        assert isinstance(stream, Stream), stream  # its own socket: no Redis here
        await wait_until(
            lambda: len(stream.statistics().dropped_per_listener) >= 3, WAIT_S, "the listener"
        )
        gate.frames.set()
        clock.advance(30_000)
        newest = await newest_seq(spine)
        lagging = await events_until(plain, plain_first, newest)
        got = await events_until(events, first, newest)
    finally:
        first.cancel()
        plain_first.cancel()
        await aclose(events)
        await aclose(plain)
    older = [t for t in lagging if isinstance(t, Trade) and t.ms < last.ms]
    assert older, "the live stream did not lag: nothing to drop"
    assert rows(got) == rows(await history(spine, last.seq, newest))


async def test_a_walk_that_fails_is_announced_by_a_gap(
    spine: Spine, upstream: str, gate: SimGate, clock: ManualClock
) -> None:
    (last,) = await spine.trades(BTC, 1)
    gate.requests.clear()
    events = spine.stream(["trade"], [BTC], since={BTC: last})
    first = asyncio.ensure_future(anext(events))
    try:
        await wait_until(lambda: gate.held_requests >= 1, WAIT_S, "the held subscription")
        clock.advance(60_000)
        async with httpx.AsyncClient(base_url=upstream) as http:
            (await http.post("/sim/faults", json={"error_rate": 1.0})).raise_for_status()
            gate.requests.set()
            got = [await asyncio.wait_for(first, WAIT_S)]
            async with asyncio.timeout(WAIT_S):
                while not isinstance(got[-1], Trade):
                    got.append(await anext(events))
            (await http.post("/sim/faults", json={"error_rate": 0.0})).raise_for_status()
    finally:
        first.cancel()
        await aclose(events)
    *_, gap, live = [e for e in got if not isinstance(e, Health)]
    assert isinstance(gap, Gap) and isinstance(live, Trade)
    assert (gap.market, gap.since_ms, gap.until_ms) == (BTC, last.ms, live.ms)
    assert (gap.filled, gap.complete) == (0, False)
    assert "REST trades failed" in gap.reason
    missing = await history(spine, last.seq, await newest_seq(spine))
    assert missing[0].seq != live.seq, "nothing was missing: the walk was not needed"


async def test_bad_since_values_are_refused_naming_the_argument(spine: Spine) -> None:
    eth_trade = (await spine.trades(ETH, 1))[0]
    cases: list[tuple[Any, str]] = [
        ([BTC], "invalid since ['KRW-BTC'] (list): expected a mapping {market:"),
        ({"BTC": 1}, "invalid market in since 'BTC' (str): expected a market code"),
        ({ETH: 1}, "KRW-ETH is not one of the markets streamed (KRW-BTC)"),
        ({BTC: 1, "krw-btc": 2}, "KRW-BTC is given twice"),
        ({BTC: "17853972606600000"}, "invalid since['KRW-BTC'] '17853972606600000' (str)"),
        ({BTC: 0}, "expected a Trade of KRW-BTC or its sequential_id (an int > 0)"),
        ({BTC: True}, "invalid since['KRW-BTC'] True (bool)"),
        ({BTC: 1.5}, "invalid since['KRW-BTC'] 1.5 (float)"),
        ({BTC: eth_trade}, "invalid since['KRW-BTC']: a Trade of KRW-ETH; expected a Trade"),
    ]
    for since, message in cases:
        events = spine.stream(["trade"], [BTC], since=since)
        with pytest.raises(InvalidRequestError) as caught:
            await anext(events)
        assert message in str(caught.value), since
        await aclose(events)
    # Kinds other than trade are allowed: ``since`` only changes trade events.
    events = spine.stream(["ticker"], [BTC], since={BTC: eth_trade.seq + 1})
    async with asyncio.timeout(WAIT_S):
        while not isinstance(event := await anext(events), Ticker):
            assert isinstance(event, Health)
    assert event.market == BTC
    await aclose(events)


async def test_live_trades_queued_during_a_walk_are_bounded_and_drops_announced(
    spine: Spine, gate: SimGate, clock: ManualClock
) -> None:
    """The walk runs while the stream is read no further: live trades wait in the stream's
    own queue (``maxsize``), and those it cannot hold are announced by an ``Overflow``."""
    (last,) = await spine.trades(BTC, 1)
    gate.requests.clear()
    got: list[Any] = []

    async def read() -> None:
        async for event in spine.stream(["trade"], [BTC], maxsize=3, since={BTC: last}):
            got.append(event)
            if isinstance(event, Overflow):
                return

    reader = asyncio.create_task(read())
    try:
        await wait_until(lambda: gate.held_requests >= 1, WAIT_S, "the held subscription")
        clock.advance(60_000)  # a hole to walk
        gate.rest.clear()  # the walk's REST call hangs
        gate.requests.set()
        await wait_until(lambda: gate.held_rest >= 1, WAIT_S, "the walk's REST call")
        stream = spine._feed._stream
        assert isinstance(stream, Stream), stream  # its own socket: no Redis here
        clock.advance(120_000)
        await wait_until(
            lambda: sum(stream.statistics().dropped_per_listener) >= 1, WAIT_S, "a full queue"
        )
        gate.rest.set()
        await asyncio.wait_for(reader, WAIT_S)
    finally:
        reader.cancel()
    overflow = got[-1]
    assert (overflow.kind, overflow.market) == ("trade", BTC) and overflow.dropped >= 1
    assert not any(isinstance(e, Gap) for e in got)  # the walk itself completed
