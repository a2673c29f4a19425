"""``marketspine serve`` speaks HTTP/2 to an upstream that offers it, as its Spine does: serve
gives the client transports of its own (the TLS context loaded on a thread, every request
counted for /metrics), and those left HTTP/2 and the 55 s keep-alive out, so serve alone
opened a connection for each page sent together. Against the simulator served over TLS by
hypercorn (``tls_support``)."""

from __future__ import annotations

import asyncio
import os
from functools import partial
from pathlib import Path

import pytest
from serve_support import AUTH, TOKEN, serve_process
from tls_support import Versions, tls_server

from marketspine.sim import SimConfig, create_app

pytestmark = pytest.mark.process


async def test_serve_reads_an_http2_upstream_on_one_connection(
    server_cert: Path, tmp_path: Path
) -> None:
    app = Versions(create_app(SimConfig(rate_limit=0)))
    async with tls_server(app, server_cert) as upstream:
        # The simulator runs on this loop: serve is started and asked from threads.
        manager = serve_process(
            upstream, tmp_path / "s.db", "--admin-token", TOKEN, env=dict(os.environ)
        )
        served = await asyncio.to_thread(manager.__enter__)
        try:
            answer = await asyncio.to_thread(
                served.get, "/v1/candles/minutes/1", market="KRW-BTC", count=200
            )
            assert answer.status_code == 200 and len(answer.json()) == 200
            history = await asyncio.to_thread(
                partial(served.get, "/api/candles", headers=AUTH),
                market="KRW-ETH",
                timeframe="1m",
                count=1000,
            )
            assert history.status_code == 200, history.text
            metrics = (await asyncio.to_thread(served.get, "/metrics")).text
        finally:
            await asyncio.to_thread(manager.__exit__, None, None, None)
    assert "marketspine_upstream_requests_total" in metrics  # counted as before
    assert len(app.seen) >= 1 + 1000 // 200  # the ETH pages went out, several together
    assert {version for version, _ in app.seen} == {"2"}
    assert len({port for _, port in app.seen}) == 1
