"""``serve``'s Upbit-compatible WebSocket ``/websocket/v1``: many clients, one upstream feed.

Clients speak Upbit's protocol unchanged: tickets, DEFAULT/SIMPLE/LIST formats, snapshot
and realtime flags, a new request replaces the previous subscription, ``PING`` answered
with ``{"status":"UP"}`` (then every 10 s), ``LIST_SUBSCRIPTIONS``, an error frame then
close (1000) for a bad request, and Upbit's 5/s and 100/min request limit per connection. A
request over ``MAX_REQUEST_BYTES`` is refused unparsed (an error frame, then close 1009).

Every (type, market) any client wants comes from the ``UpstreamHub``: one listener per
pair on the Spine's one stream, so upstream sees one connection however many clients come
and go. Each client has its own bounded queue and writer task; a client whose queue fills
up is closed (1008, with the reason) and never slows the others. A snapshot comes from
the last event seen for that pair, else from the Spine (live state, or REST through the
shared budget), one fetch per pair at a time; a trade snapshot fetched so is joined to the
live stream without a hole or a repeat (see ``_serve.ws_hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from .._live.trade_join import JOIN_HOLD_MAX
from .._spine.spine import Spine
from .._upbit.ws_format import (
    ListRequest,
    WsRequestError,
    error_message,
)
from ..errors import MarketspineError
from .ws_client import WsClient, is_ping, request_data
from .ws_format import ClientStream, at_supported_levels, client_streams
from .ws_frames import raw_frames
from .ws_hub import Pair, UpstreamHub, Variant

__all__ = [
    "DEFAULT_CLIENT_QUEUE",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_LINGER_S",
    "DEFAULT_MAX_PER_ADDRESS",
    "MAX_REQUEST_BYTES",
    "GatewayStatistics",
    "WsGateway",
]

logger = logging.getLogger("marketspine.serve.ws")

DEFAULT_CLIENT_QUEUE = 2000  # frames waiting for one client before it counts as too slow
DEFAULT_LINGER_S = 60.0  # a pair no client wants keeps its upstream feed this long
# Every bot on the host comes from 127.0.0.1: the cap is for a client leaking connections.
DEFAULT_MAX_PER_ADDRESS = 500  # connections open at once from one client address
DEFAULT_IDLE_TIMEOUT_S = 120.0  # no subscription by then: closed (Upbit closes idle ones ~120 s)
INSTRUMENTS_TTL_S = 60.0  # supported orderbook levels are asked again after this long
CLOSE_TIMEOUT_S = 2.0
SLOW_CLOSE_CODE = 1008  # policy violation: the client did not read its frames
# A request replaces the whole subscription, so one must hold all of it: every KRW, BTC and
# USDT market (about 850 codes, 11 bytes each) in three types is about 28 KB. Nothing
# larger is parsed; Upbit documents no limit of its own.
MAX_REQUEST_BYTES = 32 * 1024
TOO_BIG_CLOSE_CODE = 1009  # RFC 6455: a message too big to process


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    """A snapshot of the gateway's counters (cheap; for metrics and tests)."""

    clients: int  # connections open now
    subscriptions: int  # (type, market) pairs summed over open connections
    upstream_pairs: int  # (type, market) pairs fed from upstream (lingering ones too)
    connections: int  # connections accepted since start
    dropped_clients: int  # closed for being too slow
    refused_clients: int  # refused: too many connections from their address
    idle_closed: int  # closed for never subscribing within the idle timeout
    frames_sent: int
    snapshot_fetches: int  # snapshots asked of the Spine (no event seen yet)
    snapshot_joins: int  # REST walks joining a fetched trade snapshot to the live stream
    snapshot_join_trades: int  # trades those walks filled in between
    snapshot_joins_incomplete: int  # joins that left trades out (walk failed, or too long)


@dataclass(eq=False, slots=True)
class _Client(WsClient):
    """One downstream connection: its protocol state (``WsClient``), queue and tasks."""

    ws: WebSocket
    queue_limit: int
    queue: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str = ""
    gone: bool = False  # the client left: no close frame to send
    subscribed: bool = False  # a subscription request was accepted
    sent: int = 0  # frames sent
    backlog: int = 0  # raw frames written since the socket last took everything
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def owes_snapshot(self, pair: Pair) -> bool:
        return pair in self.pending

    def realtime_route(self, pair: Pair) -> tuple[Variant, bool] | None:
        route = self.routes.get(pair)
        return (route[0], self.raw is not None) if route is not None and route[1] else None

    def send(self, data: bytes) -> None:
        """Send ``data`` now, a whole frame when ``raw`` writes them, else queue it as a
        message; closes the client when it is too far behind. The fan-out's hot path."""
        if self.close_code is not None:
            return
        if self.raw is not None:
            waiting = self.raw.write(data)
            if waiting < 0:
                self.gone = True
                self.close(1000, "")
                return
            self.sent += 1
            # Frames wait in the transport only once the socket's buffers are full.
            self.backlog = self.backlog + 1 if waiting else 0
            if self.backlog >= self.queue_limit:
                self.close(SLOW_CLOSE_CODE, f"too slow: {self.queue_limit} frames were not read")
            return
        if len(self.queue) >= self.queue_limit:
            self.close(SLOW_CLOSE_CODE, f"too slow: {self.queue_limit} frames were not read")
            return
        self.queue.append(data)
        self.wake.set()

    def close(self, code: int, reason: str) -> None:
        """End this connection's tasks; ``handle`` then sends the close frame."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        for task in self.tasks:
            task.cancel()


class WsGateway:
    """Serves Upbit's public WebSocket protocol to any number of clients from one Spine.

    ``client_queue`` bounds each client's waiting frames; ``linger_s`` keeps the feed of a
    pair no client wants any more for that long; ``max_per_address`` caps the connections
    open at once from one client address (more are refused: an error frame, then close
    1008); ``idle_timeout_s`` closes a connection that has not subscribed by then;
    ``join_hold_max`` bounds the live trades of a market held while a trade snapshot from
    REST is joined to the stream (``TradeJoin``);
    ``shared(type, market)`` says whether another part of the process still uses a pair
    (its feed then stays watched when retired); ``clock`` (monotonic seconds) paces PING
    answers and request limits.
    """

    def __init__(
        self,
        spine: Spine,
        *,
        client_queue: int = DEFAULT_CLIENT_QUEUE,
        linger_s: float = DEFAULT_LINGER_S,
        max_per_address: int = DEFAULT_MAX_PER_ADDRESS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        upstream_queue: int = 10_000,
        join_hold_max: int = JOIN_HOLD_MAX,
        shared: Callable[[str, str], bool] = lambda kind, market: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spine = spine
        self._client_queue = client_queue
        self._max_per_address = max_per_address
        self._idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._hub = UpstreamHub(
            spine,
            linger_s=linger_s,
            upstream_queue=upstream_queue,
            join_hold_max=join_hold_max,
            shared=shared,
        )
        self._clients: set[_Client] = set()
        self._closed = False
        self._connections = 0
        self._dropped = 0
        self._refused = 0
        self._idle_closed = 0
        self._frames_sent = 0
        self._per_address: Counter[str] = Counter()
        # market -> (supported orderbook levels, when they were fetched)
        self._instruments: dict[str, tuple[tuple[float, ...], float]] = {}

    def wants(self, kind: str, market: str) -> bool:
        """Whether some connected client needs ``kind`` of ``market`` watched: subscribed
        to it, or (for a candle kind, whose unwatching can stop the market's trade stream)
        to the market's trades."""
        pairs = {(kind, market)}
        if kind.startswith("candle."):
            pairs.add(("trade", market))
        return any(pairs & client.pairs() for client in self._clients)

    async def handle(self, websocket: WebSocket) -> None:
        """Serve one downstream connection until the client leaves, errs, is too slow, or
        the gateway closes. Returns normally in every case."""
        if self._closed:
            await websocket.close(1001)
            return
        address = websocket.client.host if websocket.client is not None else ""
        if self._per_address[address] >= self._max_per_address:
            await self._refuse(websocket, address)
            return
        self._per_address[address] += 1
        try:
            await self._serve(websocket)
        finally:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    async def _refuse(self, websocket: WebSocket, address: str) -> None:
        """Upbit's way of refusing: an error frame, then close (1008 here, with the reason)."""
        self._refused += 1
        limit = self._max_per_address
        logger.warning("refusing a WebSocket client from %s: %d connections open", address, limit)
        error = WsRequestError(
            "TOO_MANY_CONNECTIONS",
            f"연결 수 제한을 초과했습니다. Too many WebSocket connections from {address}: at most "
            f"{limit} at a time (marketspine serve --ws-max-per-ip).",
        )
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await websocket.accept()
                await websocket.send_bytes(error_message(error))
                await websocket.close(SLOW_CLOSE_CODE, f"too many connections: at most {limit}")

    async def _serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        client = _Client(websocket, self._client_queue, raw=raw_frames(websocket.scope))
        self._clients.add(client)
        self._connections += 1
        idle = asyncio.get_running_loop().call_later(
            self._idle_timeout_s, self._close_unsubscribed, client
        )
        try:
            async with asyncio.TaskGroup() as group:
                client.tasks = [
                    group.create_task(self._read(client)),
                    group.create_task(self._write(client)),
                ]
        finally:
            idle.cancel()
            self._clients.discard(client)
            self._frames_sent += client.sent
            self._hub.release(client, client.pairs())
        if client.close_code is not None and not client.gone:
            if client.close_code == SLOW_CLOSE_CODE:
                self._dropped += 1
                logger.warning("closing a WebSocket client: %s", client.close_reason)
            # A client that stopped reading may never take the close frame: bounded.
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await websocket.close(client.close_code, client.close_reason)

    def _close_unsubscribed(self, client: _Client) -> None:
        if not client.subscribed and client.close_code is None:
            self._idle_closed += 1
            client.close(1000, f"idle: no subscription within {self._idle_timeout_s:g} s")

    async def _read(self, client: _Client) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await client.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = request_data(message)
                if data is None:
                    continue
                size = (
                    len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
                )
                if size > MAX_REQUEST_BYTES:
                    self._too_big(client, size)
                    return
                if is_ping(data):
                    client.ping(self._clock())
                    continue
                if not await self._request(client, data):
                    return  # the writer sends the error frame, then ends
        client.gone = True
        client.close(1000, "")

    def _too_big(self, client: _Client, size: int) -> None:
        """Refuse a request over MAX_REQUEST_BYTES unparsed: an error frame, then close 1009."""
        error = WsRequestError(
            "WRONG_FORMAT",
            f"요청이 너무 큽니다. Request of {size} bytes refused unread: at most "
            f"{MAX_REQUEST_BYTES} bytes per request.",
        )
        client.refuse(error)
        client.close_code, client.close_reason = TOO_BIG_CLOSE_CODE, "request too big"
        client.wake.set()

    async def _write(self, client: _Client) -> None:
        queue = client.queue
        try:
            while True:
                while queue:
                    await client.ws.send_bytes(queue.popleft())
                    client.sent += 1
                if client.close_code is not None:
                    return
                client.wake.clear()
                if client.status_next is None:
                    await client.wake.wait()
                else:
                    await self._idle(client, client.status_next)
        except (WebSocketDisconnect, OSError, RuntimeError):
            client.gone = True
            client.close(1000, "")

    async def _idle(self, client: _Client, due: float) -> None:
        """Wait for frames, sending ``{"status":"UP"}`` every STATUS_EVERY_S after a PING."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, due - self._clock())):
                await client.wake.wait()
        client.beat(self._clock())

    async def _request(self, client: _Client, data: str | bytes) -> bool:
        """Apply one request; returns False when it was refused (error frame, then close)."""
        try:
            request = client.parse(data, self._clock())
        except WsRequestError as error:
            # Upbit answers a refused request with the error frame, then closes (1000).
            client.refuse(error)
            client.close_code = 1000
            client.wake.set()
            return False
        if isinstance(request, ListRequest):
            client.list_subscriptions(request)
            self._hub.retain(client, client.pairs())  # its frames change with the format
            return True
        streams = client_streams(request, await self._known_markets())
        streams = at_supported_levels(streams, await self._levels(streams))
        client.subscribed = True
        before = client.pairs()
        client.configure(request.format or "DEFAULT", streams)
        after = client.pairs()
        client.pending = {
            (s.kind, code) for s in streams.values() if s.snapshot for code in s.codes
        }
        self._hub.retain(client, after)  # before releasing, so shared pairs never linger
        self._hub.release(client, before - after)
        for pair in sorted(client.pending):
            self._hub.snapshot(client, pair)
        return True

    async def _known_markets(self) -> Callable[[str], bool]:
        """Which codes are listed markets (every well-formed code when the list cannot be
        had: upstream then ignores unknown ones, as Upbit does)."""
        try:
            markets = await self._spine.markets()
        except MarketspineError as exc:
            logger.warning("cannot check WebSocket codes against the market list: %s", exc)
            return lambda code: True
        self._hub.warnings = {m.market: m.warning for m in markets}
        return self._hub.warnings.__contains__

    async def _levels(self, streams: dict[str, ClientStream]) -> dict[str, tuple[float, ...]]:
        """Supported orderbook levels of the markets of an orderbook stream with a ``level``
        (from ``/v1/orderbook/instruments`` through the shared budget, kept a minute);
        none when they cannot be had (every level is then served, aggregated here)."""
        stream = streams.get("orderbook")
        if stream is None or not stream.level or not stream.codes:
            return {}
        now = self._clock()
        held = self._instruments
        missing = [m for m in stream.codes if m not in held or now - held[m][1] > INSTRUMENTS_TTL_S]
        if missing:
            try:
                found = await self._spine.client.instruments(missing)
            except MarketspineError as exc:
                logger.warning("cannot check orderbook levels: %s", exc)
                found = []
            for item in found:
                self._instruments[item.market] = (item.supported_levels, now)
        return {m: self._instruments[m][0] for m in stream.codes if m in self._instruments}

    async def aclose(self) -> None:
        """Close every downstream connection (1001) and stop every upstream feed."""
        self._closed = True
        for client in list(self._clients):
            client.close(1001, "server shutting down")
        await self._hub.aclose()

    def statistics(self) -> GatewayStatistics:
        """A frozen snapshot of the gateway's counters."""
        return GatewayStatistics(
            clients=len(self._clients),
            subscriptions=sum(len(c.pairs()) for c in self._clients),
            upstream_pairs=len(self._hub),
            connections=self._connections,
            dropped_clients=self._dropped,
            refused_clients=self._refused,
            idle_closed=self._idle_closed,
            frames_sent=self._frames_sent + sum(c.sent for c in self._clients),
            snapshot_fetches=self._hub.fetches,
            snapshot_joins=self._hub.joins,
            snapshot_join_trades=self._hub.join_trades,
            snapshot_joins_incomplete=self._hub.joins_incomplete,
        )
