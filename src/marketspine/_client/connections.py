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
  one finish there, and the old one is closed once they have, which also ends whatever the
  server was still holding for it.
- It does not notice that the server ended an idle connection (an idle timeout, a GOAWAY;
  it does for HTTP/1.1), so the next request on it fails with "Server disconnected". Such
  a failure on a connection that had answered before is ``ConnectionEnded``: the request
  chain tries again at once on a new connection rather than backing off and counting an
  upstream failure. A server that fails its connections' first requests is not forgiven.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from ..errors import ClosedError, UpstreamError

__all__ = ["ConnectionEnded", "Connections"]


class ConnectionEnded(UpstreamError):
    """Upstream ended an HTTP/2 connection that had answered before: try again at once."""


class Connections:
    """Sends GETs on the current client made by ``make``; see the module docstring."""

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self._make = make
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
        await self._close_finished()
        http = self._current
        if http is None:
            raise ClosedError("the Client is not open: use it as `async with Client(...)`")
        http2, answered = self._http2, http in self._answered
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

    async def _close_finished(self) -> None:
        """Close the retired clients whose requests have all ended (here, at the next
        request, rather than in a task of their own)."""
        for http in [http for http in self._retired if http not in self._running]:
            self._retired.remove(http)
            self._answered.discard(http)
            await http.aclose()

    async def aclose(self) -> None:
        """Close every client (idempotent)."""
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
