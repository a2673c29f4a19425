"""``serve``'s Upbit-compatible WebSocket ``/websocket/v1``: many clients, one upstream feed.

Clients speak Upbit's protocol unchanged (tickets, DEFAULT/SIMPLE/LIST formats, snapshot and
realtime flags, a new request replaces the previous subscription, ``PING``,
``LIST_SUBSCRIPTIONS``, error frames then close). Every (type, market) any client wants is
fed by ONE listener on the Spine's stream (``Spine.stream``), so upstream sees one
connection and one request message per change of the union of subscriptions, paced by the
stream within Upbit's 5/s and 100/min, however many clients come and go.

Each event is rendered once per format variant and queued to every interested client
without waiting; each client has its own bounded queue and writer. A client whose queue
fills up is closed (1008, with the reason) and never slows the others. A snapshot comes
from the last event the gateway saw for that (type, market), else from the Spine (live
state, or REST through the shared budget), one fetch per (type, market) at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._errors import MarketspineError
from ._records import Candle, MarketInfo, Orderbook, Ticker, Trade
from ._serve_ws_format import (
    ClientStream,
    Extras,
    Record,
    client_streams,
    kind_of,
    listing,
    render,
    timeframe_of,
)
from ._spine import Spine
from ._subscriptions import MessagePacer
from .sim._ws_format import (
    STATUS_UP,
    ListRequest,
    WsRequestError,
    error_message,
    list_message,
    parse_request,
)

__all__ = ["DEFAULT_CLIENT_QUEUE", "GatewayStatistics", "WsGateway"]

logger = logging.getLogger("marketspine.serve.ws")

DEFAULT_CLIENT_QUEUE = 2000  # frames waiting for one client before it counts as too slow
DEFAULT_LINGER_S = 60.0  # an unwanted (type, market) keeps its upstream listener this long
STATUS_EVERY_S = 10.0  # {"status":"UP"} period after a text PING, as on Upbit
CLOSE_TIMEOUT_S = 2.0
SLOW_CLOSE_CODE = 1008  # policy violation: the client did not read its frames
Pair = tuple[str, str]  # (type, market)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    """A snapshot of the gateway's counters (cheap; for metrics and tests)."""

    clients: int  # connections open now
    subscriptions: int  # (type, market) pairs summed over open connections
    upstream_pairs: int  # (type, market) pairs with an upstream listener
    connections: int  # connections accepted since start
    dropped_clients: int  # closed for being too slow
    frames_sent: int
    snapshot_fetches: int  # snapshots asked of the Spine (no event seen yet)


@dataclass(eq=False)
class _Client:
    """One downstream connection: its subscription, queue and tasks."""

    ws: WebSocket
    queue_limit: int
    format: str = "DEFAULT"
    ticket: str = ""
    streams: dict[str, ClientStream] = field(default_factory=dict)
    pending: set[Pair] = field(default_factory=set)  # snapshots still owed
    queue: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pacer: MessagePacer = field(default_factory=lambda: MessagePacer(margin=0.0))
    status_next: float | None = None
    close_code: int | None = None
    close_reason: str = ""
    gone: bool = False  # the client left: no close frame to send
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def simple(self) -> bool:
        return self.format.startswith("SIMPLE")

    def pairs(self) -> set[Pair]:
        return {(s.kind, code) for s in self.streams.values() for code in s.codes}

    def push(self, frame: bytes) -> bool:
        """Queue one frame without waiting; False once the client is being closed."""
        if self.close_code is not None:
            return False
        if len(self.queue) >= self.queue_limit:
            self.close(
                SLOW_CLOSE_CODE,
                f"too slow: {self.queue_limit} frames were waiting to be read",
            )
            return False
        self.queue.append(self.wrap(frame))
        self.wake.set()
        return True

    def wrap(self, message: bytes) -> bytes:
        # The LIST formats carry messages in JSON arrays; one message per frame here.
        return b"[" + message + b"]" if self.format.endswith("_LIST") else message

    def close(self, code: int, reason: str) -> None:
        """End this connection's tasks; ``handle`` then sends the close frame."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        for task in self.tasks:
            task.cancel()


class _Rendered:
    """One event's frames, rendered on first use per (simple, stream_type, depth, level)."""

    __slots__ = ("_extras", "_frames", "_record")

    def __init__(self, record: Record, extras: Extras) -> None:
        self._record = record
        self._extras = extras
        self._frames: dict[tuple[bool, str, int, float], bytes] = {}

    def get(self, simple: bool, stream_type: str, depth: int, level: float) -> bytes:
        key = (simple, stream_type, depth, level)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = render(
                self._record,
                simple=simple,
                stream_type=stream_type,
                depth=depth,
                level=level,
                extras=self._extras,
            )
        return frame


@dataclass(eq=False)
class _Upstream:
    """One (type, market) fed from the Spine: who wants it, its last event, its tasks."""

    pair: Pair
    clients: set[_Client] = field(default_factory=set)
    last: Record | None = None
    pump: asyncio.Task[None] | None = None
    fetch: asyncio.Task[None] | None = None
    linger: asyncio.TimerHandle | None = None


class WsGateway:
    """Serves Upbit's public WebSocket protocol to any number of clients from one Spine.

    ``client_queue`` bounds each client's waiting frames; ``linger_s`` keeps an upstream
    listener that no client wants any more for that long (clients often resubscribe);
    ``clock`` (monotonic seconds) paces PING answers and request limits.
    """

    def __init__(
        self,
        spine: Spine,
        *,
        client_queue: int = DEFAULT_CLIENT_QUEUE,
        linger_s: float = DEFAULT_LINGER_S,
        upstream_queue: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spine = spine
        self._client_queue = client_queue
        self._linger_s = linger_s
        self._upstream_queue = upstream_queue
        self._clock = clock
        self._clients: set[_Client] = set()
        self._upstream: dict[Pair, _Upstream] = {}
        self._warning: dict[str, bool] = {}
        self._side: dict[str, str] = {}  # market -> side of its last trade seen
        self._book: dict[str, Orderbook] = {}  # market -> last book seen
        self._closed = False
        self._connections = 0
        self._dropped = 0
        self._frames_sent = 0
        self._fetches = 0

    # -- one downstream connection ----------------------------------------------------------

    async def handle(self, websocket: WebSocket) -> None:
        """Serve one downstream connection until the client leaves, errs, is too slow, or
        the gateway closes. Returns normally in every case."""
        if self._closed:
            await websocket.close(1001)
            return
        await websocket.accept()
        client = _Client(websocket, self._client_queue)
        self._clients.add(client)
        self._connections += 1
        try:
            async with asyncio.TaskGroup() as group:
                client.tasks = [
                    group.create_task(self._read(client)),
                    group.create_task(self._write(client)),
                ]
        finally:
            self._clients.discard(client)
            self._release(client, client.pairs())
        if client.close_code is not None and not client.gone:
            if client.close_code == SLOW_CLOSE_CODE:
                self._dropped += 1
                logger.warning("closing a WebSocket client: %s", client.close_reason)
            await _close(websocket, client.close_code, client.close_reason)

    async def _read(self, client: _Client) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await client.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                data: str | bytes | None = text if text is not None else message.get("bytes")
                if data is None:
                    continue
                if data.strip() in ("PING", b"PING"):
                    client.push(STATUS_UP)
                    client.status_next = self._clock() + STATUS_EVERY_S
                    continue
                if not await self._request(client, data):
                    return  # the writer sends the error frame, then ends
        client.gone = True
        client.close(1000, "")

    async def _write(self, client: _Client) -> None:
        try:
            while True:
                if not client.queue:
                    if client.close_code is not None:
                        return
                    client.wake.clear()
                    await self._idle(client)
                    continue
                await client.ws.send_bytes(client.queue.popleft())
                self._frames_sent += 1
        except (WebSocketDisconnect, OSError, RuntimeError):
            client.gone = True
            client.close(1000, "")

    async def _idle(self, client: _Client) -> None:
        """Wait for frames, sending ``{"status":"UP"}`` every STATUS_EVERY_S after a PING."""
        due = client.status_next
        timeout = None if due is None else max(0.0, due - self._clock())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await client.wake.wait()
        if client.status_next is not None and self._clock() >= client.status_next:
            client.status_next += STATUS_EVERY_S
            client.push(STATUS_UP)

    async def _request(self, client: _Client, data: str | bytes) -> bool:
        """Apply one request; returns False when it was refused (error frame, then close)."""
        try:
            now = self._clock()
            if client.pacer.delay(now) > 0:
                raise WsRequestError(
                    "TOO_MANY_REQUESTS",
                    "요청 수 제한을 초과했습니다. Too many request messages: at most 5 per "
                    "second and 100 per minute per connection.",
                )
            client.pacer.record(now)
            request = parse_request(data)
        except WsRequestError as error:
            # Upbit answers a refused request with the error frame, then closes (1000).
            client.queue.append(error_message(error))
            client.close_code = 1000
            client.wake.set()
            return False
        if isinstance(request, ListRequest):
            client.format = request.format or client.format
            rows = listing(client.streams)
            client.push(_encoder.encode(list_message(client.simple, request.ticket, rows)))
            return True
        known = await self._known_markets()
        streams = client_streams(request, known)
        before = client.pairs()
        client.format = request.format or "DEFAULT"
        client.ticket = request.ticket
        client.streams = streams
        after = client.pairs()
        client.pending = {
            (s.kind, code) for s in streams.values() if s.snapshot for code in s.codes
        }
        self._retain(client, after)  # before releasing, so shared pairs never linger
        self._release(client, before - after)
        for pair in sorted(client.pending):
            self._snapshot(self._upstream[pair], client)
        return True

    async def _known_markets(self) -> Callable[[str], bool]:
        """Which codes are listed markets (every well-formed code when the list cannot be
        had: upstream will then ignore unknown ones, as Upbit does)."""
        try:
            markets: list[MarketInfo] = await self._spine.markets()
        except MarketspineError as exc:
            logger.warning("cannot check WebSocket codes against the market list: %s", exc)
            return lambda code: True
        self._warning = {m.market: m.warning for m in markets}
        return self._warning.__contains__

    # -- the shared upstream ------------------------------------------------------------------

    def _retain(self, client: _Client, pairs: set[Pair]) -> None:
        for pair in pairs:
            up = self._upstream.get(pair)
            if up is None:
                up = self._upstream[pair] = _Upstream(pair)
            if up.linger is not None:
                up.linger.cancel()
                up.linger = None
            if up.pump is None:
                up.pump = asyncio.create_task(self._pump(up), name=f"ws-pump {pair}")
            up.clients.add(client)

    def _release(self, client: _Client, pairs: set[Pair]) -> None:
        for pair in pairs:
            up = self._upstream.get(pair)
            if up is None:
                continue
            up.clients.discard(client)
            if not up.clients and up.linger is None and not self._closed:
                loop = asyncio.get_running_loop()
                up.linger = loop.call_later(self._linger_s, self._retire, up)

    def _retire(self, up: _Upstream) -> None:
        if up.clients or self._upstream.get(up.pair) is not up:
            return
        del self._upstream[up.pair]
        for task in (up.pump, up.fetch):
            if task is not None:
                task.cancel()

    async def _pump(self, up: _Upstream) -> None:
        """Feed one (type, market) from the Spine's stream to its clients. Not in a task
        group: one pair failing (an upstream error for one market) must not end the
        others; ``aclose`` cancels and awaits every pump."""
        kind, market = up.pair
        try:
            async for event in self._spine.stream([kind], [market], maxsize=self._upstream_queue):
                if isinstance(event, Ticker | Trade | Orderbook | Candle):
                    self._dispatch(up, event)
                    # A burst is read without awaiting; let writers send in between, so a
                    # burst alone never fills the queue of a client that is reading.
                    await asyncio.sleep(0)
        except MarketspineError as exc:
            logger.warning("upstream feed for %s %s ended: %s", kind, market, exc)

    def _dispatch(self, up: _Upstream, record: Record) -> None:
        if kind_of(record) != up.pair[0] or record == up.last:
            # Equal again: upstream re-sent its snapshot after another client's change.
            return
        up.last = record
        rendered = _Rendered(record, self._extras(record))
        for client in list(up.clients):
            self._offer(client, up.pair, rendered)

    def _extras(self, record: Record) -> Extras:
        market = record.market
        if isinstance(record, Trade):
            self._side[market] = record.side
        elif isinstance(record, Orderbook):
            self._book[market] = record
        return self._extras_for(record)

    def _offer(self, client: _Client, pair: Pair, rendered: _Rendered) -> None:
        stream = client.streams.get(pair[0])
        if stream is None or pair[1] not in stream.codes:
            return
        if pair in client.pending:
            client.pending.discard(pair)
            stream_type = "SNAPSHOT"
        elif stream.realtime:
            stream_type = "REALTIME"
        else:
            return
        depth = stream.codes[pair[1]] or 30
        client.push(rendered.get(client.simple, stream_type, depth, stream.level))

    def _snapshot(self, up: _Upstream, client: _Client) -> None:
        """Owe ``client`` a snapshot of ``up``: at once from the last event seen, else
        from one fetch shared by every client waiting for it."""
        if up.last is not None:
            self._offer(client, up.pair, _Rendered(up.last, self._extras_for(up.last)))
        elif up.fetch is None:
            up.fetch = asyncio.create_task(self._fetch(up), name=f"ws-snapshot {up.pair}")

    def _extras_for(self, record: Record) -> Extras:
        book = self._book.get(record.market)
        best = book.units[0] if book is not None and book.units else None
        return Extras(
            warning=self._warning.get(record.market, False),
            last_side=self._side.get(record.market),
            best_ask=(best.ask_price, best.ask_size) if best else None,
            best_bid=(best.bid_price, best.bid_size) if best else None,
        )

    async def _fetch(self, up: _Upstream) -> None:
        kind, market = up.pair
        self._fetches += 1
        try:
            record = await self._fetch_record(kind, market)
        except MarketspineError as exc:
            logger.warning("no snapshot for %s %s: %s", kind, market, exc)
            record = None
        finally:
            up.fetch = None
        if record is None:
            return
        if up.last is None:
            up.last = record
        rendered = _Rendered(record, self._extras_for(record))
        for client in list(up.clients):
            if up.pair in client.pending:
                self._offer(client, up.pair, rendered)

    async def _fetch_record(self, kind: str, market: str) -> Record | None:
        spine = self._spine
        if kind == "ticker":
            return await spine.ticker(market)
        if kind == "orderbook":
            return await spine.orderbook(market)
        if kind == "trade":
            trades = await spine.trades(market, 1)
            return trades[0] if trades else None
        candles = await spine.candles(market, timeframe_of(kind), count=1)
        return candles[-1] if candles else None

    # -- life cycle and statistics ------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every downstream connection (1001) and stop every upstream listener."""
        self._closed = True
        for client in list(self._clients):
            client.close(1001, "server shutting down")
        tasks: list[asyncio.Task[None]] = []
        for up in self._upstream.values():
            if up.linger is not None:
                up.linger.cancel()
            for task in (up.pump, up.fetch):
                if task is not None:
                    task.cancel()
                    tasks.append(task)
        self._upstream.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    def statistics(self) -> GatewayStatistics:
        """A frozen snapshot of the gateway's counters."""
        return GatewayStatistics(
            clients=len(self._clients),
            subscriptions=sum(len(c.pairs()) for c in self._clients),
            upstream_pairs=len(self._upstream),
            connections=self._connections,
            dropped_clients=self._dropped,
            frames_sent=self._frames_sent,
            snapshot_fetches=self._fetches,
        )


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # A client that stopped reading may never take the close frame: bounded.
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(code, reason)
