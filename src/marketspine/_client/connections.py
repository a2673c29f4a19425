"""The HTTP connections to upstream: one httpx client for new requests, and the ones retired
from that role until their last request ends.

Upbit speaks HTTP/2 (ALPN), so a client holds one connection that every request shares.
httpcore (1.0.9) handles two ends of an HTTP/2 connection worse than HTTP/1.1's:

- It never resets a stream it gives up on (a timeout, a cancelled caller;
  encode/httpcore#1022): the stream stays open in its h2 state, and once as many are open
  as the server allows (100 or so) every request on that connection fails at once with
  "Max outbound streams is N, N open", for as long as the connection lives. So a request
  given up on over HTTP/2 retires its client: new requests open a new connection (one
  handshake, as HTTP/1.1 pays after a timeout too), the requests still running on the old
  one finish there, and the old one is closed as the last of them ends, which also ends
  whatever the server was still holding for it.
- It does not notice that the server ended an idle connection (an idle timeout, a GOAWAY;
  it does for HTTP/1.1), so the next request on it fails with "Server disconnected". Such
  a failure on a connection that had answered before is ``ConnectionEnded``: the request
  chain tries again at once on a new connection rather than backing off and counting an
  upstream failure. A server that fails its connections' first requests is not forgiven.

A new client needs a new connection pool, so each client gets a transport of its own: made
by ``upstream_transport``, or by the function given instead (serve counts every upstream
request in one). A transport given as an object (a test's ``httpx.ASGITransport``) is the
caller's: every client shares it, and none is retired.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable

import httpx

from ..errors import ClosedError, InvalidRequestError, UpstreamError

__all__ = [
    "IDLE_S",
    "LIMITS",
    "ConnectionEnded",
    "Connections",
    "TransportMaker",
    "Transports",
    "upstream_transport",
]

IDLE_S = 55.0  # how long an idle connection to upstream is kept for reuse
# A connection idle up to IDLE_S is reused: at httpx's 5 s, a request every 8 s at 200 ms
# from Seoul paid TCP and TLS handshakes each time (606 ms, 3 round trips, not 1). One the
# server closed meanwhile is replaced (over HTTP/1.1 httpcore sees it closed; over HTTP/2
# its next request fails and goes again at once, above); kept under the 60 s servers
# commonly keep one.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=IDLE_S)

# A function making a transport for each client (one connection pool each).
TransportMaker = Callable[[], httpx.AsyncBaseTransport]
# What a Client is given: such a function, one transport for every client, or None (ours).
Transports = httpx.AsyncBaseTransport | TransportMaker | None


def upstream_transport(verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """httpx's HTTP transport as upstream is spoken to (``verify``: the TLS context, by
    default the CA certificates of ``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's).
    Raises InvalidRequestError when those certificates cannot be loaded."""
    try:
        return httpx.AsyncHTTPTransport(
            verify=verify,
            # Upbit speaks HTTP/2 (ALPN; plain HTTP and servers without it stay on 1.1):
            # the pages of a cold read sent together share one connection, so a new
            # process pays the TCP and TLS handshakes once, not once a page (bench cold).
            http2=True,
            limits=LIMITS,
        )
    except OSError as exc:  # ssl.SSLError too: a missing or unreadable CA file
        given = [f"{name}={os.environ[name]}" for name in _CA_VARIABLES if os.environ.get(name)]
        raise InvalidRequestError(
            f"cannot load the CA certificates that check upstream's TLS certificate "
            f"({', '.join(given) or 'certifi'}): {exc}; point SSL_CERT_FILE at a PEM file "
            "of CA certificates, or unset it"
        ) from exc


_CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")  # what httpx reads for its CA certificates


class ConnectionEnded(UpstreamError):
    """Upstream ended an HTTP/2 connection that had answered before: try again at once."""


class Connections:
    """Sends GETs on the current client, made by ``make`` with a transport from
    ``transports``; see the module docstring."""

    def __init__(
        self,
        make: Callable[[httpx.AsyncBaseTransport], httpx.AsyncClient],
        transports: Transports = None,
    ) -> None:
        if isinstance(transports, httpx.AsyncBaseTransport):
            shared = transports
            self._make: Callable[[], httpx.AsyncClient] = lambda: make(shared)
            self._renewable = False
        else:
            new_transport = transports or upstream_transport
            self._make = lambda: make(new_transport())
            self._renewable = True
        self._current: httpx.AsyncClient | None = None
        self._running: dict[httpx.AsyncClient, int] = {}  # requests on each client
        self._answered: set[httpx.AsyncClient] = set()  # clients that have answered
        self._retired: list[httpx.AsyncClient] = []
        self._http2 = False  # the last answer came over HTTP/2
        self.retired = 0  # clients retired so far (``Client.statistics``)

    def open(self) -> None:
        self._current = self._make()

    @property
    def is_open(self) -> bool:
        return self._current is not None

    async def send(
        self, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        """``request`` on the current client (its failures are UpstreamError, as
        ``replies.send_get`` raises them). Over HTTP/2, a request given up on retires the
        client, and one failed because upstream ended a connection that had answered
        before raises ConnectionEnded."""
        http = self._current
        if http is None:
            raise ClosedError("the Client is not open: use it as `async with Client(...)`")
        http2, answered = self._http2 and self._renewable, http in self._answered
        self._running[http] = self._running.get(http, 0) + 1
        try:
            response = await request(http)
        except BaseException as exc:
            if http2:
                self._retire(http)
                if answered and _ended_by_server(exc):
                    raise ConnectionEnded(
                        f"{exc} (upstream ended an HTTP/2 connection that had answered "
                        "before: an idle timeout or a GOAWAY; trying a new one)",
                        retry_after=None,
                    ) from exc
            raise
        finally:
            left = self._running.get(http, 1) - 1
            if left:
                self._running[http] = left
            else:
                del self._running[http]
                if http in self._retired:  # its last request: close it now
                    self._retired.remove(http)
                    self._answered.discard(http)
                    # A connection that fails to close is gone all the same; the request's
                    # own outcome is what its caller must see.
                    with contextlib.suppress(Exception):
                        await http.aclose()
        self._http2 = response.http_version == "HTTP/2"
        self._answered.add(http)
        return response

    def _retire(self, http: httpx.AsyncClient) -> None:
        """Leave ``http`` to its running requests; new ones go on a new client. Only the
        client in use retires: others given up on in the same burst ran on the same
        connection, already retired."""
        if http is self._current:
            self._retired.append(http)
            self._current = self._make()
            self.retired += 1

    async def aclose(self) -> None:
        """Close every client (idempotent), and with them their transports: a shared one
        (given as an object) too, as httpx closes a client's transport."""
        clients = self._retired + ([self._current] if self._current is not None else [])
        self._current, self._retired = None, []
        self._running.clear()
        self._answered.clear()
        for http in clients:
            await http.aclose()


# What a request on a connection the server ended meets: its close or GOAWAY ("Server
# disconnected"), or a reset when a load balancer drops it without a word.
_ENDED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def _ended_by_server(exc: BaseException) -> bool:
    """``exc`` (from ``send_get``) says the connection ended under the request."""
    return isinstance(exc, UpstreamError) and isinstance(exc.__cause__, _ENDED)
