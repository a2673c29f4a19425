"""The simulator's ``/websocket/v1``: Upbit's public quotation WebSocket (API.md §5, §3.4).

Streams follow simulated time (``SimState.now_ms``): every ~100 ms of real time each
connection's streamer sends what happened since its previous tick — every trade, a ticker
per trade batch, the orderbook when it changed, candles at most once per second while they
form plus each window's final state once it closes. Quiet markets send nothing.

Limits (Upbit documents them, not what happens when they are exceeded):
- connections: 5 per second per client IP; beyond that the upgrade is refused with HTTP 429
  and the text body ``Too many API requests.``
- request messages: 5 per second and 100 per minute per connection (sliding windows);
  beyond that the server sends ``{"error":{"name":"TOO_MANY_REQUESTS",...}}`` and closes
  with 1000, the way every other request error is answered.

Faults (read live from ``SimState.faults``): ``ws_drop_every_s`` cuts a connection that old
without a close frame (the client sees 1006); ``ws_stall_every_s`` makes a connection that
old go silent — nothing is sent and the socket is no longer read, so pings get no pong —
until the idle timeout cuts it; ``ws_idle_timeout_s`` cuts (without close frame, as
measured on Upbit) a socket that neither received nor sent anything for that long.
Inbound protocol pings count as activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._ticks import tick_size
from .._timeframes import Timeframe
from ._state import SimState
from ._ws_format import (
    STATUS_UP,
    STREAM_TYPES,
    ListRequest,
    SubscribeRequest,
    WsRequestError,
    aggregate_levels,
    candle_message,
    encode,
    error_message,
    is_simple,
    is_supported_level,
    list_message,
    orderbook_message,
    parse_request,
    split_code,
    supported_levels,
    ticker_message,
    trade_message,
)

__all__ = [
    "CONNECTS_PER_S",
    "TICK_S",
    "ConnectLimiter",
    "Feed",
    "MessageLimiter",
    "websocket_endpoint",
]

TICK_S = 0.1  # real seconds between stream ticks
STATUS_EVERY_S = 10.0  # {"status":"UP"} period after a text PING (real seconds)
CANDLE_EVERY_S = 1.0  # a forming candle is re-sent at most this often (real seconds)
BOOK_BUDGET_S = 0.03  # orderbook building per tick and connection (see Feed._book_step)
CONNECTS_PER_S = 5
MESSAGES_PER_S = 5
MESSAGES_PER_MIN = 100
_BOOK_DEPTH = 30


class ConnectLimiter:
    """Connection attempts per client IP in a sliding one-second window."""

    def __init__(
        self, per_second: int = CONNECTS_PER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_second = per_second
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def admit(self, client: str) -> int | None:
        """Record an attempt from ``client``: returns how many more it may make this second,
        or None (not recorded) when it is over the limit."""
        now = self._clock()
        seen = self._seen.setdefault(client, deque())
        while seen and seen[0] <= now - 1.0:
            seen.popleft()
        if len(seen) >= self._per_second:
            return None
        seen.append(now)
        if len(self._seen) > 10_000:  # forget idle clients so the table stays bounded
            self._seen = {ip: q for ip, q in self._seen.items() if q and q[-1] > now - 1.0}
        return self._per_second - len(seen)


class MessageLimiter:
    """Request messages on one connection: MESSAGES_PER_S per second and MESSAGES_PER_MIN
    per minute, both sliding windows."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a message at ``now`` (real seconds); returns False when it is over a limit
        (refused messages are not counted)."""
        times = self._times
        while times and times[0] <= now - 60.0:
            times.popleft()
        last_second = 0
        for t in reversed(times):
            if t <= now - 1.0:
                break
            last_second += 1
        if len(times) >= MESSAGES_PER_MIN or last_second >= MESSAGES_PER_S:
            return False
        times.append(now)
        return True


@dataclass
class _Stream:
    """One subscribed type: its codes (market -> depth) and what to send."""

    kind: str
    codes: dict[str, int]
    listed: tuple[str, ...]  # codes as the client wrote them, for LIST_SUBSCRIPTIONS
    snapshot: bool
    realtime: bool
    level: float | None
    timeframe: Timeframe | None


@dataclass
class _CandleState:
    """Per (type, code): what was last sent and what changed since."""

    sent: Any = None  # the Bar last sent
    dirty: int | None = None  # start of a window with unsent changes
    emitted_at: float = -1e9  # real time of the last frame


@dataclass
class Feed:
    """One connection's subscription: turns simulated time into messages (no I/O).

    The first ``tick(now_ms, real_s)`` returns the SNAPSHOT messages; every later one the
    REALTIME messages for everything that happened in (previous now, now_ms].
    """

    history: Any
    streams: list[_Stream]
    format: str
    ticket: str
    started_ms: int  # simulated time of the subscription: snapshots show this moment
    _last_ms: dict[str, int] = field(default_factory=dict)
    _book_ms: dict[tuple[str, int, float], int] = field(default_factory=dict)
    _candles: dict[tuple[str, str], _CandleState] = field(default_factory=dict)
    _best: dict[tuple[str, int], Any] = field(default_factory=dict)
    _book_cursor: int = 0  # where the next tick's orderbook round starts
    _snapshot_done: bool = False

    @classmethod
    def from_request(
        cls, history: Any, request: SubscribeRequest, fmt: str, now_ms: int, region: str = "kr"
    ) -> Feed:
        """The feed of ``request`` made at simulated time ``now_ms``: unknown or lower-case
        codes are dropped silently, as are orderbook codes whose ``level`` the market does
        not support (``region`` decides which levels exist)."""
        merged: dict[str, _Stream] = {}
        for item in request.streams:
            codes: dict[str, int] = {}
            listed: list[str] = []
            for raw in item.codes:
                market, depth = split_code(raw) if item.type == "orderbook" else (raw, 0)
                found = history.market(market)
                if found is None:
                    continue
                if item.type == "orderbook" and not _level_supported(
                    history, found, item.level, now_ms, region
                ):
                    continue
                codes[market] = depth
                listed.append(raw)
            merged[item.type] = _Stream(  # a type named twice: the later object wins
                item.type,
                codes,
                tuple(listed),
                snapshot=not item.only_realtime,
                realtime=not item.only_snapshot,
                level=item.level,
                timeframe=STREAM_TYPES[item.type],
            )
        return cls(history, list(merged.values()), fmt, request.ticket, now_ms)

    def tick(self, now_ms: int, real_s: float) -> list[dict[str, Any]]:
        """Messages due at simulated time ``now_ms`` (``real_s``: a monotonic real clock).
        The first call starts with the SNAPSHOT messages as of the subscription."""
        self._best.clear()
        out: list[dict[str, Any]] = []
        if not self._snapshot_done:
            self._snapshot_done = True
            for stream in self.streams:
                for code in stream.codes:
                    self._last_ms[code] = self.started_ms
            out = self.snapshot(self.started_ms, real_s)
        if now_ms > self.started_ms:
            out += self.step(now_ms, real_s)
        return out

    def listing(self) -> list[tuple[str, list[str], float | None]]:
        """(type, codes, level) rows for LIST_SUBSCRIPTIONS; level only on orderbook."""
        return [
            (s.kind, list(s.listed), (s.level or 0) if s.kind == "orderbook" else None)
            for s in self.streams
            if s.listed
        ]

    def snapshot(self, now_ms: int, real_s: float) -> list[dict[str, Any]]:
        """SNAPSHOT messages: the latest state of every code whose stream wants one."""
        out: list[dict[str, Any]] = []
        simple = is_simple(self.format)
        history = self.history
        for stream in self.streams:
            if not stream.snapshot:
                continue
            for code, depth in stream.codes.items():
                if stream.kind == "ticker":
                    ticker = history.ticker(code, now_ms)
                    if ticker is not None:
                        out.append(self._ticker(simple, code, ticker, "SNAPSHOT"))
                elif stream.kind == "trade":
                    last = history.last_trade(code, now_ms)
                    if last is not None:
                        out.append(self._trade(simple, code, last, now_ms, "SNAPSHOT"))
                elif stream.kind == "orderbook":
                    book = history.orderbook(code, now_ms, _book_depth(stream.level))
                    out.append(self._book(simple, code, depth, stream.level, book, "SNAPSHOT"))
                else:
                    assert stream.timeframe is not None
                    bars = history.candles(
                        code, stream.timeframe, before_ms=now_ms + 1, now_ms=now_ms, count=1
                    )
                    if bars:
                        state = self._candles.setdefault((stream.kind, code), _CandleState())
                        state.sent = bars[0]
                        state.emitted_at = real_s
                        out.append(
                            candle_message(
                                simple, stream.kind, code, bars[0], stream_type="SNAPSHOT"
                            )
                        )
        return out

    def step(self, now_ms: int, real_s: float) -> list[dict[str, Any]]:
        """REALTIME messages for what happened since the previous step (or the snapshot)."""
        simple = is_simple(self.format)
        history = self.history
        batches: dict[str, list[Any]] = {}
        for stream in self.streams:
            if not stream.realtime or stream.kind == "orderbook":
                continue
            for code in stream.codes:
                if code in batches:
                    continue
                last = self._last_ms.get(code, now_ms)
                if now_ms > last:
                    batches[code] = history.trades_between(code, last + 1, now_ms + 1)
                    self._last_ms[code] = now_ms
                else:
                    batches[code] = []
        out: list[dict[str, Any]] = []
        for stream in self.streams:
            if not stream.realtime:
                continue
            if stream.kind == "orderbook":
                out.extend(self._book_step(simple, stream, now_ms))
            elif stream.kind == "ticker":
                for code in stream.codes:
                    if batches.get(code):
                        ticker = history.ticker(code, now_ms)
                        if ticker is not None:
                            out.append(self._ticker(simple, code, ticker, "REALTIME"))
            elif stream.kind == "trade":
                for code in stream.codes:
                    for trade in batches.get(code, ()):
                        out.append(self._trade(simple, code, trade, now_ms, "REALTIME"))
            else:
                for code in stream.codes:
                    out.extend(
                        self._candle_step(
                            simple, stream, code, batches.get(code, []), now_ms, real_s
                        )
                    )
        return out

    def _book_step(self, simple: bool, stream: _Stream, now_ms: int) -> list[dict[str, Any]]:
        """Books that changed since they were last sent. Building books costs the most, so
        one tick spends at most BOOK_BUDGET_S on them and the next tick goes on where this
        one stopped: with hundreds of codes each book is then sent less often than every
        100 ms, but the event loop stays responsive and trades are never held back."""
        codes = list(stream.codes.items())
        deadline = time.perf_counter() + BOOK_BUDGET_S
        out: list[dict[str, Any]] = []
        for i in range(len(codes)):
            if i and time.perf_counter() > deadline:
                self._book_cursor += i
                return out
            code, depth = codes[(self._book_cursor + i) % len(codes)]
            book = self.history.orderbook(code, now_ms, _book_depth(stream.level))
            if self._book_ms.get((code, depth, stream.level or 0)) != book.ms:
                out.append(self._book(simple, code, depth, stream.level, book, "REALTIME"))
        self._book_cursor = 0
        return out

    # -- message builders with the lookups they need ------------------------------------

    def _ticker(self, simple: bool, code: str, ticker: Any, stream_type: str) -> dict[str, Any]:
        market = self.history.market(code)
        warning = bool(getattr(market, "warning", False))
        return ticker_message(simple, code, ticker, warning=warning, stream_type=stream_type)

    def _trade(
        self, simple: bool, code: str, trade: Any, now_ms: int, stream_type: str
    ) -> dict[str, Any]:
        bucket = (code, trade.ms // 100)  # books change on a 100 ms grid
        book = self._best.get(bucket)
        if book is None:
            book = self._best[bucket] = self.history.orderbook(code, trade.ms, 1)
        prev_close = self.history.prev_close(code, trade.ms)
        return trade_message(
            simple,
            code,
            trade,
            prev_close=trade.price if prev_close is None else prev_close,
            best_ask=book.asks[0] if book.asks else (0, 0),
            best_bid=book.bids[0] if book.bids else (0, 0),
            # Upbit stamps a trade frame a few tens of ms after the trade; never after now.
            sent_ms=min(trade.ms + 40, max(now_ms, trade.ms)),
            stream_type=stream_type,
        )

    def _book(
        self, simple: bool, code: str, depth: int, level: float | None, book: Any, stream_type: str
    ) -> dict[str, Any]:
        self._book_ms[(code, depth, level or 0)] = book.ms
        asks, bids = book.asks, book.bids
        if level:
            asks, bids = aggregate_levels(asks, bids, level)
        return orderbook_message(
            simple,
            code,
            ms=book.ms,
            asks=asks,
            bids=bids,
            depth=depth,
            level=level or 0,
            stream_type=stream_type,
        )

    def _candle_step(
        self,
        simple: bool,
        stream: _Stream,
        code: str,
        trades: list[Any],
        now_ms: int,
        real_s: float,
    ) -> list[dict[str, Any]]:
        """Candle messages of one code: each window that closed with unsent changes gets its
        final state; the forming window at most every CANDLE_EVERY_S (real time)."""
        tf = stream.timeframe
        assert tf is not None
        state = self._candles.setdefault((stream.kind, code), _CandleState())
        windows = sorted({tf.floor(t.ms) for t in trades})
        if state.dirty is not None and (not windows or windows[0] != state.dirty):
            windows.insert(0, state.dirty)
        out: list[dict[str, Any]] = []
        for start in windows:
            closed = tf.next_start(start) <= now_ms + 1
            if not closed and real_s - state.emitted_at < CANDLE_EVERY_S:
                state.dirty = start
                continue
            bars = self.history.candles(code, tf, before_ms=start + 1, now_ms=now_ms, count=1)
            state.dirty = None
            if not bars or bars[0].start_ms != start or bars[0] == state.sent:
                continue
            state.sent = bars[0]
            state.emitted_at = real_s
            out.append(candle_message(simple, stream.kind, code, bars[0], stream_type="REALTIME"))
        return out


def _book_depth(level: float | None) -> int:
    # Aggregated levels each swallow several native ones: ask the history for a deeper book.
    return _BOOK_DEPTH * 10 if level else _BOOK_DEPTH


def _level_supported(
    history: Any, market: Any, level: float | None, now_ms: int, region: str
) -> bool:
    """Level 0 (the native tick) everywhere; other levels as ``supported_levels`` allows for
    the tick at the market's last price (its best ask before any trade)."""
    if not level:
        return True
    last = history.last_trade(market.code, now_ms)
    if last is not None:
        price = float(last.price)
    else:
        asks = history.orderbook(market.code, now_ms, 1).asks
        price = float(asks[0][0]) if asks else 1.0
    levels = supported_levels(market.quote, tick_size(market.quote, price), region)
    return is_supported_level(level, levels)


# -- I/O: one connection -----------------------------------------------------------------


class _Link:
    """The connection's asyncio transport, reached under the ASGI interface (uvicorn passes
    its protocol's bound ``receive``). Faults need it: cutting a socket without a close
    frame, and no longer reading it so pings go unanswered. Without a transport (another
    server, a test client) a cut becomes close 1011 and a stall only stops sending."""

    def __init__(self, websocket: WebSocket) -> None:
        protocol = getattr(getattr(websocket, "_receive", None), "__self__", None)
        transport = getattr(protocol, "transport", None)
        usable = all(hasattr(transport, n) for n in ("abort", "pause_reading", "is_closing"))
        self._protocol = protocol if usable else None
        self._transport: Any = transport if usable else None

    def on_bytes(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` whenever bytes arrive (protocol pings included); returns False
        when the transport is out of reach."""
        protocol = self._protocol
        if protocol is None:
            return False
        # uvicorn's sans-I/O protocols feed every received chunk to ``conn.receive_data``,
        # looked up per call, so wrapping it works under uvloop too (uvloop caches the
        # protocol's own ``data_received``).
        conn = getattr(protocol, "conn", None)
        owner, name = (
            (conn, "receive_data") if hasattr(conn, "receive_data") else (protocol, "data_received")
        )
        original = getattr(owner, name)

        def receive_data(data: bytes) -> Any:
            callback()
            return original(data)

        setattr(owner, name, receive_data)
        return True

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def is_closing(self) -> bool:
        return self._transport is not None and bool(self._transport.is_closing())

    async def cut(self, websocket: WebSocket) -> None:
        """End the connection abruptly: no close frame, the client sees 1006."""
        if self._transport is not None:
            self._transport.abort()
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.close(1011)


class _Connection:
    """One client socket: a reader task (requests, PING) and a streamer task (ticks, faults,
    keep-alive) in one task group; whichever ends first ends the other."""

    def __init__(self, websocket: WebSocket, state: SimState) -> None:
        self.ws = websocket
        self.state = state
        self.link = _Link(websocket)
        self.opened = time.monotonic()
        self.last_activity = self.opened
        self.feed: Feed | None = None
        self.wake = asyncio.Event()
        self.status_next: float | None = None
        self.limiter = MessageLimiter()
        self.reader: asyncio.Task[None] | None = None
        self.streamer: asyncio.Task[None] | None = None
        self.bytes_seen = self.link.on_bytes(self.touch)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self.reader = group.create_task(self._read())
            self.streamer = group.create_task(self._stream())

    async def send(self, frame: bytes) -> None:
        await self.ws.send_bytes(frame)
        self.state.stats.ws_messages_sent += 1
        self.touch()

    async def _read(self) -> None:
        # Ending on its own (not cancelled) ends the streamer too.
        with contextlib.suppress(WebSocketDisconnect):
            await self._read_requests()
        if self.streamer is not None:
            self.streamer.cancel()

    async def _read_requests(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.state.stats.ws_messages_received += 1
            if not self.bytes_seen:
                self.touch()
            text = message.get("text")
            data: str | bytes | None = text if text is not None else message.get("bytes")
            if data is None:
                continue
            if data.strip() in ("PING", b"PING"):
                await self.send(STATUS_UP)
                self.status_next = time.monotonic() + STATUS_EVERY_S
                continue
            if not await self._handle(data):
                return

    async def _handle(self, data: str | bytes) -> bool:
        """Apply one request; returns False once the connection was closed over it."""
        try:
            if not self.limiter.allow(time.monotonic()):
                raise WsRequestError(
                    "TOO_MANY_REQUESTS",
                    f"요청 수 제한을 초과했습니다. Too many request messages: at most "
                    f"{MESSAGES_PER_S} per second and {MESSAGES_PER_MIN} per minute "
                    "per connection.",
                )
            request = parse_request(data)
        except WsRequestError as error:
            await self.send(error_message(error))
            await self.ws.close(1000)
            return False
        if isinstance(request, ListRequest):
            fmt = request.format or (self.feed.format if self.feed else "DEFAULT")
            if self.feed is not None:
                self.feed.format = fmt
            rows = self.feed.listing() if self.feed is not None else []
            for frame in encode([list_message(is_simple(fmt), request.ticket, rows)], fmt):
                await self.send(frame)
            return True
        self.feed = Feed.from_request(
            self.state.history,
            request,
            request.format or "DEFAULT",
            self.state.now_ms(),
            self.state.config.region,
        )
        self.wake.set()  # snapshots go out at once, not at the next tick
        return True

    async def _stream(self) -> None:
        # Ending on its own (not cancelled) ends the reader too.
        with contextlib.suppress(WebSocketDisconnect):
            while await self._tick():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        await self.wake.wait()
                self.wake.clear()
        if self.reader is not None:
            self.reader.cancel()

    async def _tick(self) -> bool:
        """One streamer tick; returns False once the connection is over."""
        real = time.monotonic()
        faults = self.state.faults
        age = real - self.opened
        if 0 < faults.ws_drop_every_s <= age:
            await self.link.cut(self.ws)
            return False
        if 0 < faults.ws_stall_every_s <= age:
            await self._stall()
            return False
        if real - self.last_activity >= faults.ws_idle_timeout_s:
            await self.link.cut(self.ws)
            return False
        if self.status_next is not None and real >= self.status_next:
            self.status_next = real + STATUS_EVERY_S
            await self.send(STATUS_UP)
        feed = self.feed
        if feed is not None:
            for frame in encode(feed.tick(self.state.now_ms(), real), feed.format):
                await self.send(frame)
        return True

    async def _stall(self) -> None:
        """Go silent: stop reading (so pings get no pong) and sending, until the socket is
        closed by someone else or the idle timeout cuts it."""
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.wait([self.reader])
        self.link.pause_reading()
        while not self.link.is_closing():
            if time.monotonic() - self.last_activity >= self.state.faults.ws_idle_timeout_s:
                break
            await asyncio.sleep(TICK_S)  # polling a deadline, not waiting for an event
        await self.link.cut(self.ws)


def _connect_limiter(app_state: Any) -> ConnectLimiter:
    limiter = getattr(app_state, "ws_connect_limiter", None)
    if limiter is None:
        limiter = ConnectLimiter()
        app_state.ws_connect_limiter = limiter
    return limiter


async def websocket_endpoint(websocket: WebSocket) -> None:
    """Serve one client of ``/websocket/v1`` until it leaves, errs, or a fault cuts it.

    Over CONNECTS_PER_S connections per second from one client IP, the upgrade is refused
    with HTTP 429 ``Too many API requests.``. Returns normally in every case; client
    disconnects are not errors.
    """
    state: SimState = websocket.app.state.sim
    client = websocket.client.host if websocket.client else "unknown"
    remaining = _connect_limiter(websocket.app.state).admit(client)
    if remaining is None:
        state.stats.by_status[429] += 1
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(
                PlainTextResponse("Too many API requests.", status_code=429)
            )
        else:
            await websocket.close(1008)
        return
    # As measured on Upbit's upgrade reply (API.md §3.2); min is a fixed value there too.
    await websocket.accept(
        headers=[
            (b"remaining-req", f"group=websocket; min=300; sec={remaining}".encode()),
            (b"limit-by-ip", b"Yes"),
        ]
    )
    state.stats.ws_connections += 1
    state.stats.ws_open += 1
    try:
        await _Connection(websocket, state).run()
    finally:
        state.stats.ws_open -= 1
