"""Run an ASGI app with uvicorn: in the foreground until stopped, or on a background thread
for as long as a ``with`` block lasts (tests, the demo, anything embedding a server).

One place for what every server here needs: a socket bound before uvicorn starts (so port 0
gives a real port to announce), a clear error when the address cannot be listened on, a
startup that is waited for and a shutdown that is joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from ..errors import InvalidRequestError
from .ws_frames import FramesProtocol

__all__ = ["base_url", "listen", "run_server", "server_thread"]

# uvicorn options every server here shares; callers add or override their own.
_DEFAULTS: dict[str, Any] = {
    "log_level": "warning",
    # No handlers of uvicorn's own: its lines (a malformed request, a refused head) reach the
    # root logger's, formatted (--log-format json) and with secrets redacted as ours are.
    "log_config": None,
    "lifespan": "on",
    "timeout_graceful_shutdown": 1,
    # Longer than clients' pools keep an idle connection (httpx 5 s, aiohttp 15 s), so the
    # client ends it: at uvicorn's 5 s a client reusing it as the server closed it lost the
    # request (3% of requests from httpx clients polling every 5 s). nginx's default.
    "timeout_keep_alive": 75,
    "ws": FramesProtocol,  # WebSocket handlers may write pre-built frames (``_serve.ws_frames``)
}
_STARTUP_TIMEOUT_S = 20.0


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0 picks a free port). Raises
    InvalidRequestError naming the address when it cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidRequestError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --host "
            "or --port (--port 0 picks a free one)"
        ) from exc
    return sock


def base_url(sock: socket.socket, scheme: str = "http") -> str:
    """``scheme://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, told when it started, and stopped at once when asked (uvicorn
    itself looks at ``should_exit`` only every 0.1 s). With ``quiet_signals`` SIGINT and
    SIGTERM end it gracefully and that is all: uvicorn re-raises the signal afterwards."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None] | None,
        *,
        quiet_signals: bool = False,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._quiet_signals = quiet_signals
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._quiet_signals:
            with super().capture_signals():
                yield
            return
        # As uvicorn's, minus re-raising the signal afterwards: for a server run from the
        # command line SIGINT and SIGTERM are its normal way to stop.
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def main_loop(self) -> None:
        # uvicorn's loop (a tick every 0.1 s), woken early by a stop.
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._wake.wait()
            should_exit = await self.on_tick(counter)

    def stop(self) -> None:
        """Ask the server to stop, from any thread."""
        self.should_exit = True
        self._wake_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._wake_loop()

    def _wake_loop(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._wake.set)


def _server(
    app: Any,
    on_started: Callable[[], None] | None,
    options: dict[str, Any],
    *,
    quiet_signals: bool = False,
) -> _Server:
    config = uvicorn.Config(app, **{**_DEFAULTS, "http": _http_protocol(), **options})
    return _Server(config, on_started, quiet_signals=quiet_signals)


def _http_protocol() -> Any:
    """uvicorn's httptools protocol with a bound on a request's head when httptools is
    installed (the ``serve`` extra), else its h11 one (which has that bound itself)."""
    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from .http_head import BoundedHttpTools  # imports httptools

    return BoundedHttpTools


def run_server(
    app: Any,
    sock: socket.socket,
    *,
    on_started: Callable[[], None] | None = None,
    quiet_signals: bool = False,
    **options: Any,
) -> None:
    """Serve ``app`` on ``sock`` (from ``listen``) in this thread until SIGINT/SIGTERM;
    ``on_started`` runs once connections are accepted; with ``quiet_signals`` the signal
    is not raised again once the server has stopped. ``options`` are uvicorn.Config
    keywords. Closes ``sock`` on return."""
    server = _server(app, on_started, options, quiet_signals=quiet_signals)
    with contextlib.closing(sock):
        server.run(sockets=[sock])


@contextlib.contextmanager
def server_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = _STARTUP_TIMEOUT_S,
    **options: Any,
) -> Iterator[str]:
    """Serve ``app`` on a background thread for the duration of the block; yields the base
    URL (``http://127.0.0.1:PORT`` with the real port). Stops the server and joins the
    thread on exit. Raises InvalidRequestError when the address cannot be listened on and
    RuntimeError when the server does not start within ``startup_timeout_s``."""
    sock = listen(host, port)
    url = base_url(sock)
    started = threading.Event()
    server = _server(app, started.set, options)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"server:{url}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not started.wait(0.05):
            if not thread.is_alive():
                raise RuntimeError(f"the server thread for {url} ended before it started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server for {url} did not start in {startup_timeout_s} s")
        yield url
    finally:
        server.stop()
        thread.join(timeout=15)
        sock.close()
