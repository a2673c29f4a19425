"""``WsGateway`` mounted in a tiny Starlette app on a loopback port, in front of a loopback
simulator on a hand-driven clock: Upbit's protocol as clients see it, and many clients
served from one upstream connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from marketspine import Spine
from marketspine._serve.upbit_ws import WsGateway
from marketspine._upbit.ws_format import WsRequestError, parse_request
from marketspine.sim import SimConfig

pytestmark = pytest.mark.timeout(30)

BTC, ETH, XRP = "KRW-BTC", "KRW-ETH", "KRW-XRP"
WAIT_S = 10.0


@contextlib.contextmanager
def gateway_app(
    run_sim: Callable[..., contextlib.AbstractContextManager[str]],
    sim_url: str,
    db: Path,
    **options: Any,
) -> Iterator[tuple[str, Starlette]]:
    """A Starlette app serving ``WsGateway`` over a Spine on ``sim_url``, on a loopback
    port; yields its ws:// URL and the app (``app.state.gateway`` once started)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Spine(sim_url, db=db) as spine:
            gateway = WsGateway(spine, **options)
            app.state.gateway = gateway
            try:
                yield
            finally:
                await gateway.aclose()

    async def endpoint(websocket: Any) -> None:
        await app.state.gateway.handle(websocket)

    app = Starlette(routes=[WebSocketRoute("/websocket/v1", endpoint)], lifespan=lifespan)
    with run_sim(app=app) as url:
        yield url.replace("http://", "ws://") + "/websocket/v1", app


@pytest.fixture
def clock(sim_clock: Any) -> Any:
    """The upstream simulator's clock: ``clock.advance(ms)`` makes market history happen."""
    return sim_clock


@pytest.fixture
def upstream(running_sim: Callable[..., Any], clock: Any) -> Iterator[str]:
    with running_sim(SimConfig(rate_limit=0), clock=clock) as url:
        yield url


@pytest.fixture
def gateway(
    running_sim: Callable[..., Any], upstream: str, tmp_path: Path
) -> Iterator[tuple[str, Starlette]]:
    with gateway_app(running_sim, upstream, tmp_path / "serve.db") as served:
        yield served


def connect(url: str) -> ws_connect:
    """A client that keeps reading whatever the test leaves unread, so closing is quick
    (a full receive queue would stop it reading the server's close frame)."""
    return ws_connect(url, max_queue=None)


def request(*streams: dict[str, Any], ticket: str = "t", fmt: str | None = None) -> str:
    message: list[dict[str, Any]] = [{"ticket": ticket}, *streams]
    if fmt is not None:
        message.append({"format": fmt})
    return json.dumps(message)


async def frames_until(
    ws: ClientConnection, done: Callable[[list[Any]], bool], limit_s: float = WAIT_S
) -> list[Any]:
    """Decoded frames received until ``done(frames)`` holds (a failure after ``limit_s``)."""
    got: list[Any] = []
    async with asyncio.timeout(limit_s):
        while not done(got):
            raw = await ws.recv()
            assert isinstance(raw, bytes), "Upbit sends binary frames"
            got.append(json.loads(raw))
    return got


def of(frames: list[Any], kind: str, stream_type: str | None = None) -> list[dict[str, Any]]:
    key_type, key_st = ("ty", "st") if any("ty" in f for f in frames) else ("type", "stream_type")
    return [
        f
        for f in frames
        if isinstance(f, dict)
        and f.get(key_type) == kind
        and (stream_type is None or f.get(key_st) == stream_type)
    ]


def has_trade(seq: int) -> Callable[[list[Any]], bool]:
    """A ``frames_until`` condition: the trade ``seq`` has arrived."""
    return lambda frames: seq in {t["sequential_id"] for t in of(frames, "trade")}


async def newest_trade(upstream: str, market: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=upstream) as rest:
        response = await rest.get("/v1/trades/ticks", params={"market": market, "count": 1})
    assert response.status_code == 200, response.text
    row: dict[str, Any] = json.loads(response.content)[0]
    return row


async def _get(upstream: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=upstream) as rest:
        response = await rest.get(path)
    assert response.status_code == 200, response.text
    return json.loads(response.content)


async def sim_stats(upstream: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=upstream) as rest:
        body: dict[str, Any] = (await rest.get("/sim/stats")).json()
    return body


async def test_snapshot_then_realtime_in_default_and_simple(
    gateway: tuple[str, Starlette], upstream: str, clock: Any
) -> None:
    url, _ = gateway
    stream = {"type": "ticker", "codes": [BTC]}, {"type": "trade", "codes": [BTC]}
    async with connect(url) as full, connect(url) as simple:
        await full.send(request(*stream))
        await simple.send(request(*stream, fmt="SIMPLE"))
        first = await frames_until(full, lambda f: len(f) >= 2)
        first_simple = await frames_until(simple, lambda f: len(f) >= 2)
        assert sorted((f["type"], f["stream_type"]) for f in first) == [
            ("ticker", "SNAPSHOT"),
            ("trade", "SNAPSHOT"),
        ]
        assert sorted((f["ty"], f["st"]) for f in first_simple) == [
            ("ticker", "SNAPSHOT"),
            ("trade", "SNAPSHOT"),
        ]
        clock.advance(30_000)
        newest = await newest_trade(upstream, BTC)
        later = await frames_until(
            full,
            lambda f: any(t["sequential_id"] == newest["sequential_id"] for t in of(f, "trade")),
        )
        later_simple = await frames_until(
            simple, lambda f: any(t["sid"] == newest["sequential_id"] for t in of(f, "trade"))
        )
    realtime = of(later, "trade", "REALTIME")
    assert realtime and realtime[-1]["trade_timestamp"] == newest["timestamp"]
    assert realtime[-1]["trade_price"] == newest["trade_price"]
    assert isinstance(realtime[-1]["sequential_id"], int) and realtime[-1]["sequential_id"] > 2**53
    assert of(later_simple, "trade", "REALTIME")[-1]["tp"] == newest["trade_price"]


async def test_frames_match_a_direct_connection(
    gateway: tuple[str, Starlette], upstream: str
) -> None:
    """The same snapshot straight from the simulator and through the gateway: every field
    equal but the WebSocket-only ones, which a snapshot answered from REST lacks (documented
    in _serve_ws_format; test_serve_ws_fields compares them on REALTIME frames)."""
    url, _ = gateway
    stream = (
        {"type": "ticker", "codes": [ETH]},
        {"type": "orderbook", "codes": [f"{ETH}.5"]},
        {"type": "trade", "codes": [ETH]},
    )
    direct_url = upstream.replace("http://", "ws://") + "/websocket/v1"
    async with connect(direct_url) as direct, connect(url) as served:
        await direct.send(request(*stream))
        await served.send(request(*stream))
        want = await frames_until(direct, lambda f: len(f) >= 3)
        got = await frames_until(served, lambda f: len(f) >= 3)
    unknown = {
        "ticker": {"ask_bid", "acc_ask_volume", "acc_bid_volume"},
        "trade": {"timestamp", "best_ask_price", "best_ask_size"}
        | {"best_bid_price", "best_bid_size"},
        "orderbook": set(),
    }
    for kind, skip in unknown.items():
        (expected,) = of(want, kind)
        (actual,) = of(got, kind)
        assert list(actual) == list(expected), f"{kind}: keys or their order differ"
        assert {k: v for k, v in actual.items() if k not in skip} == {
            k: v for k, v in expected.items() if k not in skip
        }
    assert len(of(got, "orderbook")[0]["orderbook_units"]) == 5


async def test_ping_list_subscriptions_and_list_format(gateway: tuple[str, Starlette]) -> None:
    url, _ = gateway
    async with connect(url) as ws:
        await ws.send("PING")
        assert json.loads(await ws.recv()) == {"status": "UP"}
        await ws.send(json.dumps([{"ticket": "a"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        assert json.loads(await ws.recv()) == {
            "method": "LIST_SUBSCRIPTIONS",
            "result": [],
            "ticket": "a",
        }
        await ws.send(
            request(
                {"type": "orderbook", "codes": [f"{BTC}.15", "krw-eth", "KRW-NOPE"]},
                {"type": "ticker", "codes": [BTC], "is_only_snapshot": True},
                fmt="JSON_LIST",
            )
        )
        frames = await frames_until(
            ws, lambda f: {x[0]["type"] for x in f} == {"orderbook", "ticker"}
        )
        assert all(isinstance(f, list) and len(f) == 1 for f in frames)
        books = [f[0] for f in frames if f[0]["type"] == "orderbook"]
        assert books[0]["stream_type"] == "SNAPSHOT" and len(books[0]["orderbook_units"]) == 15
        assert {f[0]["code"] for f in frames} == {BTC}
        await ws.send(
            json.dumps([{"ticket": "b"}, {"method": "LIST_SUBSCRIPTIONS"}, {"format": "SIMPLE"}])
        )
        answers = await frames_until(ws, lambda f: any("mthd" in x for x in f))
    listed = next(x for x in answers if "mthd" in x)
    assert listed == {
        "mthd": "LIST_SUBSCRIPTIONS",
        "rslt": [
            {"ty": "orderbook", "cds": [f"{BTC}.15"], "lv": 0},
            {"ty": "ticker", "cds": [BTC]},
        ],
        "tckt": "b",
    }


async def test_a_format_given_with_list_subscriptions_applies_to_later_frames(
    gateway: tuple[str, Starlette], upstream: str, clock: Any
) -> None:
    url, _ = gateway
    async with connect(url) as ws:
        await ws.send(request({"type": "trade", "codes": [BTC]}))
        (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
        assert snapshot["type"] == "trade" and snapshot["stream_type"] == "SNAPSHOT"
        clock.advance(30_000)
        newest = await newest_trade(upstream, BTC)
        await frames_until(ws, has_trade(newest["sequential_id"]))  # realtime, DEFAULT
        await ws.send(
            json.dumps([{"ticket": "b"}, {"method": "LIST_SUBSCRIPTIONS"}, {"format": "SIMPLE"}])
        )
        await frames_until(ws, lambda f: any("mthd" in x for x in f))
        clock.advance(30_000)
        newest = await newest_trade(upstream, BTC)
        later = await frames_until(
            ws,
            lambda f: newest["sequential_id"] in {x.get("sid", x.get("sequential_id")) for x in f},
        )
    assert later and all(x["ty"] == "trade" and x["st"] == "REALTIME" for x in later)


@pytest.mark.parametrize(
    ("message", "name"),
    [
        ('[{"type": "ticker", "codes": ["KRW-BTC"]}]', "NO_TICKET"),
        ('[{"ticket": "x"}, {"type": "tickers", "codes": ["KRW-BTC"]}]', "INVALID_PARAM"),
        ('[{"ticket": "x"}, {"type": "ticker"}]', "NO_CODES"),
        ("not json", "WRONG_FORMAT"),
    ],
)
async def test_a_bad_request_gets_upbits_error_frame_then_close(
    gateway: tuple[str, Starlette], message: str, name: str
) -> None:
    url, _ = gateway
    async with connect(url) as ws:
        await ws.send(message)
        error = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(WAIT_S):
                await ws.recv()
    assert error["error"]["name"] == name and error["error"]["message"]
    assert ws.close_code == 1000


def test_a_deeply_nested_websocket_request_is_wrong_format() -> None:
    # Parsed before it reaches any gateway: the nesting must not exhaust the parser's stack.
    with pytest.raises(WsRequestError) as caught:
        parse_request("[" * 10_000)
    assert caught.value.name == "WRONG_FORMAT"


async def test_new_request_replaces_and_only_snapshot_stops_realtime(
    gateway: tuple[str, Starlette], upstream: str, clock: Any
) -> None:
    url, _ = gateway
    async with connect(url) as moved, connect(url) as snap_only, connect(url) as witness:
        await moved.send(request({"type": "ticker", "codes": [BTC]}))
        await frames_until(moved, lambda f: len(f) >= 1)
        await moved.send(request({"type": "ticker", "codes": [ETH]}, ticket="t2"))
        await snap_only.send(
            request({"type": "ticker", "codes": [BTC, ETH], "is_only_snapshot": True})
        )
        await witness.send(request({"type": "ticker", "codes": [BTC, ETH]}))
        await frames_until(snap_only, lambda f: len(f) >= 2)
        await frames_until(witness, lambda f: len(f) >= 2)
        # Requests are handled in order: once this answer is back the replacement holds.
        await moved.send(json.dumps([{"ticket": "q"}, {"method": "LIST_SUBSCRIPTIONS"}]))
        before = await frames_until(
            moved,
            lambda f: any("method" in x for x in f) and bool(of(f, "ticker", "SNAPSHOT")),
        )
        clock.advance(30_000)
        newest = {m: (await newest_trade(upstream, m))["timestamp"] for m in (BTC, ETH)}
        # Every client of a (type, market) is served in one go: once the witness has the
        # newest ticker of both markets, the others' frames are queued too.
        await frames_until(
            witness,
            lambda f: (
                {(x["code"], x["trade_timestamp"]) for x in of(f, "ticker")} >= set(newest.items())
            ),
        )
        for ws in (moved, snap_only):
            await ws.send("PING")
        after_moved = await frames_until(moved, lambda f: {"status": "UP"} in f)
        after_snap = await frames_until(snap_only, lambda f: {"status": "UP"} in f)
    (answer,) = [f for f in before if "method" in f]
    assert answer["result"] == [{"type": "ticker", "codes": [ETH]}]
    assert [f["code"] for f in of(before, "ticker", "SNAPSHOT")] == [ETH]
    assert {f["code"] for f in of(before + after_moved, "ticker")} <= {BTC, ETH}
    assert (ETH, newest[ETH]) in {
        (f["code"], f["trade_timestamp"]) for f in of(after_moved, "ticker", "REALTIME")
    }
    assert {f["code"] for f in of(after_moved, "ticker")} == {ETH}
    assert of(after_snap, "ticker") == []


async def test_many_clients_share_one_upstream_connection(
    gateway: tuple[str, Starlette], upstream: str, clock: Any
) -> None:
    url, app = gateway
    markets = [BTC, ETH, XRP]
    streams = [{"type": kind, "codes": markets} for kind in ("ticker", "trade", "orderbook")]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(url)) for _ in range(20)]
        for ws in clients:
            await ws.send(request(*streams))
        for ws in clients:
            await frames_until(ws, lambda f: len(of(f, "orderbook")) >= 3)
        clock.advance(20_000)
        newest = await newest_trade(upstream, XRP)
        for ws in clients:
            await frames_until(
                ws,
                lambda f: newest["sequential_id"] in {t["sequential_id"] for t in of(f, "trade")},
            )
        stats = app.state.gateway.statistics()
        upstream_ws = (await sim_stats(upstream))["websocket"]
    assert (stats.clients, stats.subscriptions, stats.upstream_pairs) == (20, 20 * 9, 9)
    assert upstream_ws["connections"] == 1
    # The union of 20 identical subscriptions goes upstream in a few paced messages.
    assert 1 <= upstream_ws["messages_received"] <= 5


class FakeClient:
    """A downstream client as ASGI messages: it reads every frame at once, or (``reads``
    False) stops reading, so a send to it never completes."""

    def __init__(self, *, reads: bool = True) -> None:
        self.reads = reads
        self.incoming: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.frames: list[Any] = []
        self.closed: MutableMapping[str, Any] | None = None
        self.changed = asyncio.Event()

    def socket(self) -> Any:
        from starlette.websockets import WebSocket

        scope = {"type": "websocket", "path": "/websocket/v1", "headers": [], "query_string": b""}
        return WebSocket(scope, self.incoming.get, self.send)

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "websocket.send":
            if not self.reads:
                await asyncio.Event().wait()  # the socket's buffers are full, for ever
            self.frames.append(json.loads(message["bytes"]))
        elif message["type"] == "websocket.close":
            self.closed = message
        self.changed.set()

    async def wait_for(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not done():
                self.changed.clear()
                await self.changed.wait()


async def streaming(client: FakeClient, clock: Any, markets: list[str]) -> None:
    """Wait until upstream streams every market's trades and books (snapshots may have come
    from REST before the upstream subscription was sent): step the clock until realtime
    frames of each arrive, or fail after a bounded number of steps."""
    wanted = {(kind, m) for kind in ("trade", "orderbook") for m in markets}
    for _ in range(20):
        clock.advance(2_000)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await client.wait_for(
                    lambda: (
                        {
                            (f["type"], f["code"])
                            for f in client.frames
                            if f["stream_type"] == "REALTIME"
                        }
                        >= wanted
                    )
                )
                return
    raise AssertionError("upstream never streamed every subscribed market")


async def test_a_slow_client_is_closed_and_never_slows_the_others(
    upstream: str, clock: Any, tmp_path: Path
) -> None:
    markets = [BTC, ETH, XRP]
    subscribe = request(*({"type": k, "codes": markets} for k in ("trade", "orderbook")))
    fast, slow = FakeClient(), FakeClient(reads=False)
    async with Spine(upstream, db=tmp_path / "serve.db") as spine:
        gateway = WsGateway(spine, client_queue=50)
        async with asyncio.TaskGroup() as group:
            for client in (fast, slow):
                group.create_task(gateway.handle(client.socket()))
                client.incoming.put_nowait({"type": "websocket.receive", "text": subscribe})
            await fast.wait_for(lambda: len(of(fast.frames, "orderbook")) >= 3)
            await streaming(fast, clock, markets)
            clock.advance(120_000)
            newest = await newest_trade(upstream, BTC)
            await slow.wait_for(lambda: slow.closed is not None)
            await fast.wait_for(
                lambda: (
                    newest["sequential_id"]
                    in {t["sequential_id"] for t in of(fast.frames, "trade")}
                )
            )
            stats = gateway.statistics()
            fast.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await gateway.aclose()
    assert slow.closed is not None and slow.closed["code"] == 1008
    assert "too slow" in slow.closed["reason"]
    assert fast.closed is None
    assert len(of(fast.frames, "trade", "REALTIME")) > 50  # more than the slow one could hold
    assert (stats.clients, stats.dropped_clients) == (1, 1)


async def test_a_client_that_stops_reading_is_closed_over_a_real_socket(
    running_sim: Callable[..., Any],
    upstream: str,
    clock: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over uvicorn, a send to a client that stopped reading blocks once the socket's
    buffers are full; its queue then fills and it is closed with the reason, while a
    client that reads keeps getting every frame."""
    from marketspine._serve import server_thread as _server_thread

    def small_buffers(host: str, port: int) -> socket.socket:
        # Accepted sockets inherit the listener's send buffer: a few KB fill fast.
        sock = listen(host, port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return sock

    listen = _server_thread.listen
    monkeypatch.setattr(_server_thread, "listen", small_buffers)
    markets = [m["market"] for m in (await _get(upstream, "/v1/market/all"))][:10]
    streams = [{"type": k, "codes": markets} for k in ("trade", "orderbook")]
    with gateway_app(running_sim, upstream, tmp_path / "serve.db", client_queue=20) as (url, app):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        sock.connect((host, int(port)))
        # No compression, small receive buffer: the socket's buffers fill within KBs.
        stalled_ws = ws_connect(url, sock=sock, max_queue=1, compression=None)
        async with stalled_ws as stalled, connect(url) as reader:
            await stalled.send(request(*streams))
            await reader.send(request(*streams))
            got = await frames_until(reader, lambda f: len(of(f, "orderbook")) >= 10)
            for _ in range(30):  # more history until the stalled client's buffers fill
                clock.advance(60_000)
                newest = await newest_trade(upstream, markets[0])
                got += await frames_until(reader, has_trade(newest["sequential_id"]))
                if app.state.gateway.statistics().dropped_clients:
                    break
            stats = app.state.gateway.statistics()
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT_S):
                    while True:  # what was buffered before the close frame
                        await stalled.recv()
    assert stats.dropped_clients == 1 and stats.clients == 1
    assert stalled.close_code == 1008 and "too slow" in (stalled.close_reason or "")


async def test_candle_types_stream_snapshot_then_forming_candles(
    gateway: tuple[str, Starlette], upstream: str, clock: Any
) -> None:
    url, _ = gateway
    async with connect(url) as ws:
        await ws.send(request({"type": "candle.1m", "codes": [BTC]}, fmt="SIMPLE"))
        (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
        for _ in range(20):  # until upstream streams (the snapshot came from REST)
            clock.advance(2_000)
            with contextlib.suppress(TimeoutError):
                await frames_until(ws, lambda f: len(f) >= 1, limit_s=0.5)
                break
        clock.advance(90_000)
        newest = await newest_trade(upstream, BTC)
        later = await frames_until(
            ws, lambda f: any(c["tms"] == newest["timestamp"] for c in of(f, "candle.1m"))
        )
    async with httpx.AsyncClient(base_url=upstream) as rest:
        response = await rest.get("/v1/candles/minutes/1", params={"market": BTC, "count": 1})
    (forming,) = json.loads(response.content)
    assert (snapshot["ty"], snapshot["cd"], snapshot["st"]) == ("candle.1m", BTC, "SNAPSHOT")
    last = of(later, "candle.1m")[-1]
    assert last["st"] == "REALTIME"
    assert last["cdttmu"] == forming["candle_date_time_utc"]
    assert (last["op"], last["hp"], last["lp"], last["tp"]) == (
        forming["opening_price"],
        forming["high_price"],
        forming["low_price"],
        forming["trade_price"],
    )


async def test_orderbook_level_groups_prices(gateway: tuple[str, Starlette]) -> None:
    url, _ = gateway
    async with connect(url) as ws:
        await ws.send(request({"type": "orderbook", "codes": [BTC], "level": 10000}))
        (book,) = of(await frames_until(ws, lambda f: len(of(f, "orderbook")) >= 1), "orderbook")
    prices = [u["ask_price"] for u in book["orderbook_units"] if u["ask_price"]]
    prices += [u["bid_price"] for u in book["orderbook_units"] if u["bid_price"]]
    assert book["level"] == 10000 and prices
    assert all(price % 10000 == 0 for price in prices)
    asks = [u["ask_price"] for u in book["orderbook_units"] if u["ask_price"]]
    assert asks == sorted(set(asks))


async def test_more_than_five_requests_a_second_is_refused(
    running_sim: Callable[..., Any], upstream: str, tmp_path: Path
) -> None:
    """Upbit's limit per connection: the sixth request within a second gets
    TOO_MANY_REQUESTS and the close (the gateway's clock stands still here)."""
    with gateway_app(running_sim, upstream, tmp_path / "s.db", clock=lambda: 100.0) as (url, _):
        async with connect(url) as ws:
            for n in range(5):
                await ws.send(json.dumps([{"ticket": f"{n}"}, {"method": "LIST_SUBSCRIPTIONS"}]))
                assert json.loads(await ws.recv())["ticket"] == f"{n}"
            await ws.send(json.dumps([{"ticket": "6"}, {"method": "LIST_SUBSCRIPTIONS"}]))
            error = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT_S):
                    await ws.recv()
    assert error["error"]["name"] == "TOO_MANY_REQUESTS"
    assert ws.close_code == 1000


async def test_a_retired_candle_feed_leaves_the_trades_other_clients_want(
    running_sim: Callable[..., Any], upstream: str, clock: Any, tmp_path: Path
) -> None:
    with gateway_app(running_sim, upstream, tmp_path / "s.db", linger_s=0.0) as (url, app):
        gateway = app.state.gateway
        async with connect(url) as trades:
            await trades.send(request({"type": "trade", "codes": [BTC]}))
            await frames_until(trades, lambda f: len(f) >= 1)
            async with connect(url) as candles:
                await candles.send(request({"type": "candle.1m", "codes": [BTC]}))
                await frames_until(candles, lambda f: len(f) >= 1)
                assert gateway.wants("candle.1m", BTC) and gateway.wants("candle.5m", BTC)
            # The candle feed retires at once. The gateway runs on the server's thread, so
            # its counters can only be looked at from here, not awaited.
            async with asyncio.timeout(WAIT_S):
                while gateway.statistics().upstream_pairs != 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            for _ in range(3):  # the unwatch, had it happened, is long done by now
                clock.advance(10_000)
                newest = await newest_trade(upstream, BTC)
                await frames_until(trades, has_trade(newest["sequential_id"]))


async def answers_ping(ws: ClientConnection) -> None:
    """The connection is open and served: a ``PING`` gets ``{"status":"UP"}`` next."""
    await ws.send("PING")
    async with asyncio.timeout(WAIT_S):
        reply = await ws.recv()
    assert json.loads(reply) == {"status": "UP"}


@pytest.fixture
def gateway_with(
    running_sim: Callable[..., Any], upstream: str, tmp_path: Path
) -> Callable[..., contextlib.AbstractContextManager[tuple[str, Starlette]]]:
    """``gateway_with(**options)``: ``gateway_app`` with those ``WsGateway`` options."""
    return lambda **options: gateway_app(running_sim, upstream, tmp_path / "serve.db", **options)


async def test_connections_over_the_per_address_cap_are_refused(gateway_with: Any) -> None:
    with gateway_with(max_per_address=2) as (url, app):
        async with connect(url) as first, connect(url) as second:
            async with connect(url) as third:
                async with asyncio.timeout(WAIT_S):
                    error = json.loads(await third.recv())
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(WAIT_S):
                        await third.recv()
            for ws in (first, second):  # the two inside are served as before
                await answers_ping(ws)
        assert error["error"]["name"] == "TOO_MANY_CONNECTIONS"
        assert "at most 2" in error["error"]["message"]
        assert third.close_code == 1008 and "too many connections" in (third.close_reason or "")
        # Their places are free again once they left.
        async with connect(url) as again:
            await answers_ping(again)
        stats = app.state.gateway.statistics()
    assert stats.refused_clients == 1 and stats.connections == 3


async def test_a_connection_that_never_subscribes_is_closed_after_the_idle_timeout(
    gateway_with: Any,
) -> None:
    # Long enough that the PING below is answered before the timeout on a loaded machine.
    with gateway_with(idle_timeout_s=3.0) as (url, app):
        async with connect(url) as idle, connect(url) as subscribed:
            await answers_ping(idle)  # a PING is not a subscription
            await subscribed.send(request({"type": "ticker", "codes": [BTC]}))
            await frames_until(subscribed, lambda f: len(of(f, "ticker")) >= 1)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT_S):
                    await idle.recv()
            # Past the timeout, the subscribed one is still served.
            await subscribed.send("PING")
            await frames_until(subscribed, lambda f: {"status": "UP"} in f)
        stats = app.state.gateway.statistics()
    assert idle.close_code == 1000 and "no subscription within 3 s" in (idle.close_reason or "")
    assert stats.idle_closed == 1
