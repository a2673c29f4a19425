"""Closing a stream stops its connection loop even when the cancellation is swallowed
inside a connection (Python 3.11's TaskGroup does that when a child fails at the same
moment, as when a stream closes while its last subscription goes): the loop must not
connect again and wait forever, which would hang ``serve``'s shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import marketspine._live.stream as stream_module
from marketspine._live.stream import Stream


async def test_closing_stops_the_loop_even_when_a_connection_swallowed_the_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Stream("ws://127.0.0.1:9/websocket/v1")
    connections = 0
    entered = asyncio.Event()

    async def connect(*args: Any, **kwargs: Any) -> object:
        return object()

    async def serve(ws: object) -> tuple[Any, bool]:
        nonlocal connections
        connections += 1
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if connections > 1:
                raise
            # The first one swallows it, as the 3.11 TaskGroup does when a child raised
            # at the same moment.
        return stream_module._ConnectionLost("nothing subscribed"), False

    monkeypatch.setattr(stream_module, "connect", connect)
    monkeypatch.setattr(stream, "_serve", serve)
    await stream.__aenter__()
    await stream.subscribe("trade", "KRW-BTC")
    await entered.wait()
    closing = asyncio.create_task(stream.__aexit__(None, None, None))
    await asyncio.wait({closing}, timeout=10)
    closed = closing.done()
    if not closed:  # the loop swallowed it: cancel again, which the next connection honours
        closing.cancel()
        await asyncio.wait({closing}, timeout=10)
    assert closed, "closing the stream hung: the connection loop went on"
    assert connections == 1, "no new connection after the close"
