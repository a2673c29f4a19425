"""A request's head is bounded with httptools as with h11 (``_serve.http_head``): a request
line and headers past 16 KiB get 431 and a closed connection, whatever follows; up to it they
are answered, on one keep-alive connection again and again; the body is not counted."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from marketspine._serve.http_head import MAX_HEAD_BYTES, BoundedHttpTools
from marketspine._serve.server_thread import _http_protocol, server_thread

pytestmark = pytest.mark.timeout(30)


async def _echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(request.headers.get('x-pad', ''))} {len(body)}")


@pytest.fixture
def address() -> Iterator[tuple[str, int]]:
    with server_thread(Starlette(routes=[Route("/", _echo, methods=["GET", "POST"])])) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        yield parts.hostname, parts.port


def _request(pad: int, body: bytes = b"") -> bytes:
    head = f"POST / HTTP/1.1\r\nHost: localhost\r\nX-Pad: {'a' * pad}\r\n"
    return head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """One response: its status and body (read by its content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = dict(line.partition(b": ")[::2] for line in lines[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def test_serve_runs_httptools_with_the_bound() -> None:
    assert _http_protocol() is BoundedHttpTools  # httptools comes with the serve extra


def test_heads_up_to_the_bound_are_answered_on_one_connection_again_and_again(
    address: tuple[str, int],
) -> None:
    pad = MAX_HEAD_BYTES - 200  # the rest of the head fits in the 200 bytes left
    with socket.create_connection(address, timeout=10) as sock:
        for _ in range(5):  # each request's count starts afresh
            sock.sendall(_request(pad))
            assert _answer(sock) == (200, f"{pad} 0".encode())


def test_a_head_past_the_bound_gets_431_and_a_closed_connection(
    address: tuple[str, int],
) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(_request(MAX_HEAD_BYTES + 1))
        status, body = _answer(sock)
        assert status == 431, body
        assert b"16384" in body
        assert sock.recv(1) == b""  # closed


def test_a_head_that_never_ends_is_cut_off_at_the_bound(address: tuple[str, int]) -> None:
    # It used to be taken whole: a 100 MB header grew the process by 100 MB.
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: ")
        sent = 0
        try:
            while sent < 10 * 2**20:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 10 * 2**20, "the server took 10 MiB of one header"


def test_the_body_is_not_counted_as_head(address: tuple[str, int]) -> None:
    body = b"x" * (4 * MAX_HEAD_BYTES)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(_request(100, body))
        assert _answer(sock) == (200, f"100 {len(body)}".encode())
        sock.sendall(_request(100))  # and the next head is counted afresh
        assert _answer(sock) == (200, b"100 0")
