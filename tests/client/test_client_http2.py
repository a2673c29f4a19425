"""The client speaks HTTP/2 where upstream offers it, as api.upbit.com does: the pages of a
cold read sent together travel on one connection and pay its handshakes once. Against the
simulator served over TLS by hypercorn (an HTTP/2 server) with a certificate from a
test-only CA (trustme), which the client trusts through ``SSL_CERT_FILE`` as a user's
corporate CA would be."""

from __future__ import annotations

import asyncio
import select
from pathlib import Path

import httpx
import psutil
import pytest
from helpers import wait_until
from tls_support import Versions, tls_server

from marketspine import CircuitBreaker, Client, RetryPolicy, Spine
from marketspine._client.connections import ConnectionEnded, Connections
from marketspine._client.replies import send_get
from marketspine.errors import UpstreamError
from marketspine.sim import SimConfig, create_app

COUNT = 1000


async def cold_read(url: str, db: Path) -> int:
    async with Spine(url, db, warmup_every_s=0) as spine:
        return len(await spine.candles("KRW-BTC", "1m", count=COUNT))


async def test_a_cold_reads_pages_share_one_http2_connection(
    tmp_path: Path, server_cert: Path
) -> None:
    app = Versions(create_app(SimConfig(rate_limit=0)))
    async with tls_server(app, server_cert) as url:
        assert await cold_read(url, tmp_path / "h2.db") == COUNT
    assert len(app.seen) >= COUNT // 200  # the pages were asked, several of them together
    assert {version for version, _ in app.seen} == {"2"}
    assert len({port for _, port in app.seen}) == 1


async def test_a_server_without_http2_is_read_over_http11(
    tmp_path: Path, server_cert: Path
) -> None:
    app = Versions(create_app(SimConfig(rate_limit=0)))
    async with tls_server(app, server_cert, ("http/1.1",)) as url:
        assert await cold_read(url, tmp_path / "h1.db") == COUNT
    assert len(app.seen) >= COUNT // 200
    assert {version for version, _ in app.seen} == {"1.1"}
    # Pages sent together go on connections of their own: what HTTP/2 spares.
    assert len({port for _, port in app.seen}) > 1


async def test_a_plain_http_upstream_is_read_over_http11(tmp_path: Path) -> None:
    # The simulator and serve are plain HTTP: HTTP/2 is asked for by ALPN alone, never by
    # an upgrade or prior knowledge, though this server (hypercorn) would take either.
    app = Versions(create_app(SimConfig(rate_limit=0)))
    async with tls_server(app, None) as url:
        assert await cold_read(url, tmp_path / "plain.db") == COUNT
    assert len(app.seen) >= COUNT // 200
    assert {version for version, _ in app.seen} == {"1.1"}


async def test_requests_given_up_on_over_http2_do_not_wedge_the_connection(
    server_cert: Path,
) -> None:
    # httpcore leaves an HTTP/2 stream it gave up on open: with the server allowing two at
    # once, two hung requests on one connection made every later request on it fail
    # ("Max outbound streams is 2, 2 open") until the process restarted. A connection with
    # a request given up on is left for a new one, and closed once its requests end.
    sim = create_app(SimConfig(rate_limit=0))
    app = Versions(sim)
    hangs = 4
    async with tls_server(app, server_cert, ("h2",), max_streams=2) as url:
        client = Client(
            url,
            timeout=5.0,
            timeout_floor=0.5,
            retry=RetryPolicy(attempts=1),
            breaker=CircuitBreaker(failure_threshold=1000),
        )
        async with client:
            # Ten replies seen, a hung request costs ten times their p99 (at least 0.5 s),
            # not the 5 s a reply may take on a busy machine before.
            for _ in range(10):
                await client.tickers(["KRW-BTC"])
            sim.state.sim.faults.hang_rate = 1.0
            for _ in range(hangs):
                with pytest.raises(UpstreamError, match="timed out"):
                    await client.tickers(["KRW-BTC"])
            # Each retired connection was closed as its request ended, not left open until
            # a next request came.
            assert open_connections(int(url.rsplit(":", 1)[1])) == 0
            sim.state.sim.faults.hang_rate = 0.0
            for _ in range(3):
                assert [t.market for t in await client.tickers(["KRW-BTC"])] == ["KRW-BTC"]
            stats = client.statistics()
    assert stats.timed_out == hangs
    assert stats.connections_retired == hangs
    assert {version for version, _ in app.seen} == {"2"}
    assert len({port for _, port in app.seen}) == hangs + 1


async def test_callers_that_give_up_over_http2_do_not_wedge_the_connection(
    server_cert: Path,
) -> None:
    # The same leak from the caller's side: a request cancelled mid-way (a bot's own
    # timeout, a serve client gone) with the server allowing one stream at once.
    sim = create_app(SimConfig(rate_limit=0))
    app = Versions(sim)
    async with tls_server(app, server_cert, ("h2",), max_streams=1) as url:
        client = Client(url)
        async with client:
            await client.tickers(["KRW-BTC"])
            sim.state.sim.faults.hang_rate = 1.0
            for _ in range(2):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(client.tickers(["KRW-BTC"]), 0.2)
            sim.state.sim.faults.hang_rate = 0.0
            assert [t.market for t in await client.tickers(["KRW-BTC"])] == ["KRW-BTC"]
            assert client.statistics().connections_retired == 2


def open_connections(port: int) -> int:
    """This process's TCP connections to the server at ``port``."""
    return sum(
        1
        for conn in psutil.Process().net_connections("tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def told_to_close(port: int) -> bool:
    """Whether the server at ``port`` has sent something on an idle connection of this
    process: its TLS close, which httpcore does not read until the next request."""
    fds = [
        conn.fd
        for conn in psutil.Process().net_connections("tcp")
        if conn.raddr and conn.raddr.port == port and conn.fd >= 0
    ]
    return bool(fds) and bool(select.select(fds, [], [], 0)[0])


async def test_a_connection_upstream_ended_while_idle_is_replaced_at_once(
    server_cert: Path,
) -> None:
    # httpcore does not notice that the server ended an idle HTTP/2 connection (its idle
    # timeout, as here; a GOAWAY; a restart): the next request on it fails, "Server
    # disconnected". That is not upstream failing: the request goes again at once on a new
    # connection, with no backoff and nothing counted against upstream.
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    app = Versions(create_app(SimConfig(rate_limit=0)))
    async with tls_server(app, server_cert, ("h2",), keep_alive_s=0.2) as url:
        port = int(url.rsplit(":", 1)[1])
        async with Client(url, sleep=sleep) as client:
            await client.tickers(["KRW-BTC"])
            await wait_until(lambda: told_to_close(port), 10, "the server to end the connection")
            assert [t.market for t in await client.tickers(["KRW-BTC"])] == ["KRW-BTC"]
            stats = client.statistics()
    assert slept == []  # no backoff
    assert stats.retries == 1
    assert stats.failed == 0
    assert stats.breaker.consecutive_failures == 0
    assert [version for version, _ in app.seen] == ["2", "2"]
    assert len({port for _, port in app.seen}) == 2


async def test_only_a_connection_that_had_answered_is_forgiven_for_ending() -> None:
    # A server ending connections before their first answer is upstream failing (backed
    # off, counted): only the end of one that had answered over HTTP/2 is ConnectionEnded.
    # Driven by httpx's own MockTransport, one per client: (answers, then disconnects).
    made: list[int] = []

    def new_transport() -> httpx.AsyncBaseTransport:
        made.append(0)
        number = len(made)

        def handle(request: httpx.Request) -> httpx.Response:
            made[number - 1] += 1
            if number == 1 and made[0] == 1:  # the first client answers once
                return httpx.Response(200, json=[], extensions={"http_version": b"HTTP/2"})
            raise httpx.RemoteProtocolError("Server disconnected", request=request)

        return httpx.MockTransport(handle)

    def make(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, base_url="https://up")

    def nothing() -> None:
        pass

    async def get() -> httpx.Response:
        return await connections.send(
            lambda http: send_get(http, "/v1/ticker", (), 5.0, "https://up", nothing)
        )

    connections = Connections(make, new_transport)
    connections.open()
    try:
        assert (await get()).status_code == 200
        with pytest.raises(ConnectionEnded, match="had answered before"):
            await get()  # the first client, which had answered: a new one next
        assert connections.retired == 1
        with pytest.raises(UpstreamError) as failed:
            await get()  # the second, which never answered: not forgiven
        assert not isinstance(failed.value, ConnectionEnded)
    finally:
        await connections.aclose()
    assert made[:2] == [2, 1]
