"""``marketspine replay``'s WebSocket ``/websocket/v1``: a recording played to clients in
Upbit's protocol, as ``serve`` speaks it (tickets, DEFAULT/SIMPLE/LIST formats,
``is_only_snapshot``/``is_only_realtime``, a new request replacing the previous one, ``PING``,
``LIST_SUBSCRIPTIONS``, error frames, the 5/s and 100/min request limit), with the same
client state, request parser and frame rendering (``_serve.ws_client``, ``_upbit.ws_format``,
``_serve.ws_format``, ``_serve.ws_hub.Rendered``).

One ``ReplayHub`` plays the recording once for every client (one replay clock for the whole
server): it starts when the first client subscribes (or a ``/v1`` path is asked), and each
event goes to every client subscribed to its (type, market). A snapshot is the last event
of the pair replayed so far; before the pair's first event, that event is sent as the
snapshot (as ``serve`` does while it has none). The replay never drops a frame: it waits for
a client whose socket is full, so ``--speed 0`` plays as fast as the clients read, and at
a speed above 0 a slow client holds replay time back. At ``--speed 0`` it also waits while
no client is subscribed (nobody would read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from .._base.timeframes import Timeframe, parse_timeframe
from .._live.candle_feed import ClosedCandle
from .._live.listener import Gap
from .._spine.replay import Replay
from .._spine.replay_quotes import ReplayState, add_trade
from .._store.recording import RecordingStore
from .._upbit.ws_format import (
    ListRequest,
    WsRequestError,
)
from ..errors import MarketspineError
from ..records import Candle, Orderbook, Ticker, Trade
from .ws_client import WsClient, is_ping, request_data
from .ws_format import (
    ClientStream,
    Extras,
    Record,
    client_streams,
    kind_of,
    timeframe_of,
)
from .ws_frames import raw_frames
from .ws_hub import Pair, Rendered

__all__ = ["ReplayHub"]

logger = logging.getLogger("marketspine.replay")

# Frames queued for a connection without the raw writer (``ws_frames``) above which the
# replay waits for it, until they are below QUEUE_LOW. With the raw writer, the socket's
# own flow control says when to wait.
QUEUE_HIGH = 2000
QUEUE_LOW = 500
FLUSH_BYTES = 64 << 10  # raw frames held before they are written at once


@dataclass(eq=False, slots=True)
class _Viewer(WsClient):
    """One client: its protocol state (``WsClient``) and outgoing frames."""

    ws: WebSocket
    queue: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    out: list[bytes] = field(default_factory=list)  # raw frames not yet written
    out_bytes: int = 0
    flush_due: bool = False
    closing: bool = False
    refused: bool = False  # a request was refused: close once its error frame is out
    sent: int = 0

    def send(self, data: bytes) -> None:
        if self.closing:
            return
        if self.raw is not None:
            # One write (a send() system call) per frame would cost more than the frame:
            # frames are joined until the loop next turns, or FLUSH_BYTES are held.
            self.out.append(data)
            self.out_bytes += len(data)
            self.sent += 1
            if self.out_bytes >= FLUSH_BYTES:
                self.flush()
            elif not self.flush_due:
                self.flush_due = True
                asyncio.get_running_loop().call_soon(self.flush)
            return
        self.queue.append(data)
        self.wake.set()

    def flush(self) -> None:
        """Write the raw frames held (one write)."""
        self.flush_due = False
        if not self.out or self.raw is None:
            return
        data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
        self.out.clear()
        self.out_bytes = 0
        if self.raw.write(data) < 0:  # gone: nothing more will be taken
            self.closing = True
            self.wake.set()

    def backlogged(self) -> bool:
        if self.closing:
            return False
        if self.raw is not None:
            return not self.raw.writable()
        return len(self.queue) > QUEUE_HIGH

    async def drain(self) -> None:
        """Return once this client has taken most of what waits for it (or is gone)."""
        if self.raw is not None:
            self.flush()
            await self.raw.wait_writable()  # set again when the connection is lost, too
            return
        while not self.closing and len(self.queue) > QUEUE_LOW:
            self.drained.clear()
            await self.drained.wait()


class ReplayHub:
    """Plays ``replay`` once to every client; ``state`` holds the last ticker and book of
    each market handed out (the quotation paths read it). ``clock`` (monotonic seconds)
    paces PING answers and the request limit."""

    def __init__(
        self,
        replay: Replay,
        state: ReplayState,
        recording: RecordingStore,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replay = replay
        self.state = state
        self._recording = recording
        self._clock = clock
        self._markets = set(replay.plan.markets)
        self._viewers: set[_Viewer] = set()
        self._by_pair: dict[Pair, set[_Viewer]] = {}
        self._last: dict[Pair, Record] = {}
        self._side: dict[str, str] = {}
        self._best: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
        self._extras_of: dict[str, Extras] = {}
        # Candle types some client asked for, per market, built from the trades played.
        self._candle_pairs: dict[str, list[tuple[Timeframe, Pair]]] = {}
        self._forming: dict[Pair, Candle] = {}
        self._seeding: dict[Pair, list[Trade]] = {}  # trades played while a pair is seeded
        self._last_seq: dict[str, int] = {}  # the last trade played of each market
        self._go = asyncio.Event()
        self._someone = asyncio.Event()  # a client is subscribed
        self.connections = 0
        self.frames_sent = 0
        self.failure: str | None = None  # why the replay stopped before its end

    @property
    def clients(self) -> int:
        return len(self._viewers)

    @property
    def state_name(self) -> str:
        clock = self.replay.clock
        if self.failure is not None:
            return "failed"
        if clock.finished:
            return "finished"
        return "playing" if self._go.is_set() else "waiting"

    def start(self) -> None:
        """Let the replay begin (the first subscription or quotation request)."""
        self._go.set()

    async def run(self) -> None:
        """Play the replay to the clients until it ends (run in the app's task group). A
        store that fails is logged and shown in ``state_name``; the server stays up."""
        try:
            await self._play()
        except MarketspineError as exc:
            self.failure = str(exc)
            logger.error("the replay stopped: %s", exc)

    async def _play(self) -> None:
        await self._go.wait()
        zero = self.replay.plan.speed <= 0
        events = self.replay.events()
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Gap | ClosedCandle):
                    continue  # Upbit's protocol has no message for these
                market = event.market
                if isinstance(event, Trade):
                    if self._side.get(market) != event.side:
                        self._side[market] = event.side
                        self._extras_of.pop(market, None)
                    self._last_seq[market] = event.seq
                    if market in self._candle_pairs:
                        await self._candles(event)
                elif isinstance(event, Ticker):
                    self.state.tickers[market] = event
                elif isinstance(event, Orderbook):
                    self.state.books[market] = event
                    self._extras_of.pop(market, None)
                    if event.units:
                        top = event.units[0]
                        self._best[market] = (
                            (top.ask_price, top.ask_size),
                            (top.bid_price, top.bid_size),
                        )
                await self._publish((kind_of(event), market), event)
                if zero and not self._someone.is_set():
                    await self._someone.wait()
        logger.info("replay finished: %d events", self.replay.delivered)

    async def _publish(self, pair: Pair, record: Record) -> None:
        """Offer ``record`` to the clients of ``pair``, waiting for any whose socket is full."""
        self._last[pair] = record
        viewers = self._by_pair.get(pair)
        if viewers:
            rendered = Rendered(record, self._extras(pair[1]))
            for viewer in list(viewers):
                viewer.offer(pair, rendered)
                if viewer.backlogged():
                    await viewer.drain()

    async def _candles(self, trade: Trade) -> None:
        for tf, pair in self._candle_pairs[trade.market]:
            held = self._seeding.get(pair)
            if held is not None:
                held.append(trade)
                continue
            candle = add_trade(self._forming.get(pair), trade, tf)
            if candle is not self._forming.get(pair):
                self._forming[pair] = candle
                await self._publish(pair, candle)

    async def _seed(self, pair: Pair) -> None:
        """Start building the candles of ``pair`` (a candle type and market): its forming
        candle at the replay clock from the stored trades of its window played so far, and
        the trades played while those are read."""
        kind, market = pair
        tf = parse_timeframe(timeframe_of(kind))
        self._seeding[pair] = []
        self._candle_pairs.setdefault(market, []).append((tf, pair))
        try:
            clock = self.replay.clock
            now = clock.now_ms
            if market in self._last_seq:
                played = self._last_seq[market]
                found = await self._recording.trades(market, tf.floor(now), now + 1)
                found = [t for t in found if t.seq <= played]
            else:  # nothing of it played yet: the window's trades before the range
                found = await self._recording.trades(market, tf.floor(now), clock.start_ms)
        finally:
            held = self._seeding.pop(pair)
        seen = {t.seq for t in found}
        candle: Candle | None = None
        for trade in sorted([*found, *(t for t in held if t.seq not in seen)],
                            key=lambda t: (t.ms, t.seq)):  # fmt: skip
            candle = add_trade(candle, trade, tf)
        if candle is not None:
            self._forming[pair] = candle
            self._last[pair] = candle

    def _extras(self, market: str) -> Extras:
        """What frames of ``market`` render from beside their record (kept until it changes)."""
        held = self._extras_of.get(market)
        if held is not None:
            return held
        best = self._best.get(market)
        held = self._extras_of[market] = Extras(
            last_side=self._side.get(market),
            best_ask=best[0] if best else None,
            best_bid=best[1] if best else None,
        )
        return held

    async def handle(self, websocket: WebSocket) -> None:
        """Serve one client until it leaves or errs."""
        await websocket.accept()
        viewer = _Viewer(websocket, raw=raw_frames(websocket.scope))
        self._viewers.add(viewer)
        self.connections += 1
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read(viewer))
                writer = group.create_task(self._write(viewer))
                await reader
                viewer.closing = True
                viewer.wake.set()
                viewer.drained.set()
                await writer
        finally:
            viewer.flush()  # what was sent last (an error frame) goes out before the close
            self._forget(viewer)
            self.frames_sent += viewer.sent
        if viewer.refused:  # Upbit answers a refused request with its error frame, then 1000
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await websocket.close(1000)

    def _forget(self, viewer: _Viewer) -> None:
        self._viewers.discard(viewer)
        for pair in viewer.routes:
            self._by_pair.get(pair, set()).discard(viewer)
        if not any(v.routes for v in self._viewers):
            self._someone.clear()

    async def _read(self, viewer: _Viewer) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while not viewer.closing:
                message = await viewer.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = request_data(message)
                if data is None:
                    continue
                if is_ping(data):
                    viewer.ping(self._clock())
                    continue
                if not await self._request(viewer, data):
                    viewer.refused = True
                    return

    async def _write(self, viewer: _Viewer) -> None:
        queue = viewer.queue
        try:
            while True:
                while queue:
                    await viewer.ws.send_bytes(queue.popleft())
                    viewer.sent += 1
                    if len(queue) <= QUEUE_LOW:
                        viewer.drained.set()
                if viewer.closing:
                    return
                viewer.wake.clear()
                due = viewer.status_next
                if due is None:
                    await viewer.wake.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - self._clock())):
                        await viewer.wake.wait()
                viewer.beat(self._clock())
        except (WebSocketDisconnect, OSError, RuntimeError):
            viewer.closing = True
            viewer.drained.set()

    async def _request(self, viewer: _Viewer, data: str | bytes) -> bool:
        """Apply one request; False when it was refused (the error frame is queued)."""
        try:
            request = viewer.parse(data, self._clock())
        except WsRequestError as error:
            viewer.refuse(error)
            return False
        if isinstance(request, ListRequest):
            viewer.list_subscriptions(request)  # the same pairs: ``_by_pair`` stays as it is
            return True
        streams = client_streams(request, self._markets.__contains__)
        for stream in streams.values():
            if stream.kind.startswith("candle."):
                for code in stream.codes:
                    pair = (stream.kind, code)
                    if all(p != pair for _, p in self._candle_pairs.get(code, ())):
                        await self._seed(pair)
        self._configure(viewer, request.format or "DEFAULT", streams)
        viewer.pending = {
            (s.kind, code) for s in streams.values() if s.snapshot for code in s.codes
        }
        for pair in sorted(viewer.pending):
            last = self._last.get(pair)
            if last is not None:
                viewer.offer(pair, Rendered(last, self._extras(pair[1])))
        if viewer.routes:
            self._someone.set()
        self.start()
        return True

    def _configure(self, viewer: _Viewer, format: str, streams: dict[str, ClientStream]) -> None:
        for pair in viewer.routes:
            self._by_pair.get(pair, set()).discard(viewer)
        viewer.configure(format, streams)
        for pair in viewer.routes:
            self._by_pair.setdefault(pair, set()).add(viewer)
        if not any(v.routes for v in self._viewers):
            self._someone.clear()

    async def aclose(self) -> None:
        for viewer in list(self._viewers):
            viewer.closing = True
            viewer.wake.set()
            viewer.drained.set()
