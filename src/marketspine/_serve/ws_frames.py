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
_OPEN = State.OPEN


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

    __slots__ = ("_conn", "_transport", "_writable")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        # Both are set once the connection is made, before the ASGI app runs.
        self._conn = protocol.conn
        self._transport = protocol.transport
        # uvicorn's flow control: cleared while the transport's buffer is over its high
        # water mark, set again once it drained (or the connection was lost).
        self._writable = protocol.writable

    def write(self, frame: bytes) -> int:
        """Write ``frame`` (from ``binary_frame``) now; returns how many bytes were waiting
        in the transport before it (0 while the client keeps up), or -1, writing nothing,
        once the connection is closing or closed."""
        # Every way uvicorn closes leaves the connection's state past OPEN (a close frame
        # sent or received) or the transport closing (lost, aborted, shut down), so its
        # own close_sent and disconnected flags need no reading here, once per frame.
        transport = self._transport
        if self._conn.state is not _OPEN or transport.is_closing():
            return -1
        waiting = transport.get_write_buffer_size()
        transport.write(frame)
        return waiting

    def writable(self) -> bool:
        """False while the socket's buffers are full (the client is not reading)."""
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        """Return once the socket takes frames again (or the connection is gone)."""
        await self._writable.wait()

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket (0 while the client keeps up)."""
        return self._transport.get_write_buffer_size()


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
