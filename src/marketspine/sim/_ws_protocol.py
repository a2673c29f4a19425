"""The server side of the simulator's WebSocket faults, as an ASGI extension.

A stall must look like a dead peer: nothing sent, and pings no longer answered. An ASGI
app cannot stop its server from answering pings, so the simulator runs uvicorn with this
protocol class (uvicorn's documented ``Config(ws=...)`` hook, here its sans-I/O websockets
protocol) which offers, in ``scope["extensions"][LINK_EXTENSION]``:

- ``{"type": STALL_MESSAGE}`` sent by the app: stop reading the socket (pings pile up
  unanswered in the kernel's buffer);
- ``last_received``: a callable giving the ``time.monotonic()`` of the last bytes received,
  protocol pings included (the idle timeout counts them as activity).

A cut needs no extension: an app that returns after the handshake without a close message
makes uvicorn close the TCP connection without a close frame (the client sees 1006).
"""

from __future__ import annotations

import time
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

__all__ = ["LINK_EXTENSION", "STALL_MESSAGE", "LinkWebSocketProtocol"]

LINK_EXTENSION = "marketspine.sim.link"
STALL_MESSAGE = "marketspine.sim.link.stall"


class LinkWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol plus the ``LINK_EXTENSION`` described above."""

    last_received = 0.0

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        super().data_received(data)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the upgrade was refused
        if scope is not None:
            # The app task is created but has not run yet: it sees the extension.
            scope["extensions"][LINK_EXTENSION] = {"last_received": self._last_received}

    def _last_received(self) -> float:
        return self.last_received

    async def send(self, message: Any) -> None:
        if message["type"] == STALL_MESSAGE:
            self.transport.pause_reading()
            return
        await super().send(message)
