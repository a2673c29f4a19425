"""The simulator app: Upbit's routes, the per-request pipeline (stats, latency, rate limits,
faults, Upbit headers), the ``/sim/*`` inspection routes, and ``serve``.

Every quotation request goes through ``_quotation``: a wrapper around a plain handler rather
than a Starlette middleware, because the group and the fault settings are per route and
middleware costs more per request than the ≥ 1,000 requests/s goal allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from .._base.time import format_utc
from .._base.timeframes import REST_CANDLE_KINDS
from .._serve.server_thread import base_url, listen, run_server, server_thread
from .._upbit.errors import method_not_allowed
from .._upbit.errors import upbit_error as _error
from .._upbit.limits import remaining_req
from .._upbit.texts import NOT_FOUND, TOO_MANY, blocked_text
from ..errors import InvalidRequestError, UnknownMarketError
from . import _rest, _rest_quotes
from ._gen_store import Lru
from ._history import History
from ._limits import RateLimiter, Verdict
from ._rest_params import Handler
from ._state import Faults, SimClock, SimConfig, SimState
from ._ws import websocket_endpoint
from ._ws_protocol import LinkWebSocketProtocol

__all__ = ["SERVER_OPTIONS", "create_app", "running", "serve"]

# uvicorn options for a simulator: the WebSocket protocol that can stall a socket; Upbit
# sends no server pings, and a stalled socket must stay stalled; the simulator stamps Date
# from its own (possibly fast) clock.
SERVER_OPTIONS: dict[str, Any] = {
    "ws": LinkWebSocketProtocol,
    "ws_ping_interval": None,
    "date_header": False,
}

_encode = msgspec.json.Encoder().encode
_JSON = "application/json;charset=UTF-8"
# With rate limiting off nothing is counted; replies show what a fresh second would.
_UNLIMITED_REMAINING = 9
_NOT_FOUND_BODY = _encode(
    {"error": {"name": "not_found", "message": "no Route matched with those values"}}
)
# Injected 5xx answers: Upbit's own JSON for 500, a gateway's page for the others.
_SERVER_ERRORS: dict[int, tuple[bytes, str]] = {
    500: (_encode({"error": {"name": 500, "message": "Internal Server Error"}}), _JSON),
    502: (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    503: (b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html"),
    504: (b"<html><body><h1>504 Gateway Time-out</h1></body></html>", "text/html"),
}
_ERROR_STATUSES = tuple(_SERVER_ERRORS)


class _Runtime:
    """What the request pipeline needs besides SimState: the limiter, the fault dice and
    where pages are generated."""

    def __init__(
        self,
        seed: int,
        limit_clock: Callable[[], float] | None,
        sleep: Callable[[float], Awaitable[None]],
        pages_off_loop: bool,
    ) -> None:
        self.limit_clock = time.monotonic if limit_clock is None else limit_clock
        self.limiter = RateLimiter(self.limit_clock)
        self.sleep = sleep  # waits out the simulated network latency
        # A dedicated generator: fault decisions are reproducible for a seed and never
        # disturb any other randomness.
        self.dice = random.Random(f"marketspine-sim-faults-{seed}")
        self.pages_off_loop = pages_off_loop
        # Client (address, port) pairs seen, each with when its handshakes end (the limiter's
        # clock): a pair not seen is a new connection, which pays ``connect_ms`` before its
        # first request. Bounded: a forgotten pair pays it again.
        self._connections: Lru[tuple[str, int], float] = Lru(_CONNECTIONS_KEPT, lambda _: 1)
        # One worker: pages are generated one at a time, as on the loop, but the loop stays
        # free to stamp arrivals meanwhile. Started by the first such page, ended with the
        # server (``close``).
        self._pages: ThreadPoolExecutor | None = None

    def handshakes(self, request: Request, arrival: float, connect_s: float) -> tuple[bool, float]:
        """(whether ``request`` is the first seen on its connection, the seconds it waits
        for that connection's handshakes). Every request on a connection whose handshakes
        are not over waits for them: HTTP/2 sends several at once on one new connection."""
        client = request.scope.get("client")
        if client is None:
            return False, 0.0
        key = (str(client[0]), int(client[1]))
        ready = self._connections.get(key)
        if ready is None:
            self._connections.put(key, arrival + connect_s)
            return True, connect_s
        return False, max(0.0, ready - arrival)

    async def page(self, handler: Handler, request: Request, sim: SimState) -> bytes:
        """``handler``'s answer, encoded: on the worker thread if pages go off the loop and
        the request reaches back in time. Pages near now come from the caches in a tenth of
        a millisecond, less than the hop to the thread costs (it halved the loopback rate);
        pages back in history take milliseconds to generate."""
        if not self.pages_off_loop or _REACHES_BACK.isdisjoint(request.query_params):
            return _page(handler, request, sim)
        if self._pages is None:
            self._pages = ThreadPoolExecutor(1, thread_name_prefix="sim-pages")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pages, _page, handler, request, sim)

    def close(self) -> None:
        """End the worker thread (after the page it may be generating); a later page
        starts another, as when the app is served again."""
        if self._pages is not None:
            self._pages.shutdown(wait=False)
            self._pages = None


# Parameters that move a page away from now (candles' ``to``, trades' cursor and day).
_REACHES_BACK = frozenset({"to", "cursor", "days_ago", "daysAgo"})
_CONNECTIONS_KEPT = 10_000


def _page(handler: Handler, request: Request, sim: SimState) -> bytes:
    return _encode(handler(request, sim))


def _rejection(verdict: Verdict) -> Response:
    headers = {"Remaining-Req": remaining_req(verdict.group, 0), "limit-by-ip": "Yes"}
    if verdict.status == 429:
        return PlainTextResponse(TOO_MANY, 429, headers=headers)
    seconds = max(1, int(-(-verdict.blocked_for_s // 1)))
    headers["Retry-After"] = str(seconds)
    return _error(418, blocked_text(seconds), headers)


async def _wait_for_disconnect(request: Request) -> None:
    """A hung request: answer nothing until the client gives up and disconnects."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _quotation(group: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint running ``handler`` behind Upbit's rate limits and the simulator's faults."""

    async def endpoint(request: Request) -> Response:
        sim: SimState = request.app.state.sim
        runtime: _Runtime = request.app.state.sim_runtime
        faults = sim.faults
        stats = sim.stats
        stats.count_request(group, request.scope["path"])
        # The request is counted in the limiter's window of its arrival at "Upbit": when it
        # reached this endpoint plus its latency, however the clock is driven. Stamped
        # before anything is computed, and served on a socket the pages are generated off
        # the loop (``_Runtime.page``): Upbit's gateway stamps a request when it arrives,
        # whatever else is being answered. A request that waited for the loop while another
        # page was generated would be stamped late, and a client that measures its lateness
        # by its round trips cannot tell that from a fast way there and a slow way back: it
        # would count the send early and could put an 11th in the window (a 429 Upbit would
        # not send).
        arrival = runtime.limit_clock()
        # A new connection's handshakes come before the request reaches "Upbit".
        new, handshakes_s = runtime.handshakes(request, arrival, faults.connect_ms / 1000)
        if new:
            stats.connections += 1
        if faults.latency_ms or faults.jitter_ms or handshakes_s:
            delay_s = (faults.latency_ms + runtime.dice.uniform(0.0, faults.jitter_ms)) / 1000
            delay_s += handshakes_s
            arrival += delay_s
            await runtime.sleep(delay_s)
        elif faults.rate_limit > 0:
            await asyncio.sleep(0)  # let the requests that came with this one be stamped
        if faults.rate_limit > 0:
            client, port = request.client or ("unknown", 0)
            origin = "origin" in request.headers
            verdict = runtime.limiter.check(
                client, group, faults.rate_limit, origin=origin, at=arrival, source=str(port)
            )
            if verdict.status != 200:
                stats.by_status[verdict.status] += 1
                return _rejection(verdict)
            header = remaining_req(verdict.group, verdict.remaining)
        else:
            header = remaining_req(group, _UNLIMITED_REMAINING)
        if faults.hang_rate and runtime.dice.random() < faults.hang_rate:
            stats.hung += 1
            await _wait_for_disconnect(request)
            return Response(status_code=499)  # nobody is listening any more
        if faults.error_rate and runtime.dice.random() < faults.error_rate:
            status = runtime.dice.choice(_ERROR_STATUSES)
            body, media_type = _SERVER_ERRORS[status]
            stats.by_status[status] += 1
            return Response(body, status, media_type=media_type)
        headers = {
            "Remaining-Req": header,
            "limit-by-ip": "Yes",
            # Clients learn upstream's clock from Date: give them the simulated one.
            "Date": formatdate(sim.now_ms() / 1000, usegmt=True),
        }
        try:
            body = await runtime.page(handler, request, sim)
        except UnknownMarketError:
            stats.by_status[404] += 1
            return _error(404, NOT_FOUND, headers)
        except InvalidRequestError as exc:
            stats.by_status[400] += 1
            return _error(400, str(exc), headers)
        stats.by_status[200] += 1
        return Response(body, 200, headers=headers, media_type=_JSON)

    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unrouted paths get the gateway's answer, without Remaining-Req."""
    sim: SimState = request.app.state.sim
    sim.stats.count_request(None, request.scope["path"])
    sim.stats.by_status[404] += 1
    return Response(_NOT_FOUND_BODY, 404, media_type=_JSON)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """A known path asked with a method it does not take. Upbit's own paths answer as its
    Kong gateway does for a method a route does not take (404 "no Route matched"): the
    simulator stands in for Upbit, and a client tested against it must see what Upbit
    sends. The simulator's own ``/sim/*`` paths answer 405 in Upbit's error shape with
    Starlette's ``Allow`` header, naming the methods they take. Neither has Remaining-Req
    (no group was charged)."""
    if not request.url.path.startswith("/sim/"):
        return await _not_found(request, exc)
    sim: SimState = request.app.state.sim
    sim.stats.count_request(None, request.scope["path"])
    sim.stats.by_status[405] += 1
    return method_not_allowed(request, exc)


# -- /sim/* ---------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> Response:
    return Response(_encode(data), status, media_type=_JSON)


async def _get_stats(request: Request) -> Response:
    """The counters, and the latest 429s with what filled their windows (``rejections``:
    arrival times on the limiter's clock, ``time.monotonic`` unless a test drives it)."""
    sim: SimState = request.app.state.sim
    runtime: _Runtime = request.app.state.sim_runtime
    rejections = [rejection.as_dict() for rejection in runtime.limiter.rejections]
    return _json({**sim.stats.snapshot(), "rejections": rejections})


async def _faults(request: Request) -> Response:
    """GET: every fault setting. POST: change fault settings (a JSON object of Faults
    fields) → 200 with every setting. One route for both methods, so a wrong one's 405
    names them both in Allow."""
    sim: SimState = request.app.state.sim
    if request.method != "POST":
        return _json(sim.faults.as_dict())
    accepted = ", ".join(Faults().as_dict())
    try:
        changes = msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        changes = None
    if not isinstance(changes, dict):
        return _error(400, f"expected a JSON object of fault settings: accepted are {accepted}")
    try:
        sim.faults.update(changes)
    except InvalidRequestError as exc:
        return _error(400, str(exc))
    return _json(sim.faults.as_dict())


def _utc(ms: int | None) -> str | None:
    return None if ms is None else format_utc(ms) + "Z"


async def _get_markets(request: Request) -> Response:
    """Every market the simulator knows, listed or not: listing and delisting times
    (UTC ISO and epoch ms; delisting null while listed) and the state now."""
    sim: SimState = request.app.state.sim
    now_ms = sim.now_ms()
    rows = []
    for market in sim.history.markets:
        delisted_ms = sim.delisted_ms(market.code)
        if market.listed_ms > now_ms:
            state = "UPCOMING"
        elif delisted_ms is not None and delisted_ms <= now_ms:
            state = "DELISTED"
        else:
            state = "ACTIVE"
        rows.append(
            {
                "market": market.code,
                "english_name": market.english_name,
                "state": state,
                "listed_at": _utc(market.listed_ms),
                "listed_ms": market.listed_ms,
                "delisted_at": _utc(delisted_ms),
                "delisted_ms": delisted_ms,
            }
        )
    return _json(rows)


async def _post_delist(request: Request) -> Response:
    """Delist a market now: ``{"market": "KRW-..."}`` → 200 with its /sim/markets row's
    times. From then on it is gone from /v1/market/all, REST answers 404 "Code not found"
    and the WebSocket sends a last ticker with market_state DELISTED, then nothing."""
    sim: SimState = request.app.state.sim
    try:
        body = msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        body = None
    code = body.get("market") if isinstance(body, dict) else None
    if not isinstance(code, str) or set(body) != {"market"}:
        return _error(400, 'expected a JSON object {"market": "KRW-..."} naming one market')
    now_ms = sim.now_ms()
    market = sim.history.market(code)
    if market is None:
        return _error(404, f"unknown market {code!r}: GET /sim/markets lists every market")
    if not sim.is_listed(market, now_ms):
        when = sim.delisted_ms(code)
        state = f"was delisted at {_utc(when)}" if when is not None else "is not listed yet"
        return _error(409, f"market {code} {state}: only a listed market can be delisted")
    sim.delisted[code] = now_ms
    return _json({"market": code, "delisted_at": _utc(now_ms), "delisted_ms": now_ms})


async def _post_reset(request: Request) -> Response:
    """Zero the counters and forget rate-limit windows, strikes and blocks."""
    sim: SimState = request.app.state.sim
    runtime: _Runtime = request.app.state.sim_runtime
    sim.stats.reset()
    runtime.limiter.reset()
    return await _get_stats(request)


# -- assembly --------------------------------------------------------------------------------


def _routes() -> list[BaseRoute]:
    q = _quotation
    quotes = _rest_quotes
    routes: list[BaseRoute] = [
        Route("/v1/market/all", q("market", _rest.market_all)),
        Route("/v1/trades/ticks", q("trade", _rest.trades_ticks)),
        Route("/v1/ticker", q("ticker", _rest_quotes.ticker)),
        Route("/v1/ticker/all", q("ticker", _rest_quotes.ticker_all)),
        Route("/v1/orderbook", q("orderbook", _rest_quotes.orderbook)),
        Route("/v1/orderbook/instruments", q("orderbook", _rest_quotes.orderbook_instruments)),
        Route(
            "/v1/orderbook/supported_levels",
            q("orderbook", quotes.orderbook_supported_levels),
        ),
    ]
    # Candle paths also with a trailing slash before the query (cryptofeed sends that).
    for kind in REST_CANDLE_KINDS:
        endpoint = q("candles", _rest.candles(kind))
        routes += [Route(f"/v1/candles/{kind}", endpoint), Route(f"/v1/candles/{kind}/", endpoint)]
    minutes = q("candles", _rest.candles("minutes"))
    routes += [
        Route("/v1/candles/minutes/{unit}", minutes),
        Route("/v1/candles/minutes/{unit}/", minutes),
        Route("/sim/stats", _get_stats),
        Route("/sim/faults", _faults, methods=["GET", "POST"]),
        Route("/sim/reset", _post_reset, methods=["POST"]),
        Route("/sim/markets", _get_markets),
        Route("/sim/delist", _post_delist, methods=["POST"]),
        WebSocketRoute("/websocket/v1", websocket_endpoint),
    ]
    return routes


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    app.state.sim_runtime.close()


def create_app(
    config: SimConfig = SimConfig(),  # noqa: B008 - SimConfig is frozen
    *,
    clock: Callable[[], int] | None = None,
    limit_clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    history: History | None = None,
    pages_off_loop: bool = False,
) -> Starlette:
    """A simulator app (Starlette, ASGI). ``clock`` returns simulated UTC epoch ms (default:
    ``SimClock(config.speed)``); ``limit_clock`` returns real seconds for the rate limiter
    (default ``time.monotonic``) and ``sleep`` waits out the simulated latency on the same
    time (default ``asyncio.sleep``): pass both from one fake clock, or a request is counted
    whenever the fake clock has got to after a real wait, not when it arrives. ``history``
    shares an existing ``History`` of the same seed, region and size (default: a new one).
    ``pages_off_loop`` generates REST pages that reach back in history on a worker thread, so
    arrivals are stamped while such a page is generated (``running`` and ``serve`` set it);
    in-process apps keep it off, as a test driving time by hand (``sleep``) must not see its
    clock move during a page.
    ``app.state.sim`` is the ``SimState``."""
    if history is None:
        history = History(config.seed, markets=config.markets, region=config.region)
    app = Starlette(
        routes=_routes(),
        exception_handlers={404: _not_found, 405: _method_not_allowed},
        lifespan=_lifespan,
    )
    app.router.redirect_slashes = False  # Upbit answers 404, it does not redirect
    app.state.sim = SimState(
        config=config,
        history=history,
        clock=clock if clock is not None else SimClock(config.speed),
        faults=config.faults(),
    )
    app.state.sim_runtime = _Runtime(config.seed, limit_clock, sleep, pages_off_loop)
    return app


@contextlib.contextmanager
def running(
    config: SimConfig | None = None,
    *,
    clock: Callable[[], int] | None = None,
    app: Starlette | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[str]:
    """A simulator served on a background thread for the duration of the block (a free
    loopback port by default); yields its base URL (WebSocket at ``ws://.../websocket/v1``).
    Pass ``app`` to serve an app you built, else one is built from ``config`` and
    ``clock``."""
    if app is None:
        app = create_app(config or SimConfig(), clock=clock, pages_off_loop=True)
    with server_thread(app, host=host, port=port, **SERVER_OPTIONS) as url:
        yield url


def serve(config: SimConfig, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve a simulator with uvicorn until SIGINT/SIGTERM. Prints one line with the base URL
    (the real port when ``port`` is 0) once it accepts connections.

    Raises InvalidRequestError when the address cannot be listened on (port taken, unknown
    host).
    """
    sock = listen(host, port)
    base = base_url(sock)
    ws = base_url(sock, "ws")
    line = f"marketspine sim: {base} ({ws}/websocket/v1) seed={config.seed} region={config.region}"
    run_server(
        create_app(config, pages_off_loop=True),
        sock,
        on_started=lambda: print(line, flush=True),
        **SERVER_OPTIONS,
    )
