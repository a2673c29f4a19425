"""``marketspine serve``: one process (uvicorn, one worker) around one ``Spine`` for every
client on the host — Upbit-compatible REST at ``/v1/…``, its own JSON API at ``/api/…``,
``/healthz``, ``/metrics``, the admin API and Upbit's WebSocket at ``/websocket/v1``.

``create_service_app(service)`` builds the Starlette app from a ``ServeService`` (routes
grouped per module, so the admin page and the WebSocket gateway mount beside them);
``run_serve`` is the command line's entry.

Locked down: every ``/api`` route but ``/api/openapi.json`` answers only the credentials
``ApiAccess`` accepts (``_serve/admin_api``); ``/v1``, ``/websocket/v1``, ``/healthz`` and
``/metrics`` stay open to clients on the host, as Upbit's are. Every answer carries the
security headers, and ``run_serve`` refuses a ``Host`` that is not its own (``_serve/security``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from .._base.urls import check_db, check_upstream, is_postgres_url
from .._client.connections import upstream_transport
from .._upbit.errors import method_not_allowed
from ..errors import InvalidRequestError
from .admin_api import (
    ApiAccess,
    admin_routes,
    given_admin_token,
    resolve_read_token,
    resolve_token,
    token_path,
)
from .admin_page import AdminPage, admin_page_routes
from .api import api_routes
from .security import (
    SECURITY_HEADERS,
    AllowedHosts,
    BodyLimit,
    HostCheck,
    QuotationCors,
    SecurityHeaders,
    is_loopback,
    proxy_addresses,
)
from .server_thread import run_server
from .service import ServeService
from .upbit_rest import CachedCandles, upbit_routes
from .upbit_ws import DEFAULT_MAX_PER_ADDRESS, MAX_REQUEST_BYTES, WsGateway

__all__ = ["create_service_app", "run_serve", "serve_url"]

logger = logging.getLogger("marketspine.serve")
_NOT_FOUND = msgspec.json.encode(
    {"error": {"name": "not_found", "message": "no Route matched with those values"}}
)
# The /api reads the admin page draws from. Its session cookie is scoped to /admin (the
# browser sends it nowhere else), so they are served at /admin/api/… too, same rules.
_PAGE_READS = ("/api/candles", "/api/coverage", "/api/warmup/history", "/api/backfill/history")
_OPEN_API = "/api/openapi.json"  # the description of the API is no secret


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug or a failing database: an Upbit-shaped 500, never a bare text page. The answer
    names only the kind of failure: a database driver's text can carry its URL, and the
    client needs none of it (the traceback goes to the log, where passwords are redacted)."""
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    message = f"internal error ({type(exc).__name__}): serve's log has the details"
    body = msgspec.json.encode({"error": {"name": 500, "message": message}})
    # Answered outside the middleware (by Starlette's outermost layer): headers given here.
    return Response(body, 500, media_type="application/json", headers=SECURITY_HEADERS)


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unrouted paths get the answer Upbit's gateway gives (no Remaining-Req)."""
    return Response(_NOT_FOUND, 404, media_type="application/json")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """A known path asked with a method it does not take: 405, so a client sees the path
    exists and what to send."""
    return method_not_allowed(request, exc)


def _health_routes(service: ServeService) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        breaker = service.spine.client.statistics().breaker
        body = {
            "status": "ok",
            "uptime_s": round(time.time() - service.started_at, 3),
            "upstream_breaker": str(getattr(breaker, "state", "unknown")),
            "warmup": None
            if service.warmup_report is None
            else bool(service.warmup_report.get("success")),
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    return [
        Route("/healthz", healthz),
        Route("/metrics", service.metrics.endpoint),
    ]


def _locked_api(routes: list[BaseRoute], access: ApiAccess) -> list[BaseRoute]:
    """``routes`` with every ``/api`` route but the OpenAPI description behind ``access``
    (a route added to ``api_routes`` is locked too), plus the page's reads under /admin."""
    locked: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.path != _OPEN_API:
            endpoint = access.guard(route.endpoint)
            locked.append(Route(route.path, endpoint, methods=route.methods, name=route.name))
            if route.path in _PAGE_READS:
                locked.append(Route("/admin" + route.path, endpoint, methods=["GET"]))
        else:
            locked.append(route)
    return locked


def create_service_app(
    service: ServeService,
    *,
    extra_routes: list[BaseRoute] | None = None,
    ws_max_per_ip: int = DEFAULT_MAX_PER_ADDRESS,
    allowed_hosts: AllowedHosts | None = None,
) -> Starlette:
    """The ASGI app of ``serve`` around ``service`` (entered and closed by the app's
    lifespan). ``extra_routes`` are mounted too; ``ws_max_per_ip`` caps the WebSocket
    connections open at once from one client address; with ``allowed_hosts``, a request
    whose ``Host`` it does not allow is refused (``run_serve`` always gives it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:
            yield

    # One WebSocket gateway over the service's Spine; the service closes it. A pair the
    # REST side watches stays watched when the gateway retires it, and the other way round.
    # A pair ``serve --record`` streams stays watched whichever of them lets it go.
    admin_page = AdminPage(service)
    recorded = service.recording.streams if service.recording else lambda kind, market: False
    gateway = WsGateway(
        service.spine,
        shared=lambda kind, market: service.demand.is_live(kind, market) or recorded(kind, market),
        max_per_address=ws_max_per_ip,
    )
    service.gateway = gateway
    service.demand.in_use = lambda kind, market: (
        gateway.wants(kind, market) or recorded(kind, market)
    )
    routes: list[BaseRoute] = [
        *upbit_routes(service),
        *_locked_api(api_routes(service), ApiAccess(service, admin_page)),
        *admin_routes(service, admin_page),
        *admin_page_routes(admin_page),
        *_health_routes(service),
        WebSocketRoute("/websocket/v1", gateway.handle),
        *(extra_routes or []),
    ]
    # The headers go outermost, so the Host and body-size refusals carry them too.
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(HostCheck, hosts=allowed_hosts))
    middleware += [Middleware(BodyLimit), Middleware(QuotationCors)]
    app = _ServeApp(
        CachedCandles(service, allowed_hosts),
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            404: _not_found,
            405: _method_not_allowed,
            Exception: _internal_error,
        },
    )
    app.state.service = service
    return app


class _ServeApp(Starlette):
    """Starlette with the fast path of kept candle pages (``CachedCandles``) in front of
    everything else: a polled page costs a few dictionary look-ups, not the middleware,
    the router and a request object."""

    def __init__(self, fast: CachedCandles, **options: Any) -> None:
        super().__init__(**options)
        self._fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = self._fast.answer(scope)
        except Exception:  # a bug there must not cost the answer: the usual way gives it
            logger.exception("the fast path of %s failed", scope.get("path"))
            answer = None
        if answer is None:
            await super().__call__(scope, receive, send)
            return
        start, body = answer
        await send(start)
        await send(body)


class _TransportOnceTlsReady(httpx.AsyncBaseTransport):
    """The client's HTTP transport (``upstream_transport``), made at the first request with
    the TLS context ``tls`` (built on a thread meanwhile)."""

    def __init__(self, tls: concurrent.futures.Future[ssl.SSLContext]) -> None:
        self._tls = tls
        self._inner: httpx.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            try:
                context = await asyncio.wrap_future(self._tls)
            except (OSError, ssl.SSLError) as exc:  # e.g. a bad SSL_CERT_FILE
                raise httpx.ConnectError(f"cannot load CA certificates: {exc}") from exc
            if self._inner is None:  # another request may have made it meanwhile
                self._inner = upstream_transport(verify=context)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


def serve_url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


async def _check_database(db: Path | str) -> None:
    """Open (create, migrate) the database once before a token is written beside it or a
    port is taken: an unusable --db (an SQLite path, a PostgreSQL database that refuses) is
    then one line and exit 2 (StoreError), one out of reach exit 1 (StoreUnavailableError),
    not a failed startup's traceback and uvicorn's exit code 3."""
    if isinstance(db, Path):
        from .._store.sqlite import SQLiteStore

        async with SQLiteStore(db):
            return
    from .._store.postgres import PostgresStore  # psycopg is imported only for PostgreSQL

    async with PostgresStore(db):
        pass


def _kept_in(db_path: Path | None) -> str:
    return "not stored" if db_path is None else f"stored in {token_path(db_path)}"


def exposure_warning(host: str, url: str, read_token: str | None) -> str | None:
    """The start-up warning for listening on ``host`` beyond loopback (None on loopback):
    serve speaks plain HTTP, so tokens and data would cross the network readable."""
    if is_loopback(host):
        return None
    advice = "put a TLS proxy in front (and name it with --allowed-host)"
    if read_token is None:
        advice += ", and give read-only clients a --read-token rather than the admin token"
    return f"serve listens on {url}, beyond loopback, without TLS: {advice}"


def run_serve(
    *,
    upstream: str | Callable[[], contextlib.AbstractContextManager[str]],
    db: str,
    host: str,
    port: int,
    admin_token: str | None,
    read_token: str | None = None,
    allowed_hosts: Sequence[str] = (),
    ws_max_per_ip: int = DEFAULT_MAX_PER_ADDRESS,
    forwarded_allow_ips: Sequence[str] = (),
    keep_secret: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM; prints ``serving on http://HOST:PORT`` once listening.
    ``keep_secret`` is told the admin token once it is known (a generated or stored one too),
    so the logs can redact it.
    ``options`` go to ``ServeService``. ``upstream`` is a base URL, or a context manager
    factory that starts an upstream once the arguments are checked and yields its URL (the
    command line's ``--upstream sim``: serve itself never imports the simulator).
    ``read_token`` (else ``MARKETSPINE_READ_TOKEN``) opens ``/api``'s reads; requests are
    answered for IP addresses, ``localhost``, ``host`` and the ``allowed_hosts`` names.
    Every per-client limit keys on the peer address; only a peer in ``forwarded_allow_ips``
    (a proxy's addresses or networks) is believed about the client behind it
    (``X-Forwarded-For``, read by uvicorn's own proxy-headers middleware).

    Raises InvalidRequestError for an address that cannot be listened on, a bad token or
    host name, StoreError for a database that cannot be used.
    """
    # Loading the CA certificates for the upstream HTTPS client takes 0.1-0.3 s; OpenSSL
    # does it without the GIL, so it runs on a thread while serve starts, rather than in
    # front of the first answer after a restart (which needs no upstream request).
    tls_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tls")
    tls = tls_pool.submit(httpx.create_ssl_context)
    tls_pool.shutdown(wait=False)
    # Bad values fail before anything is written (the database, a token beside it).
    if isinstance(upstream, str):
        check_upstream(upstream, "--upstream", also=", or sim")
    check_db(db, "--db")
    read_token = resolve_read_token(read_token)
    admin_token = given_admin_token(admin_token)
    proxies = proxy_addresses(forwarded_allow_ips)
    # A name to listen on is a name clients use (an address or a wildcard is no name).
    hosts = AllowedHosts([*allowed_hosts, host])
    # A PostgreSQL database has no folder to keep a generated token in: it is printed only.
    db_path = None if is_postgres_url(db) else Path(db).expanduser()
    asyncio.run(_check_database(db_path or db))
    token, generated = resolve_token(admin_token, db_path)
    if keep_secret is not None:
        keep_secret(token)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --host "
            "or --port (--port 0 picks a free one)"
        ) from exc
    url = serve_url(host, sock.getsockname()[1])
    warning = exposure_warning(host, url, read_token)
    if warning is not None:
        logger.warning(warning)

    with contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        if not isinstance(upstream, str):
            upstream = stack.enter_context(upstream())
        if options.get("transport") is None:
            # One for each connection pool the client makes (a new one replaces a pool
            # with an HTTP/2 request given up on), all on the one TLS context.
            options["transport"] = lambda: _TransportOnceTlsReady(tls)
        service = ServeService(
            upstream, db_path or db, admin_token=token, read_token=read_token, **options
        )
        app = create_service_app(service, ws_max_per_ip=ws_max_per_ip, allowed_hosts=hosts)

        def started() -> None:  # listening now: tell whoever started us where
            if generated:
                print(f"admin token (generated, {_kept_in(db_path)}): {token}", flush=True)
            print(f"serving on {url}", flush=True)

        run_server(
            app,
            sock,
            on_started=started,
            quiet_signals=True,
            timeout_graceful_shutdown=5,
            ws_ping_interval=None,
            # Clients are on this host: compressing every frame once per client would
            # cost the WebSocket fan-out more CPU than the bytes are worth.
            ws_per_message_deflate=False,
            # The protocol layer's bound on a client's message (the gateway refuses one
            # over MAX_REQUEST_BYTES with Upbit's error frame; anything much larger is
            # closed with 1009 before it is even buffered whole).
            ws_max_size=4 * MAX_REQUEST_BYTES,
            # X-Forwarded-For is believed only from the named proxies; without any,
            # uvicorn's default (trust 127.0.0.1) would let every local client pick
            # the address the login throttle and --ws-max-per-ip count it under.
            proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies or None,
        )
