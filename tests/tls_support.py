"""An HTTP/2 upstream for tests: an ASGI app (the simulator) served over TLS by hypercorn,
which speaks HTTP/2 as api.upbit.com does (uvicorn speaks HTTP/1.1 only), with a certificate
from a test-only CA (trustme) that the process trusts through ``SSL_CERT_FILE``, as a
user's corporate CA would be. ``server_cert`` is a fixture (conftest imports it); hypercorn
and trustme (with cryptography) take 0.3 s to import, so they are imported where used, not
in every test process."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send


class Versions:
    """An ASGI app in front of ``app`` recording each HTTP request's protocol version and
    client port (one port per connection)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            self.seen.append((scope["http_version"], scope["client"][1]))
        await self.app(scope, receive, send)


@pytest.fixture
def server_cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A certificate for 127.0.0.1 (with its key) from a test CA this process trusts (and
    the processes it starts: ``SSL_CERT_FILE`` is in the environment)."""
    import trustme

    ca = trustme.CA()
    cert = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    return cert


@asynccontextmanager
async def tls_server(
    app: Any,
    cert: Path | None,
    alpn: tuple[str, ...] = ("h2", "http/1.1"),
    max_streams: int = 100,
    keep_alive_s: float = 75.0,
) -> AsyncIterator[str]:
    """``app`` served by hypercorn over TLS with ``cert`` (plain HTTP without) on a free
    loopback port, offering ``alpn``, at most ``max_streams`` concurrent HTTP/2 streams a
    connection, and ending a connection idle ``keep_alive_s``; yields its base URL."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn closes it
    if cert is not None:
        config.certfile = config.keyfile = str(cert)
    config.alpn_protocols = list(alpn)
    config.h2_max_concurrent_streams = max_streams
    config.keep_alive_timeout = keep_alive_s
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    try:
        yield f"{'http' if cert is None else 'https'}://127.0.0.1:{port}"
    finally:
        stop.set()
        await server
