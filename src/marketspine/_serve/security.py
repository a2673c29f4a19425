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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import msgspec
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidRequestError

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PLOTLY_MAPLIBRE_STYLE",
    "SECURITY_HEADERS",
    "AllowedHosts",
    "HostCheck",
    "SecurityHeaders",
    "host_name",
    "is_loopback",
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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
