"""The simulator's ``/websocket/v1``: Upbit's public quotation WebSocket (API.md §5, §3.4).

This module is the connection handling; what is sent is the pure ``Feed`` (``_feed``), ticked
every ``TICK_S`` of real time with the simulated time (``SimState.now_ms``).

Limits (Upbit documents them, not what happens when they are exceeded; see ``_limits``):
- connections: 5 per second per client IP; beyond that the upgrade is refused with HTTP 429
  and the text body ``Too many API requests.``
- request messages: 5 per second and 100 per minute per connection (sliding windows);
  beyond that the server sends ``{"error":{"name":"TOO_MANY_REQUESTS",...}}`` and closes
  with 1000, the way every other request error is answered.

Faults (read live from ``SimState.faults``, counted in ``Stats``):
- ``ws_drop_every_s``: a connection that old is cut without a close frame (the client sees
  1006): the app returns without a close message, and the server drops the TCP connection.
- ``ws_stall_every_s``: every N s on a simulator-wide schedule (``SimState.next_stall_s``,
  so drops never postpone it) the open connections go silent — nothing is sent and, where
  the server offers the ``_ws_protocol`` extension, the socket is no longer read, so pings
  get no pong — until the idle timeout cuts them.
- ``ws_idle_timeout_s``: cuts (without close frame, as measured on Upbit) a socket that
  neither received nor sent anything for that long; inbound protocol pings count as
  activity where the extension tells about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .._upbit.limits import remaining_req
from .._upbit.texts import TOO_MANY
from .._upbit.ws_format import (
    STATUS_UP,
    ListRequest,
    WsRequestError,
    encode,
    error_message,
    is_simple,
    list_message,
    parse_request,
)
from ._feed import TICK_S, Feed
from ._limits import ConnectLimiter, MessageLimiter
from ._state import SimState
from ._ws_protocol import LINK_EXTENSION, STALL_MESSAGE

__all__ = ["STATUS_EVERY_S", "WebSocketEndpoint", "websocket_endpoint"]

STATUS_EVERY_S = 10.0  # {"status":"UP"} period after a text PING (real seconds)


class _Cut(Exception):
    """The connection ends without a close frame (a fault or the idle timeout)."""


class _Connection:
    """One client socket: a reader task (requests, PING) and a streamer task (ticks, faults,
    keep-alive) in one task group; whichever ends first ends the other."""

    def __init__(self, websocket: WebSocket, send: Send, state: SimState) -> None:
        self.ws = websocket
        self.raw_send = send  # for the link extension's messages, which Starlette refuses
        self.state = state
        link = websocket.scope.get("extensions", {}).get(LINK_EXTENSION)
        self.last_received: Callable[[], float] | None = (
            link.get("last_received") if isinstance(link, dict) else None
        )
        self.opened = time.monotonic()
        self.last_activity = self.opened
        self.feed: Feed | None = None
        self.wake = asyncio.Event()
        self.status_next: float | None = None
        self.limiter = MessageLimiter()
        self.reader: asyncio.Task[None] | None = None
        self.streamer: asyncio.Task[None] | None = None

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def idle_for(self, now: float) -> float:
        last = self.last_activity
        if self.last_received is not None:
            last = max(last, self.last_received())
        return now - last

    async def run(self) -> None:
        """Serve until the client leaves or the connection is closed (returns normally),
        or until a fault cuts it (raises ``_Cut``)."""
        try:
            async with asyncio.TaskGroup() as group:
                self.reader = group.create_task(self._read())
                self.streamer = group.create_task(self._stream())
        except* _Cut:
            raise _Cut from None

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
                raise WsRequestError("TOO_MANY_REQUESTS")
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
            self.state.delisted_ms,
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
        stats = self.state.stats
        if 0 < faults.ws_drop_every_s <= real - self.opened:
            stats.ws_drops += 1
            raise _Cut
        stall_at = self.state.next_stall_s(self.opened)
        if stall_at is not None and real >= stall_at:
            stats.ws_stalls += 1
            await self._stall()
        if self.idle_for(real) >= faults.ws_idle_timeout_s:
            stats.ws_idle_cuts += 1
            raise _Cut
        if self.status_next is not None and real >= self.status_next:
            self.status_next = real + STATUS_EVERY_S
            await self.send(STATUS_UP)
        feed = self.feed
        if feed is not None:
            for frame in encode(feed.tick(self.state.now_ms(), real), feed.format):
                await self.send(frame)
        return True

    async def _stall(self) -> None:
        """Go silent: stop reading (so pings get no pong) and sending, until the idle
        timeout cuts the socket (raises ``_Cut``) or the client leaves (returns)."""
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.wait([self.reader])
        if self.last_received is not None:
            await self.raw_send({"type": STALL_MESSAGE})
        while True:
            left = self.state.faults.ws_idle_timeout_s - self.idle_for(time.monotonic())
            if left <= 0:
                break
            # A deadline, re-read at least every tick: the timeout is a live setting.
            await asyncio.sleep(min(left, TICK_S))
        self.state.stats.ws_idle_cuts += 1
        raise _Cut


def _connect_limiter(app_state: Any) -> ConnectLimiter:
    limiter = getattr(app_state, "ws_connect_limiter", None)
    if limiter is None:
        limiter = ConnectLimiter()
        app_state.ws_connect_limiter = limiter
    return limiter


class WebSocketEndpoint:
    """The ASGI app of ``/websocket/v1`` (a plain ASGI app rather than a Starlette endpoint
    function, because a stall sends the link extension's message through the raw ``send``).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _serve(scope, receive, send)


websocket_endpoint = WebSocketEndpoint()


async def _serve(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one client until it leaves, errs, or a fault cuts it.

    Over WS_CONNECTS_PER_S connections per second from one client IP, the upgrade is refused
    with HTTP 429 ``Too many API requests.``. Returns normally in every case; client
    disconnects are not errors. A cut returns without a close message.
    """
    websocket = WebSocket(scope, receive, send)
    state: SimState = websocket.app.state.sim
    client = websocket.client.host if websocket.client else "unknown"
    remaining = _connect_limiter(websocket.app.state).admit(client)
    if remaining is None:
        state.stats.by_status[429] += 1
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(PlainTextResponse(TOO_MANY, status_code=429))
        else:
            await websocket.close(1008)
        return
    # As measured on Upbit's upgrade reply (API.md §3.2); min is a fixed value there too.
    await websocket.accept(
        headers=[
            (b"remaining-req", remaining_req("websocket", remaining).encode()),
            (b"limit-by-ip", b"Yes"),
        ]
    )
    state.stats.ws_connections += 1
    state.stats.ws_open += 1
    try:
        await _Connection(websocket, send, state).run()
    except _Cut:
        pass  # returning without a close message: the server drops the connection
    finally:
        state.stats.ws_open -= 1
