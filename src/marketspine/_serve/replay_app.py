"""``marketspine replay``: a recording served as if it were Upbit at the replay clock.

``/websocket/v1`` plays the recording in Upbit's protocol (``_serve.replay_ws``); the
quotation paths ``/v1/…`` answer as of the replay clock (``_spine.replay_quotes``): the
markets recorded, the ticker and book at the clock, the trades up to it, and candles built
from those trades, the last one forming. Rows are Upbit's, written by the encoders ``serve``
uses (``_upbit.rest_rows``); errors are Upbit's. Every answer carries the replay clock in
``X-Marketspine-Replay-Time`` (ISO 8601 UTC, milliseconds); ``GET /api/status`` tells where
the replay stands. The first WebSocket subscription or ``/v1`` request starts the replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from .._base.time import parse_time
from .._base.timeframes import REST_CANDLE_KINDS
from .._spine.replay import Replay, ReplayPlan
from .._spine.replay_quotes import ReplayQuotes, ReplayState
from .._store.recording import RecordingStore
from .._upbit.errors import upbit_error
from .._upbit.limits import MAX_BOOK_LEVELS, MAX_CANDLES, MAX_TRADES
from .._upbit.rest_rows import CandleRows, market_row, orderbook_row, ticker_row, trade_row
from .._upbit.texts import MISSING, NOT_FOUND, WRONG_VALUE
from ..errors import InvalidRequestError
from ..records import MarketInfo
from .query import (
    BadRequest,
    count_param,
    int_param,
    market_param,
    minute_frame,
    query_param,
    required_param,
)
from .replay_ws import ReplayHub
from .security import AllowedHosts, HostCheck, QuotationCors, SecurityHeaders

__all__ = [
    "REPLAY_TIME_HEADER",
    "ReplayServer",
    "create_replay_app",
    "replay_app",
    "replay_time_text",
    "run_replay",
]

logger = logging.getLogger("marketspine.replay")
REPLAY_TIME_HEADER = "X-Marketspine-Replay-Time"
_encode = msgspec.json.Encoder().encode
_NOT_FOUND = _encode(
    {"error": {"name": "not_found", "message": "no Route matched with those values"}}
)


def replay_time_text(ms: int) -> str:
    """``2026-01-02T03:04:05.678Z``."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class ReplayServer:
    """What the app serves from: the recording, the replay and its hub."""

    recording: RecordingStore
    replay: Replay
    hub: ReplayHub
    quotes: ReplayQuotes

    @classmethod
    def of(cls, recording: RecordingStore, replay: Replay) -> ReplayServer:
        state = ReplayState()
        hub = ReplayHub(replay, state, recording)
        return cls(
            recording, replay, hub, ReplayQuotes(recording, state, lambda: replay.clock.now_ms)
        )

    def status(self) -> dict[str, Any]:
        clock, plan = self.replay.clock, self.replay.plan
        return {
            "replay": {
                "state": self.hub.state_name,
                "time": replay_time_text(clock.now_ms),
                "time_ms": clock.now_ms,
                "from": replay_time_text(plan.start_ms),
                "to": replay_time_text(plan.end_ms),
                "speed": plan.speed,
                "markets": plan.markets,
                "kinds": plan.kinds,
                "events": self.replay.delivered,
                "error": self.hub.failure,
                "websocket_clients": self.hub.clients,
                "frames_sent": self.hub.frames_sent,
            }
        }


# -- parameters -------------------------------------------------------------------------------


def _code(server: ReplayServer, text: str) -> str:
    code = market_param(text)
    if code not in server.replay.plan.markets:
        raise BadRequest(NOT_FOUND, 404)
    return code


def _codes(server: ReplayServer, params: QueryParams) -> list[str]:
    codes: list[str] = []
    for value in params.getlist("markets"):
        for part in value.split(","):
            if part.strip() and (code := _code(server, part)) not in codes:
                codes.append(code)
    if not codes:
        raise BadRequest(MISSING)
    return codes


# -- handlers ---------------------------------------------------------------------------------

Handler = Callable[[Request, ReplayServer], Awaitable[bytes]]


async def _market_all(request: Request, server: ReplayServer) -> bytes:
    details = (query_param(request.query_params, "is_details", "isDetails") or "").lower() == "true"
    rows = [MarketInfo(m, m, m, False, {}) for m in server.replay.plan.markets]
    return _encode([market_row(m, details=details) for m in rows])


async def _ticker(request: Request, server: ReplayServer) -> bytes:
    tickers = await server.quotes.tickers(_codes(server, request.query_params))
    return _encode([ticker_row(t) for t in tickers])


async def _ticker_all(request: Request, server: ReplayServer) -> bytes:
    text = required_param(request.query_params, "quote_currencies", "quoteCurrencies")
    quotes = {q.strip().upper() for q in text.split(",") if q.strip()}
    markets = [m for m in server.replay.plan.markets if m.partition("-")[0] in quotes]
    return _encode([ticker_row(t) for t in await server.quotes.tickers(markets)])


async def _orderbook(request: Request, server: ReplayServer) -> bytes:
    params = request.query_params
    codes = _codes(server, params)
    count_text = params.get("count")
    depth = MAX_BOOK_LEVELS if count_text is None else int_param(count_text)
    if not 1 <= depth <= MAX_BOOK_LEVELS:
        depth = MAX_BOOK_LEVELS
    books = await server.quotes.orderbooks(codes)
    return _encode([orderbook_row(b, depth) for b in books])


async def _trades(request: Request, server: ReplayServer) -> bytes:
    params = request.query_params
    code = _code(server, required_param(params, "market"))
    count = count_param(params, MAX_TRADES)
    cursor_text = params.get("cursor")
    cursor = None if cursor_text is None else int_param(cursor_text)
    trades = await server.quotes.trades(code, count, cursor)
    return _encode([trade_row(t) for t in trades])


def _candles(kind: str) -> Handler:
    rows = CandleRows()

    async def handler(request: Request, server: ReplayServer) -> bytes:
        params = request.query_params
        tf = REST_CANDLE_KINDS[kind] if kind != "minutes" else minute_frame(request)
        code = _code(server, required_param(params, "market"))
        count = count_param(params, MAX_CANDLES)
        to = params.get("to")
        to_ms = None
        if to is not None:
            try:
                to_ms = parse_time(to)
            except InvalidRequestError:
                raise BadRequest(WRONG_VALUE) from None
        want = count + 1 if tf.unit == "day" else count  # days compare with the day before
        candles, forming = await server.quotes.candles(code, tf, want, to_ms)
        previous = candles[0] if tf.unit == "day" and len(candles) == want else None
        candles = candles[-count:]
        return rows.page(candles, tf, previous=previous, forming_start_ms=forming)

    return handler


def _endpoint(server: ReplayServer, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        server.hub.start()
        try:
            body = await handler(request, server)
        except BadRequest as exc:
            headers = {REPLAY_TIME_HEADER: replay_time_text(server.replay.clock.now_ms)}
            return upbit_error(exc.status, str(exc), headers)
        headers = {
            REPLAY_TIME_HEADER: replay_time_text(server.replay.clock.now_ms),
            "X-Marketspine-Source": "replay",
        }
        return Response(body, 200, headers=headers, media_type="application/json")

    return endpoint


def _routes(server: ReplayServer) -> list[BaseRoute]:
    paths: list[tuple[str, Handler]] = [
        ("/v1/market/all", _market_all),
        ("/v1/trades/ticks", _trades),
        ("/v1/ticker", _ticker),
        ("/v1/ticker/all", _ticker_all),
        ("/v1/orderbook", _orderbook),
    ]
    for kind in REST_CANDLE_KINDS:
        paths.append((f"/v1/candles/{kind}", _candles(kind)))
    paths.append(("/v1/candles/minutes/{unit}", _candles("minutes")))
    routes: list[BaseRoute] = []
    for path, handler in paths:
        endpoint = _endpoint(server, handler)
        routes.append(Route(path, endpoint))
        if path.startswith("/v1/candles/"):
            routes.append(Route(path + "/", endpoint))

    async def status(request: Request) -> Response:
        headers = {REPLAY_TIME_HEADER: replay_time_text(server.replay.clock.now_ms)}
        return Response(_encode(server.status()), headers=headers, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(_encode({"status": "ok"}), media_type="application/json")

    routes += [
        Route("/api/status", status),
        Route("/healthz", healthz),
        WebSocketRoute("/websocket/v1", server.hub.handle),
    ]
    return routes


async def _not_found(request: Request, exc: Exception) -> Response:
    return Response(_NOT_FOUND, 404, media_type="application/json")


def create_replay_app(
    server: ReplayServer,
    *,
    allowed_hosts: AllowedHosts | None = None,
    owns: contextlib.AbstractAsyncContextManager[Any] | None = None,
) -> Starlette:
    """The ASGI app of ``server``: the replay runs in its lifespan's task group (and ends
    with it); ``owns`` (the store, say) is entered first and closed last."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if owns is not None:
                await stack.enter_async_context(owns)
            async with asyncio.TaskGroup() as group:
                task = group.create_task(server.hub.run())
                try:
                    yield
                finally:
                    await server.hub.aclose()
                    task.cancel()

    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(HostCheck, hosts=allowed_hosts))
    middleware.append(Middleware(QuotationCors, expose=[REPLAY_TIME_HEADER]))
    return Starlette(
        routes=_routes(server),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: _not_found},
    )


def run_replay(
    *,
    open_recording: Callable[[], contextlib.AbstractAsyncContextManager[RecordingStore]],
    plan_of: Callable[[RecordingStore], Awaitable[ReplayPlan]],
    host: str,
    port: int,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve the replay until SIGINT/SIGTERM; prints ``replaying on http://HOST:PORT`` once
    listening. ``open_recording`` opens the store's recording (checked first, with
    ``plan_of``, so bad input fails before a port is taken).

    Raises InvalidRequestError for bad input or an address that cannot be listened on,
    StoreError for a database that cannot be used."""
    from .app import serve_url
    from .server_thread import listen, run_server

    async def check() -> None:
        async with open_recording() as recording:
            await plan_of(recording)

    asyncio.run(check())
    sock = listen(host, port)
    url = serve_url(host, sock.getsockname()[1])
    app = replay_app(open_recording, plan_of, AllowedHosts([*allowed_hosts, host]))

    run_server(
        app,
        sock,
        on_started=lambda: print(f"replaying on {url}", flush=True),
        quiet_signals=True,
        timeout_graceful_shutdown=2,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
    )


def replay_app(
    open_recording: Callable[[], contextlib.AbstractAsyncContextManager[RecordingStore]],
    plan_of: Callable[[RecordingStore], Awaitable[ReplayPlan]],
    hosts: AllowedHosts,
) -> Any:
    """The app of the replay ``plan_of`` makes of ``open_recording()``'s recording, made
    at start-up inside the server's event loop (the store is opened there, and closed with
    the app)."""
    inner: list[Starlette] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and not inner:
            stack = contextlib.AsyncExitStack()
            recording = await stack.enter_async_context(open_recording())
            plan = await plan_of(recording)
            server = ReplayServer.of(recording, Replay(recording, plan))
            inner.append(create_replay_app(server, allowed_hosts=hosts, owns=stack))
        await inner[0](scope, receive, send)

    return app
