"""A stream's connection loop stops when cancelled, even when the cancellation is swallowed
inside a connection (Python 3.11's TaskGroup does that when a child fails at the same
moment, as when a stream closes while its last subscription goes). Before the fix the loop
went on waiting and ``serve``'s shutdown hung."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import marketspine._stream as stream_module
from marketspine._stream import Stream


async def test_a_cancel_swallowed_inside_a_connection_still_stops_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Stream("ws://127.0.0.1:9/websocket/v1")
    connections = 0
    entered = asyncio.Event()

    async def connect(*args: Any, **kwargs: Any) -> object:
        return object()

    async def serve_swallowing_the_cancel(ws: object) -> tuple[Any, bool]:
        nonlocal connections
        connections += 1
        entered.set()
        # Swallowed, as the 3.11 TaskGroup does when a child raised at the same moment.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return stream_module._ConnectionLost("nothing subscribed"), False

    monkeypatch.setattr(stream_module, "connect", connect)
    monkeypatch.setattr(stream, "_serve", serve_swallowing_the_cancel)
    stream._wanted.set()
    loop = asyncio.create_task(stream._run())
    await entered.wait()
    loop.cancel()
    await asyncio.wait({loop}, timeout=10)
    stopped = loop.done()
    if not stopped:  # the bug: it went on; stop the test's own task for good
        stream._wanted.clear()
        loop.cancel()
    assert stopped and loop.cancelled(), "the cancelled connection loop went on"
    assert connections == 1, "no new connection after the cancel"
