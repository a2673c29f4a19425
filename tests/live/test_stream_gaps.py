"""Gap filling, exactly: a scripted upstream decides which trades each connection carries
and a fake REST source holds the full history, so every hole and every answer is known.
(The same promise is checked against the simulator in test_stream.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

from websockets.asyncio.server import ServerConnection, serve

from marketspine._budget.rules import Priority
from marketspine._live.listener import Event, Gap, Listener
from marketspine._live.stream import FILL_PAGE_SIZE, Backoff, Stream
from marketspine.errors import UpstreamError
from marketspine.records import Trade

MARKET = "KRW-BTC"
FAST = Backoff(initial=0.01, cap=0.01)


def make_trade(seq: int) -> Trade:
    return Trade(MARKET, 1_790_000_000_000 + seq * 10, 100.0 + seq, 0.25, "BID", seq, 100.0, 1.0)


def frame(trade: Trade, stream_type: str = "REALTIME") -> bytes:
    return json.dumps(
        {
            "type": "trade",
            "code": trade.market,
            "trade_timestamp": trade.ms,
            "timestamp": trade.ms,
            "trade_price": trade.price,
            "trade_volume": trade.volume,
            "ask_bid": trade.side,
            "sequential_id": trade.seq,
            "prev_closing_price": trade.prev_close,
            "change": "RISE",
            "change_price": trade.change_price,
            "stream_type": stream_type,
        }
    ).encode()


class FakeTrades:
    """REST trades by cursor over a known history; can fail, or wait for a gate."""

    def __init__(self, last_seq: int, *, fail: bool = False) -> None:
        self.history = [make_trade(seq) for seq in range(1, last_seq + 1)]
        self.fail = fail
        self.gate: asyncio.Event | None = None
        self.calls: list[int | None] = []

    async def trades(
        self,
        market: str,
        *,
        count: int = 200,
        cursor: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Trade]:
        self.calls.append(cursor)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise UpstreamError("simulated 503 from /v1/trades/ticks")
        before = [t for t in self.history if cursor is None or t.seq < cursor]
        return before[::-1][:count]


@contextlib.asynccontextmanager
async def scripted(connections: list[list[int]], *, snapshots: bool = False) -> AsyncIterator[str]:
    """A WebSocket server whose n-th connection sends the trades ``connections[n]`` (the
    first as a SNAPSHOT frame with ``snapshots``, as Upbit answers a request) and then
    closes abruptly — except the last one, which stays open."""
    remaining = list(connections)

    async def handler(ws: ServerConnection) -> None:
        seqs = remaining.pop(0)
        await ws.recv()
        for n, seq in enumerate(seqs):
            await ws.send(frame(make_trade(seq), "SNAPSHOT" if snapshots and not n else "REALTIME"))
        if remaining:
            ws.transport.abort()
        else:
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/websocket/v1"


async def run(
    connections: list[list[int]],
    source: FakeTrades,
    until: Callable[[list[Event]], bool],
    on_poll: Callable[[Stream], None] = lambda _: None,
    *,
    snapshots: bool = False,
) -> tuple[list[Event], Stream]:
    async with scripted(connections, snapshots=snapshots) as url:
        stream = Stream(url, client=source, backoff=FAST)
        async with stream, stream.listen({"trade"}, maxsize=10_000) as events:
            await stream.subscribe("trade", [MARKET])
            got = await receive_until(events, until, lambda: on_poll(stream))
            return got, stream


async def receive_until(
    events: Listener,
    done: Callable[[list[Event]], bool],
    on_poll: Callable[[], None] = lambda: None,
    within_s: float = 10.0,
) -> list[Event]:
    """Events as the listener delivers them, until ``done`` says enough arrived (judged on
    what consumers see, not on the stream's counters, which run ahead of delivery)."""
    got: list[Event] = []
    deadline = time.monotonic() + within_s
    while True:
        got.extend(drain(events))
        if done(got):
            return got
        assert time.monotonic() < deadline, f"condition not met within {within_s} s: {got}"
        on_poll()
        await asyncio.sleep(0.01)


def drain(events: Listener) -> list[Event]:
    return list(iter(events.get_nowait, None))


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events if isinstance(e, Trade)]


def gaps(events: list[Event]) -> list[Gap]:
    return [e for e in events if isinstance(e, Gap)]


async def test_a_hole_is_filled_in_order_and_announced() -> None:
    source = FakeTrades(10)
    events, stream = await run(
        [[1, 2, 3], [7, 8, 9]],
        source,
        lambda got: len(seqs(got)) >= 9,
    )
    assert seqs(events) == list(range(1, 10))
    assert gaps(events) == [Gap(MARKET, make_trade(3).ms, make_trade(7).ms, 3)]
    # The Gap comes right before the trades that fill it.
    stream_order = [e for e in events if isinstance(e, Trade | Gap)]
    assert stream_order[3:5] == [gaps(events)[0], make_trade(4)]
    assert source.calls == [7]
    assert stream.statistics().gap_trades_filled == 3


async def test_a_long_hole_is_walked_back_page_by_page() -> None:
    last = 2 * FILL_PAGE_SIZE + 10
    source = FakeTrades(last + 5)
    events, _ = await run(
        [[1, 2], [last, last + 1]],
        source,
        lambda got: len(seqs(got)) >= last + 1,
    )
    assert seqs(events) == list(range(1, last + 2))
    assert [g.filled for g in gaps(events)] == [last - 3]
    assert len(source.calls) == 3


async def test_a_failed_fill_is_reported_not_hidden() -> None:
    source = FakeTrades(10, fail=True)
    events, _ = await run(
        [[1, 2, 3], [7, 8]], source, lambda got: len(seqs(got)) >= 5 and bool(gaps(got))
    )
    assert seqs(events) == [1, 2, 3, 7, 8]
    [gap] = gaps(events)
    assert (gap.filled, gap.complete) == (0, False)
    assert "simulated 503" in gap.reason


async def test_a_reconnect_during_a_fill_starts_another_fill_after_it() -> None:
    source = FakeTrades(20)
    source.gate = asyncio.Event()
    gate = source.gate

    def release_when_all_frames_arrived(stream: Stream) -> None:
        if stream.statistics().frames >= 6:
            gate.set()

    events, _ = await run(
        [[1, 2, 3], [7], [12, 13]],
        source,
        lambda got: len(seqs(got)) >= 13,
        release_when_all_frames_arrived,
    )
    assert seqs(events) == list(range(1, 14))
    assert [(g.filled, g.complete) for g in gaps(events)] == [(3, True), (4, True)]


async def test_the_first_connection_needs_no_fill() -> None:
    source = FakeTrades(5)
    events, stream = await run([[4, 5]], source, lambda got: len(seqs(got)) >= 2)
    assert seqs(events) == [4, 5]
    assert gaps(events) == []
    assert source.calls == []
    assert stream.statistics().gaps == 0


async def test_without_a_rest_client_gaps_are_still_announced() -> None:
    async with scripted([[1, 2], [6, 7]]) as url:
        stream = Stream(url, backoff=FAST)
        async with stream, stream.listen({"trade"}) as events:
            await stream.subscribe("trade", [MARKET])
            got = await receive_until(events, lambda got: len(seqs(got)) >= 4 and bool(gaps(got)))
    assert seqs(got) == [1, 2, 6, 7]
    [gap] = gaps(got)
    assert (gap.filled, gap.complete) == (0, False)
    assert "no REST client" in gap.reason


async def test_a_reconnect_whose_snapshot_was_delivered_needs_no_rest_call() -> None:
    source = FakeTrades(10)
    events, stream = await run(
        [[1, 2, 3], [3, 4, 5]], source, lambda got: len(seqs(got)) >= 5, snapshots=True
    )
    assert seqs(events) == [1, 2, 3, 4, 5]
    assert (gaps(events), source.calls, stream.statistics().duplicate_trades) == ([], [], 1)


async def test_a_reconnect_whose_snapshot_is_new_fills_the_hole_before_it() -> None:
    source = FakeTrades(10)
    events, _ = await run(
        [[1, 2, 3], [6, 7]], source, lambda got: len(seqs(got)) >= 7, snapshots=True
    )
    assert seqs(events) == list(range(1, 8))
    assert [g.filled for g in gaps(events)] == [2]
    assert source.calls == [6]
