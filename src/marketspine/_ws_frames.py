"""Pre-framed WebSocket writes for ``serve``'s fan-out: one frame built per event, written
straight to every interested connection's transport.

ASGI sends one message per ``await send(...)``: each goes through Starlette's and uvicorn's
layers and the websockets library frames it again, about 25 µs per client — 5 ms before
the 200th client of one event sees it. The bytes are the same for every client of a format,
so ``serve`` runs uvicorn with ``FramesProtocol``: uvicorn's own WebSocket protocol that
puts a ``RawFrames`` writer into each connection's ASGI scope (the
``marketspine.websocket.frames`` extension, as ASGI lets servers add). A handler that finds
it writes ``binary_frame(payload)`` bytes, built once, to every client without awaiting;
under any other server (Starlette's TestClient) it finds none and sends through ASGI.

Only data frames go this way; the handshake, PING/PONG and the close frame stay with
uvicorn and the websockets protocol object, which keep no state about data frames a server
sends unfragmented.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

__all__ = ["FRAMES_EXTENSION", "FramesProtocol", "RawFrames", "binary_frame", "raw_frames"]

FRAMES_EXTENSION = "marketspine.websocket.frames"


def binary_frame(payload: bytes) -> bytes:
    """``payload`` as one final, unmasked binary frame (RFC 6455 5.2: a server never masks)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x82, size))
    elif size < 1 << 16:
        head = bytes((0x82, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x82, 127)) + size.to_bytes(8, "big")
    return head + payload


class RawFrames:
    """Writes whole frames to one connection's transport, in order with uvicorn's own."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` (from ``binary_frame``) now; returns False, writing nothing,
        once the connection is closing or closed."""
        protocol = self._protocol
        if (
            protocol.close_sent
            or protocol.disconnected
            or protocol.conn.state is not State.OPEN
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(frame)
        return True

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket (0 while the client keeps up)."""
        return self._protocol.transport.get_write_buffer_size()


def raw_frames(scope: Mapping[str, Any]) -> RawFrames | None:
    """The connection's frame writer, when the server offers one."""
    writer = scope.get("extensions", {}).get(FRAMES_EXTENSION)
    return writer if isinstance(writer, RawFrames) else None


class FramesProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (websockets, sans-I/O), offering ``RawFrames``."""

    async def run_asgi(self) -> None:
        extensions = cast(dict[str, Any], self.scope["extensions"])  # ASGI types it narrowly
        extensions[FRAMES_EXTENSION] = RawFrames(self)
        await super().run_asgi()
