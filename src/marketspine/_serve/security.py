"""What ``serve`` does for every request before a route sees it: the ``Host`` check against
DNS rebinding and the security headers on every answer. Both are plain ASGI middleware (no
request object built), so ``/v1`` and ``/websocket/v1`` stay as fast as they were.

DNS rebinding: a web page on ``evil.example`` whose name is made to resolve to 127.0.0.1
can have the browser send requests to a local serve, and read the answers, as that page's
own origin. Every such request carries ``Host: evil.example``: a name serve was not told
about. So a request is served only when its ``Host`` is

- an IP address (a page's origin is then that address, which cannot be rebound),
- ``localhost`` (no page on the internet can have that origin),
- the name serve listens on (``--host NAME``) or one given with ``--allowed-host``
  (for a proxy in front, or a name on the local network);

any port. Anything else gets 403 with an Upbit-shaped body, and a WebSocket handshake is
refused (403 too).

Web pages: Upbit's quotation API can be read by a page of any origin (charts in a browser
call api.upbit.com directly), so serve's ``/v1`` answers carry CORS headers for any origin
(``QuotationCors``): public market data, no credentials. ``/api``, the admin page and
``/metrics`` carry none, so a page elsewhere cannot read them. ``/websocket/v1`` takes any
origin, as Upbit's does (WebSockets have no CORS).

Request bodies: no route of serve takes more than a small JSON object or a login form, so a
body over ``MAX_BODY_BYTES`` is answered 413 before a route sees it, and the connection is
closed rather than the rest read. A body is held in memory only up to that size.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import msgspec
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidRequestError

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "MAX_BODY_BYTES",
    "PLOTLY_MAPLIBRE_STYLE",
    "SECURITY_HEADERS",
    "AllowedHosts",
    "BodyLimit",
    "HostCheck",
    "QuotationCors",
    "SecurityHeaders",
    "foreign_origin",
    "host_name",
    "is_loopback",
    "peer_of",
    "proxy_addresses",
]

# The admin page has no inline script, style or event handler: everything comes from
# serve itself. plotly.js (pinned in pyproject.toml) sets styles through the CSSOM, which
# ``style-src`` does not govern, but it adds two <style> elements of its own: an empty one
# it then fills with ``insertRule`` (the hash of "" below) and MapLibre's stylesheet (the
# second hash; tests/serve/test_lockdown.py checks it against the shipped plotly.min.js).
# Those two hashes, not 'unsafe-inline': no other inline style applies. The browser test
# checks that no violation is reported.
_EMPTY_STYLE = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
PLOTLY_MAPLIBRE_STYLE = "'sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o='"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; "
    f"style-src 'self' {_EMPTY_STYLE} {PLOTLY_MAPLIBRE_STYLE}; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


MAX_BODY_BYTES = 64 * 1024  # a backfill job's JSON or the login form: a few hundred bytes


def host_name(host: str) -> str:
    """The name part of a ``Host`` header or ``--allowed-host`` value: lower-case, without
    the port, the IPv6 brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8600
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:  # not a bare IPv6 address
        host = name
    return host.rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` (an address or ``localhost``) stays on this machine."""
    name = host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def peer_of(connection: HTTPConnection) -> str:
    """The address a client's limits are counted under: the peer's, or the client behind a
    proxy named with ``--forwarded-allow-ips`` (uvicorn has put it in the scope then)."""
    return connection.client.host if connection.client else "unknown"


def foreign_origin(connection: HTTPConnection) -> str | None:
    """The other site a browser says a request comes from, or None when it is this one's or
    unsaid (a script sends neither header). An ``Origin`` must name this ``Host`` (a default
    port written or not), and ``Sec-Fetch-Site`` must say neither ``cross-site`` nor
    ``same-site`` (another port of this host). ``Origin: null`` alone proves nothing:
    serve's own ``Referrer-Policy: no-referrer`` makes browsers send it on their own forms,
    where ``Sec-Fetch-Site`` says ``same-origin``."""
    fetched_from = connection.headers.get("sec-fetch-site", "").lower()
    if fetched_from in ("cross-site", "same-site"):
        return f"a {fetched_from} page"
    origin = connection.headers.get("origin")
    if origin is None or origin == "null":
        return None
    scheme, sep, rest = origin.lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        return origin
    host = connection.headers.get("host", "").lower()
    default = _DEFAULT_PORTS[scheme]
    if rest.rstrip("/").removesuffix(default) != host.removesuffix(default):
        return origin
    return None


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def proxy_addresses(given: Iterable[str]) -> list[str]:
    """The ``--forwarded-allow-ips`` values (repeatable, or comma lists): IP addresses or
    networks of proxies whose ``X-Forwarded-For`` is believed, as uvicorn takes them.

    Raises InvalidRequestError for anything else (a host name, ``*``): trusting every peer
    would let any client choose the address its limits are counted under."""
    found: list[str] = []
    for value in given:
        for part in value.split(","):
            part = part.strip()
            try:
                network = ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise InvalidRequestError(
                    f"--forwarded-allow-ips {part!r} is not an IP address or network: give "
                    "the proxy's, e.g. 127.0.0.1 or 10.0.0.0/8"
                ) from None
            found.append(str(network) if "/" in part else str(network.network_address))
    return found


class AllowedHosts:
    """The ``Host`` values serve answers: IP addresses, ``localhost`` and ``names``."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        wanted = set()
        for given in names:
            name = host_name(given)
            if not name or any(c in name for c in "/ @?#*"):
                raise InvalidRequestError(
                    f"--allowed-host {given!r} is not a host name: give one such as "
                    "spine.example.lan"
                )
            wanted.add(name)
        self.names = frozenset(wanted)

    def allows(self, host: str | None) -> bool:
        if host is None:  # an HTTP/1.0 client without Host: no browser sends that
            return True
        name = host_name(host)
        return name == "localhost" or name in self.names or _is_address(name)


def _refusal(host: str) -> bytes:
    message = (
        f"Host {host!r} is not served here (DNS rebinding protection): "
        "start serve with --allowed-host NAME to accept that name"
    )
    return msgspec.json.encode({"error": {"name": 403, "message": message}})


class HostCheck:
    """Refuses requests and WebSocket handshakes whose ``Host`` ``hosts`` does not allow."""

    def __init__(self, app: ASGIApp, hosts: AllowedHosts) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if self.hosts.allows(host):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        body = _refusal(host or "")
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answers 413 (Upbit-shaped, ``Connection: close``) to a request whose body is over
    ``limit`` bytes: at once when its ``Content-Length`` says so, else (chunked) once that
    much has arrived; the route then never runs. A body within the limit is handed on
    unchanged. Requests without a body (every ``GET`` of ``/v1``) pass untouched."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        if length is None and not chunked:
            await self.app(scope, receive, send)
            return
        if length is not None and not chunked:
            if not length.strip().isdigit() or int(length) > self.limit:
                await self._refuse(send)
                return
            # The server reads no more than Content-Length says: bounded already.
            await self.app(scope, receive, send)
            return
        # Chunked: read it here, up to the limit, then replay it to the route.
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was in
            part = message.get("body", b"")
            size += len(part)
            if size > self.limit:
                await self._refuse(send)
                return
            parts.append(part)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        message = (
            f"request body too large: at most {self.limit} bytes "
            "(serve takes only small JSON bodies and the login form)"
        )
        body = msgspec.json.encode({"error": {"name": 413, "message": message}})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is not read: this connection is done.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class QuotationCors:
    """Starlette's CORS middleware for Upbit's quotation paths (``/v1/...``) alone: any
    origin may read them (``EXPOSED`` and ``expose`` headers too) and ask a preflight for
    ``GET``; every other path passes untouched, so no other origin can read ``/api``, the
    admin page or ``/metrics``."""

    # Besides the headers a page may always read: the budget's, and which layer answered.
    EXPOSED = ("Remaining-Req", "Retry-After", "X-Marketspine-Source", "X-Marketspine-Stale")

    def __init__(self, app: ASGIApp, expose: Sequence[str] = ()) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET"],
            allow_headers=["*"],
            expose_headers=[*self.EXPOSED, *expose],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
