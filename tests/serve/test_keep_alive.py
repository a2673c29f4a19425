"""Every server here (serve, the simulator, replay) keeps an idle keep-alive connection open
longer than the clients' connection pools keep it, so the client ends an idle connection, not
the server.

When both end it after the same idle time (uvicorn's default 5 s, httpx's pool's 5 s), a client
reusing the connection as the server closes it loses that request: "Server disconnected
without sending a response". httpx clients polling serve every 5 s lost 32 of 1,100 requests
so, and a client load with a slow upstream answer in a round lost one in 5,000.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from marketspine._serve.server_thread import _DEFAULTS, server_thread

pytestmark = pytest.mark.timeout(30)


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.fixture
def address() -> Iterator[tuple[str, int]]:
    with server_thread(Starlette(routes=[Route("/", _hello)])) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        yield parts.hostname, parts.port


def _get(sock: socket.socket) -> bytes:
    """Send one GET and read its whole answer (a 5-byte body)."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while not data.endswith(b"hello"):
        chunk = sock.recv(4096)
        assert chunk, f"closed before the answer ended: {data!r}"
        data += chunk
    return data


def _aiohttp_idle_s() -> float:
    async def read() -> float:
        connector = aiohttp.TCPConnector()
        try:
            idle_s = connector._keepalive_timeout  # its default, 15 s in aiohttp 3.x
            assert idle_s is not None
            return idle_s
        finally:
            await connector.close()

    return asyncio.run(read())


def _httpx_idle_s() -> float:
    idle_s = httpx.Limits().keepalive_expiry  # its pool's default, 5 s
    assert idle_s is not None
    return idle_s


def test_the_server_keeps_an_idle_connection_longer_than_client_pools_do() -> None:
    keep_alive_s = float(_DEFAULTS["timeout_keep_alive"])
    assert keep_alive_s > _httpx_idle_s() + 1  # the official SDK's, ours
    assert keep_alive_s > _aiohttp_idle_s() + 1  # ccxt's async clients', the SDK's on aiohttp


def test_a_connection_idle_past_the_client_pools_expiry_is_still_answered(
    address: tuple[str, int],
) -> None:
    idle_s = _httpx_idle_s() + 0.5
    with socket.create_connection(address, timeout=10) as sock:
        assert b" 200 " in _get(sock)
        # Readable before the idle time ends means the server closed it: fail at once.
        readable, _, _ = select.select([sock], [], [], idle_s)
        assert not readable, "the server closed the idle connection"
        assert b" 200 " in _get(sock)
