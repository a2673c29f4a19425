"""The simulator's ``/websocket/v1`` against a real loopback server and a real ``websockets``
client. Simulated time is a ManualClock the test moves, so every answer is comparable with
the simulator's own REST answers for the same moment."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from marketspine._base.time import format_utc
from marketspine.sim import SimConfig, create_app
from marketspine.sim import _ws as ws_module

pytestmark = pytest.mark.timeout(30)

BTC = "KRW-BTC"
ETH = "KRW-ETH"
# Deadline for anything that should arrive within a few 100 ms ticks: generous, because a
# loaded 2-core CI machine can starve the server thread for seconds (it only bounds failures).
WAIT_S = 20.0


@dataclass
class Sim:
    url: str
    app: Any
    clock: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/websocket/v1"

    @property
    def state(self) -> Any:
        return self.app.state.sim

    async def get(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        return json.loads(response.content)  # Python's json keeps big ints exact


@pytest.fixture
def sim(sim_clock: Any, running_sim: Callable[..., AbstractContextManager[str]]) -> Iterator[Sim]:
    app = create_app(SimConfig(), clock=sim_clock)
    with running_sim(app=app) as url:
        yield Sim(url, app, sim_clock)


@asynccontextmanager
async def connect(sim: Sim, **options: Any) -> AsyncIterator[ClientConnection]:
    options.setdefault("ping_interval", None)
    # Leaving with unread frames: the client stops reading once its queue is full and would
    # wait its whole close_timeout for the server's close reply.
    options.setdefault("close_timeout", 0.5)
    async with websockets.connect(sim.ws_url, **options) as ws:
        yield ws


async def subscribe(ws: ClientConnection, *items: dict[str, Any], fmt: str | None = None) -> None:
    request: list[dict[str, Any]] = [{"ticket": "test"}, *items]
    if fmt is not None:
        request.append({"format": fmt})
    await ws.send(json.dumps(request))


async def frames_until(
    ws: ClientConnection, done: Callable[[list[Any]], bool], within: float = WAIT_S
) -> list[Any]:
    """Receive binary frames (decoded JSON) until ``done(frames)``; fails at the deadline."""
    frames: list[Any] = []
    async with asyncio.timeout(within):
        while not done(frames):
            raw = await ws.recv()
            assert isinstance(raw, bytes), f"server sent a text frame: {raw!r}"
            frames.append(json.loads(raw))
    return frames


async def quiet(ws: ClientConnection, seconds: float) -> list[Any]:
    """Frames that arrive within ``seconds`` (used only to show that nothing more comes)."""
    frames: list[Any] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                frames.append(json.loads(await ws.recv()))
    except TimeoutError:
        return frames


def of(frames: list[Any], kind: str, code: str | None = None) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("type") == kind and (code is None or f["code"] == code)]


async def test_frames_are_binary_and_snapshot_comes_before_realtime(sim: Sim) -> None:
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "ticker", "codes": [BTC]}, {"type": "trade", "codes": [BTC]})
        first = await frames_until(ws, lambda f: len(f) >= 2)
        assert {(f["type"], f["stream_type"]) for f in first} == {
            ("ticker", "SNAPSHOT"),
            ("trade", "SNAPSHOT"),
        }
        sim.clock.advance(30_000)
        later = await frames_until(ws, lambda f: bool(of(f, "ticker")))
        assert later and {f["stream_type"] for f in later} == {"REALTIME"}


async def test_only_snapshot_and_only_realtime(sim: Sim) -> None:
    async with connect(sim) as ws:
        await subscribe(
            ws,
            {"type": "ticker", "codes": [BTC], "is_only_snapshot": True},
            {"type": "trade", "codes": [BTC], "isOnlyRealtime": True},
        )
        (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
        assert (snapshot["type"], snapshot["stream_type"]) == ("ticker", "SNAPSHOT")
        for _ in range(2):
            sim.clock.advance(20_000)
            frames = await frames_until(ws, lambda f: bool(of(f, "trade")))
            assert of(frames, "ticker") == []
            assert {f["stream_type"] for f in frames} == {"REALTIME"}


async def fence(ws: ClientConnection) -> list[Any]:
    """Send LIST_SUBSCRIPTIONS and return the frames up to its answer: once it is back, the
    server has applied every request sent before it."""
    await ws.send('[{"ticket":"fence"},{"method":"LIST_SUBSCRIPTIONS"}]')
    frames = await frames_until(ws, lambda f: bool(f) and f[-1].get("method") is not None)
    return frames[:-1]


def _at_least(count: int) -> Callable[[list[Any]], bool]:
    return lambda frames: len(frames) >= count


async def test_trades_match_rest_ticks_exactly_without_gaps_or_duplicates(sim: Sim) -> None:
    start_ms = sim.clock()
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "trade", "codes": [BTC], "is_only_realtime": True})
        got = await fence(ws)
        for _ in range(6):  # several batches, one per clock step
            sim.clock.advance(10_000)
            rest = await sim.get("/v1/trades/ticks", market=BTC, count=500)
            expected = [t for t in reversed(rest) if start_ms < t["timestamp"] <= sim.clock()]
            got += await frames_until(ws, _at_least(len(expected) - len(got)))
        got += await quiet(ws, 0.3)  # nothing beyond: no duplicates
    assert len(expected) > 20, "KRW-BTC should trade every few seconds"
    assert [f["sequential_id"] for f in got] == [t["sequential_id"] for t in expected]
    assert all(isinstance(f["sequential_id"], int) and f["sequential_id"] > 2**53 for f in got)
    for frame, tick in zip(got, expected, strict=True):
        assert frame["trade_timestamp"] == tick["timestamp"]
        assert (frame["trade_price"], frame["trade_volume"]) == (
            tick["trade_price"],
            tick["trade_volume"],
        )
        assert frame["ask_bid"] == tick["ask_bid"]
        assert frame["change_price"] == abs(tick["change_price"])  # unsigned on WS
        assert frame["trade_date"] == tick["trade_date_utc"]
        assert frame["trade_time"] == tick["trade_time_utc"]


CANDLE_FIELDS = (
    "candle_date_time_kst",
    "opening_price",
    "high_price",
    "low_price",
    "trade_price",
    "candle_acc_trade_volume",
    "candle_acc_trade_price",
    "timestamp",
)


async def test_candle_frames_equal_rest_candles_once_closed(sim: Sim) -> None:
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "candle.1m", "codes": [BTC]})
        frames = await frames_until(ws, lambda f: len(f) >= 1)
        assert frames[0]["stream_type"] == "SNAPSHOT"
        for _ in range(4):  # each step closes one window, whose final state must follow
            sim.clock.advance(60_000)
            frames += await frames_until(ws, lambda f: len(f) >= 1)
        now = sim.clock()
        closed = await sim.get(
            "/v1/candles/minutes/1", market=BTC, count=4, to=format_utc(now - now % 60_000)
        )
        windows = {c["candle_date_time_utc"] for c in closed}
        frames += await frames_until(
            ws, lambda f: windows <= {x["candle_date_time_utc"] for x in frames + f}
        )
    assert len(closed) == 4
    last_by_window = {f["candle_date_time_utc"]: f for f in frames}
    for candle in closed:
        frame = last_by_window[candle["candle_date_time_utc"]]
        assert frame["type"] == "candle.1m" and frame["code"] == BTC
        for key in CANDLE_FIELDS:
            assert frame[key] == candle[key], (candle["candle_date_time_utc"], key)


async def test_ticker_matches_rest_ticker_at_the_same_moment(sim: Sim) -> None:
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "ticker", "codes": [BTC]})
        (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
        (rest,) = await sim.get("/v1/ticker", markets=BTC)
    for key in (
        "trade_price",
        "opening_price",
        "high_price",
        "low_price",
        "prev_closing_price",
        "change",
        "change_price",
        "signed_change_price",
        "change_rate",
        "acc_trade_volume",
        "acc_trade_price_24h",
        "trade_timestamp",
        "highest_52_week_price",
        "lowest_52_week_date",
    ):
        assert snapshot[key] == rest[key], key
    assert snapshot["market_state"] == "ACTIVE" and snapshot["market_warning"] in (
        "NONE",
        "CAUTION",
    )
    assert snapshot["is_trading_suspended"] is False and snapshot["delisting_date"] is None


async def test_a_new_request_replaces_the_subscription(sim: Sim) -> None:
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "ticker", "codes": [BTC]})
        await frames_until(ws, lambda f: len(f) >= 1)
        await subscribe(ws, {"type": "trade", "codes": [ETH]}, fmt="SIMPLE")
        frames = await frames_until(ws, lambda f: any(x.get("ty") == "trade" for x in f))
        sim.clock.advance(60_000)
        frames += await frames_until(ws, lambda f: any(x.get("st") == "REALTIME" for x in f))
    new_from = next(i for i, f in enumerate(frames) if f.get("ty") == "trade")
    assert all(f.get("ty") == "trade" and f["cd"] == ETH for f in frames[new_from:])


async def test_a_new_request_starts_a_code_already_streaming_with_its_latest_trade(
    sim: Sim,
) -> None:
    """As on Upbit, a request answers afresh: a code streaming before gets a SNAPSHOT of its
    latest trade again (what a client checks to know whether the switch lost trades)."""
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "trade", "codes": [BTC]})
        await frames_until(ws, lambda f: len(f) >= 1)
        sim.clock.advance(30_000)
        latest = sim.state.history.last_trade(BTC, sim.clock.ms).seq
        await frames_until(ws, lambda f: any(x["sequential_id"] == latest for x in f))
        await subscribe(ws, {"type": "trade", "codes": [BTC, ETH]})
        after = await frames_until(ws, lambda f: len(of(f, "trade", ETH)) >= 1)
    [again] = [f for f in of(after, "trade", BTC) if f["stream_type"] == "SNAPSHOT"]
    assert again["sequential_id"] == latest


async def test_list_subscriptions_in_default_and_simple(sim: Sim) -> None:
    async with connect(sim) as ws:
        await ws.send('[{"ticket":"q"},{"method":"LIST_SUBSCRIPTIONS"}]')
        (empty,) = await frames_until(ws, lambda f: len(f) >= 1)
        assert empty == {"method": "LIST_SUBSCRIPTIONS", "result": [], "ticket": "q"}
        await subscribe(
            ws,
            {"type": "ticker", "codes": [BTC, ETH]},
            {"type": "orderbook", "codes": [BTC, "KRW-NOPE"], "is_only_snapshot": True},
        )
        await ws.send('[{"ticket":"q2"},{"method":"LIST_SUBSCRIPTIONS"},{"format":"SIMPLE"}]')
        frames = await frames_until(ws, lambda f: any("mthd" in x for x in f))
    answer = next(f for f in frames if "mthd" in f)
    assert answer == {
        "mthd": "LIST_SUBSCRIPTIONS",
        "rslt": [{"ty": "ticker", "cds": [BTC, ETH]}, {"ty": "orderbook", "cds": [BTC], "lv": 0}],
        "tckt": "q2",
    }


DEFAULT_KEYS = {
    "ticker": "type code opening_price high_price low_price trade_price prev_closing_price "
    "acc_trade_price change change_price signed_change_price change_rate signed_change_rate "
    "ask_bid trade_volume acc_trade_volume trade_date trade_time trade_timestamp acc_ask_volume "
    "acc_bid_volume highest_52_week_price highest_52_week_date lowest_52_week_price "
    "lowest_52_week_date market_state is_trading_suspended delisting_date market_warning "
    "timestamp acc_trade_price_24h acc_trade_volume_24h stream_type",
    "trade": "type code timestamp trade_date trade_time trade_timestamp trade_price trade_volume "
    "ask_bid prev_closing_price change change_price sequential_id best_ask_price best_ask_size "
    "best_bid_price best_bid_size stream_type",
    "orderbook": "type code timestamp total_ask_size total_bid_size orderbook_units "
    "stream_type level",
    "candle.1m": "type code candle_date_time_utc candle_date_time_kst opening_price high_price "
    "low_price trade_price candle_acc_trade_volume candle_acc_trade_price timestamp stream_type",
}
SIMPLE_KEYS = {
    "ticker": "ty cd op hp lp tp pcp atp c cp scp cr scr ab tv atv tdt ttm ttms aav abv h52wp "
    "h52wdt l52wp l52wdt ms its dd mw tms atp24h atv24h st",
    "trade": "ty cd tms td ttm ttms tp tv ab pcp c cp sid bap bas bbp bbs st",
    "orderbook": "ty cd tms tas tbs obu st lv",
    "candle.1m": "ty cd cdttmu cdttmk op hp lp tp catv catp tms st",
}


@pytest.mark.parametrize("fmt", ["DEFAULT", "SIMPLE", "JSON_LIST", "SIMPLE_LIST"])
async def test_each_format_has_upbits_key_set(sim: Sim, fmt: str) -> None:
    simple = fmt.startswith("SIMPLE")
    listed = fmt.endswith("_LIST")
    kinds = list(DEFAULT_KEYS)
    async with connect(sim) as ws:
        await subscribe(ws, *({"type": k, "codes": [BTC]} for k in kinds), fmt=fmt)
        raw = await frames_until(ws, lambda f: len(f) >= (1 if listed else len(kinds)))
    messages = [m for frame in raw for m in frame] if listed else raw
    assert all(isinstance(frame, list) for frame in raw) == listed
    tables = SIMPLE_KEYS if simple else DEFAULT_KEYS
    type_key = "ty" if simple else "type"
    by_kind = {m[type_key]: m for m in messages}
    assert set(by_kind) == set(kinds)
    for kind, keys in tables.items():
        assert list(by_kind[kind]) == keys.split(), kind
    units = by_kind["orderbook"]["obu" if simple else "orderbook_units"]
    unit_keys = (
        ["ap", "bp", "as", "bs"] if simple else ["ask_price", "bid_price", "ask_size", "bid_size"]
    )
    assert all(list(unit) == unit_keys for unit in units)


async def test_orderbook_depth_suffix_matches_rest(sim: Sim) -> None:
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "orderbook", "codes": [f"{BTC}.5", f"{ETH}.20"]})
        frames = await frames_until(ws, lambda f: len(f) >= 2)
        (rest_btc,) = await sim.get("/v1/orderbook", markets=BTC, count=5)
    by_code = {f["code"]: f for f in frames}
    assert len(by_code[BTC]["orderbook_units"]) == 5
    assert len(by_code[ETH]["orderbook_units"]) == 30
    assert by_code[BTC]["timestamp"] == rest_btc["timestamp"]
    assert by_code[BTC]["orderbook_units"] == rest_btc["orderbook_units"]
    assert by_code[BTC]["total_ask_size"] == rest_btc["total_ask_size"]


async def test_orderbook_level_supported_and_unsupported(sim: Sim) -> None:
    (instrument,) = await sim.get("/v1/orderbook/instruments", markets=BTC)
    level = float(instrument["supported_levels"][1])
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "orderbook", "codes": [BTC], "level": level})
        (book,) = await frames_until(ws, lambda f: len(f) >= 1)
        (rest,) = await sim.get(
            "/v1/orderbook", markets=BTC, level=instrument["supported_levels"][1]
        )
    assert book["level"] == level
    assert book["orderbook_units"] == rest["orderbook_units"]
    prices = [u["ask_price"] for u in book["orderbook_units"] if u["ask_price"]]
    assert prices and all(p % level == 0 for p in prices)
    async with connect(sim) as ws:
        await subscribe(
            ws,
            {"type": "orderbook", "codes": [BTC], "level": level + 1},
            {"type": "ticker", "codes": [BTC]},
        )
        frames = await fence(ws)
        sim.clock.advance(20_000)
        frames += await frames_until(ws, lambda f: any(x["stream_type"] == "REALTIME" for x in f))
    assert of(frames, "orderbook") == []


async def test_unknown_and_lower_case_codes_are_ignored(sim: Sim) -> None:
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "ticker", "codes": ["KRW-NOPE", "krw-eth", BTC]})
        frames = await fence(ws)
        sim.clock.advance(30_000)
        frames += await frames_until(ws, lambda f: any(x["stream_type"] == "REALTIME" for x in f))
        frames += await quiet(ws, 0.3)
    assert {f["code"] for f in frames} == {BTC}


@pytest.mark.parametrize(
    ("request_text", "name", "message"),
    [
        ("hello", "WRONG_FORMAT", "Format 이 맞지 않습니다."),
        ('{"ticket":"x","type":"ticker"}', "WRONG_FORMAT", "Format 이 맞지 않습니다."),
        (
            '[{"type":"ticker","codes":["KRW-BTC"]}]',
            "NO_TICKET",
            "티켓이 존재하지 않거나, 유효하지 않습니다.",
        ),
        ('[{"ticket":"x"},{"codes":["KRW-BTC"]}]', "NO_TYPE", "type 필드가 존재하지 않습니다."),
        ('[{"ticket":"x"},{"type":"ticker"}]', "NO_CODES", "codes 필드가 존재하지 않습니다."),
        (
            '[{"ticket":"x"},{"type":"ticker","codes":[]}]',
            "INVALID_PARAM",
            "codes 필드가 비어 있습니다.",
        ),
        (
            '[{"ticket":"x"},{"type":"nope","codes":["KRW-BTC"]}]',
            "INVALID_PARAM",
            "nope 은 지원하지 않는 타입입니다.",
        ),
    ],
)
async def test_errors_are_a_binary_frame_then_close_1000(
    sim: Sim, request_text: str, name: str, message: str
) -> None:
    async with connect(sim) as ws:
        await ws.send(request_text)
        (error,) = await frames_until(ws, lambda f: len(f) >= 1)
        with pytest.raises(websockets.ConnectionClosedOK):
            async with asyncio.timeout(WAIT_S):
                await ws.recv()
    assert error == {"error": {"name": name, "message": message}}
    assert ws.close_code == 1000


async def test_requests_as_binary_frames_work_too(sim: Sim) -> None:
    async with connect(sim) as ws:
        await ws.send(json.dumps([{"ticket": "b"}, {"type": "ticker", "codes": [BTC]}]).encode())
        (frame,) = await frames_until(ws, lambda f: len(f) >= 1)
    assert (frame["type"], frame["code"]) == ("ticker", BTC)


async def test_text_ping_answers_status_up_then_every_period(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_module, "STATUS_EVERY_S", 0.3)
    async with connect(sim) as ws:
        await ws.send("PING")
        started = time.monotonic()
        frames = await frames_until(ws, lambda f: len(f) >= 3)
        elapsed = time.monotonic() - started
    assert frames == [{"status": "UP"}] * 3
    assert elapsed >= 0.5  # the 2nd and 3rd come one period apart, not at once


async def test_idle_socket_is_cut_but_pings_keep_it_alive(sim: Sim) -> None:
    sim.state.faults.update({"ws_idle_timeout_s": 0.5})
    async with connect(sim) as ws:
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosedError):
            async with asyncio.timeout(WAIT_S):
                await ws.recv()
        assert 0.4 < time.monotonic() - started < 3.0
        assert ws.protocol.close_rcvd is None  # cut without a close frame, as Upbit does
    async with connect(sim, ping_interval=0.1, ping_timeout=1.0) as ws:
        assert await quiet(ws, 1.0) == []  # twice the idle timeout
        await ws.send('[{"ticket":"q"},{"method":"LIST_SUBSCRIPTIONS"}]')
        (answer,) = await frames_until(ws, lambda f: len(f) >= 1)
        assert answer["method"] == "LIST_SUBSCRIPTIONS"


async def test_drop_fault_cuts_the_socket_without_close_frame(sim: Sim) -> None:
    sim.state.faults.update({"ws_drop_every_s": 0.5})
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "orderbook", "codes": [BTC]})
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosedError):
            async with asyncio.timeout(WAIT_S):
                while True:
                    await ws.recv()
        assert 0.4 < time.monotonic() - started < 3.0
        assert ws.protocol.close_rcvd is None and ws.close_code == 1006


async def test_stall_fault_keeps_socket_open_but_answers_no_ping(sim: Sim) -> None:
    sim.state.faults.update({"ws_stall_every_s": 0.3})
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "ticker", "codes": [BTC]})
        await frames_until(ws, lambda f: len(f) >= 1)
        started = time.monotonic()
        while True:  # pings are answered until the stall begins
            pong = await ws.ping()
            try:
                async with asyncio.timeout(0.3):
                    await pong
            except TimeoutError:
                break
            assert time.monotonic() - started < WAIT_S, "the connection never stalled"
        assert time.monotonic() - started >= 0.2
        sim.clock.advance(60_000)  # trades happen, yet nothing is sent
        assert await quiet(ws, 0.3) == []
        assert ws.state is websockets.State.OPEN
        assert sim.state.stats.ws_open == 1


async def test_drops_never_postpone_stalls(sim: Sim) -> None:
    """Drops cut each socket 0.3 s after it opened; stalls come every 0.5 s on their own
    schedule: with both set, reconnecting clients still meet stalls (and drops)."""
    sim.state.faults.update(
        {"ws_drop_every_s": 0.3, "ws_stall_every_s": 0.5, "ws_idle_timeout_s": 0.4}
    )
    stats = sim.state.stats
    async with asyncio.timeout(WAIT_S):
        while stats.ws_stalls < 2 or stats.ws_drops < 2:
            async with connect(sim) as ws:
                with pytest.raises(websockets.ConnectionClosedError):
                    while True:  # until the drop, or the idle cut that ends a stall
                        await ws.recv()
    assert stats.ws_idle_cuts >= stats.ws_stalls >= 2
    snapshot = (await sim.get("/sim/stats"))["websocket"]
    assert snapshot["stalls"] >= 2 and snapshot["drops"] >= 2


async def test_connect_limit_refuses_the_sixth_upgrade_within_a_second(sim: Sim) -> None:
    sockets = []
    try:
        for _ in range(5):
            sockets.append(await websockets.connect(sim.ws_url, ping_interval=None))
        headers = [ws.response.headers for ws in sockets if ws.response is not None]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(sim.ws_url, ping_interval=None)
    finally:
        for ws in sockets:
            await ws.close()
    assert [h["remaining-req"] for h in headers] == [
        f"group=websocket; min=300; sec={n}" for n in (4, 3, 2, 1, 0)
    ]
    assert all(h["limit-by-ip"] == "Yes" for h in headers)
    assert refused.value.response.status_code == 429
    assert refused.value.response.body == b"Too many API requests."


async def test_message_limit_sends_an_error_and_closes(sim: Sim) -> None:
    async with connect(sim) as ws:
        for _ in range(6):
            await ws.send('[{"ticket":"q"},{"method":"LIST_SUBSCRIPTIONS"}]')
        frames = await frames_until(ws, lambda f: any("error" in x for x in f))
        with pytest.raises(websockets.ConnectionClosedOK):
            async with asyncio.timeout(WAIT_S):
                await ws.recv()
    assert len(frames) == 6 and frames[-1]["error"]["name"] == "TOO_MANY_REQUESTS"
    assert ws.close_code == 1000


async def test_stats_count_connections_and_messages(sim: Sim) -> None:
    stats = sim.state.stats
    async with connect(sim) as ws:
        await subscribe(ws, {"type": "ticker", "codes": [BTC, ETH]})
        await ws.send("PING")
        frames = await frames_until(ws, lambda f: len(f) >= 3)
        assert (stats.ws_connections, stats.ws_open) == (1, 1)
    deadline = time.monotonic() + WAIT_S
    # Polls a counter the server thread updates: there is no event to await here.
    while stats.ws_open and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert (stats.ws_connections, stats.ws_open) == (1, 0)
    assert stats.ws_messages_received == 2
    assert stats.ws_messages_sent == len(frames)


async def test_many_markets_on_one_connection_keep_up(
    running_sim: Callable[..., AbstractContextManager[str]], sim_clock: Any
) -> None:
    app = create_app(SimConfig(markets=250), clock=sim_clock)
    history = app.state.sim.history
    # Markets not listed yet or delisted by now are dropped from a subscription, as on Upbit.
    codes = [m.code for m in history.markets if app.state.sim.is_listed(m, sim_clock())]
    assert len(codes) >= 150
    start_ms = sim_clock()
    with running_sim(app=app) as url:
        sim = Sim(url, app, sim_clock)
        async with connect(sim) as ws:
            await subscribe(
                ws,
                {"type": "trade", "codes": codes},
                {"type": "ticker", "codes": codes},
                {"type": "orderbook", "codes": codes},
                fmt="SIMPLE_LIST",
            )
            (snapshot,) = await frames_until(ws, lambda f: len(f) >= 1)
            messages: list[dict[str, Any]] = []
            for _ in range(10):  # ten ticks of 6 simulated s: --speed 60
                sim.clock.advance(6_000)
                for frame in await frames_until(ws, lambda f: len(f) >= 1):
                    messages += frame
            expected = history.trades_between(BTC, start_ms + 1, sim.clock() + 1)

            def btc_trades(extra: list[Any]) -> list[int]:
                found = messages + [m for frame in extra for m in frame]
                return [m["sid"] for m in found if m["ty"] == "trade" and m["cd"] == BTC]

            rest = await frames_until(ws, lambda f: len(btc_trades(f)) >= len(expected))
            got = btc_trades(rest)
    assert {m["cd"] for m in snapshot if m["ty"] == "orderbook"} == set(codes)
    assert got == [t.seq for t in expected]
