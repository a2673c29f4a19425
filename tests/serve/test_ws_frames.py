"""Pre-built WebSocket frames written straight to the transport (``_ws_frames``): what a
real client reads is exactly the payloads, in order with frames sent through ASGI, across
the three length encodings; a server without the extension offers nothing."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from marketspine._serve.server_thread import server_thread
from marketspine._serve.ws_frames import binary_frame, raw_frames

pytestmark = pytest.mark.timeout(30)

# 125/126 and 65535/65536 bytes are where the length takes 2 and then 8 more bytes.
SIZES = [0, 5, 125, 126, 1000, 65535, 65536, 70_000]


def _app(seen: list[Any]) -> Starlette:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        raw = raw_frames(websocket.scope)
        seen.append(raw)
        await websocket.send_bytes(b"through asgi")
        for size in SIZES:
            if raw is not None:
                assert raw.write(binary_frame(bytes([size % 251]) * size)) >= 0
        await websocket.send_bytes(b"asgi again")
        await websocket.receive()  # until the client leaves
        if raw is not None:
            assert raw.write(binary_frame(b"late")) == -1  # closed: nothing written

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


async def test_raw_frames_reach_a_real_client_in_order() -> None:
    seen: list[Any] = []
    with server_thread(_app(seen)) as url:
        async with connect(url.replace("http", "ws") + "/ws", compression=None) as ws:
            got = [await ws.recv() for _ in range(len(SIZES) + 2)]
    assert got[0] == b"through asgi" and got[-1] == b"asgi again"
    assert got[1:-1] == [bytes([size % 251]) * size for size in SIZES]
    assert seen[0] is not None and seen[0].buffered() == 0


async def test_nothing_is_written_after_the_close_frame() -> None:
    # Once serve has sent its close frame the socket stays open for the client's reply,
    # but no data frame may follow (RFC 6455 5.5.1).
    seen: list[Any] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        raw = raw_frames(websocket.scope)
        assert raw is not None
        assert raw.write(binary_frame(b"before")) >= 0
        await websocket.close(1000, "done")
        seen.append(raw.write(binary_frame(b"after")))

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    with server_thread(app) as url:
        async with connect(url.replace("http", "ws") + "/ws", compression=None) as ws:
            assert await ws.recv() == b"before"
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
    assert ws.close_code == 1000 and ws.close_reason == "done"
    assert seen == [-1]


def test_no_writer_is_offered_by_other_servers() -> None:
    # Any other ASGI server's scope (extensions of its own, or none): handlers send through ASGI.
    assert raw_frames({"type": "websocket", "extensions": {"websocket.http.response": {}}}) is None
    assert raw_frames({"type": "websocket"}) is None
