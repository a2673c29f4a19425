"""A hang among serve's very first upstream requests (no round trips measured yet) is given
up on and retried within the 8 s a client waits for its answer: the client gets its page,
not a 429 (in-process serve and simulator; real time, about 3 s)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette


class HangFirst(httpx.AsyncBaseTransport):
    """The simulator in-process, its first request left unanswered until given up on."""

    def __init__(self, app: Starlette) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.hung = 0
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.sent == 1:
            self.hung += 1
            await asyncio.Event().wait()  # never answered: cancelled by the client's timeout
        return await self._inner.handle_async_request(request)


async def test_a_hung_first_upstream_request_is_retried_within_the_clients_wait(
    sim_app: Starlette, tmp_path: Path
) -> None:
    upstream = HangFirst(sim_app)
    async with in_process_serve(upstream, tmp_path / "serve.db") as service:
        timeouts = service.spine.client.statistics()
        # Nothing measured yet: a hung attempt, its backoff and its retry fit in the wait.
        assert 2 * timeouts.timeout_s < service.max_wait_s, timeouts
        async with service_client(service) as http:
            reply = await http.get("/v1/ticker", params={"markets": "KRW-BTC"})
        stats = service.spine.client.statistics()
    assert reply.status_code == 200, reply.text
    assert reply.json()[0]["market"] == "KRW-BTC"
    assert upstream.hung == 1 and upstream.sent == 2
    assert stats.timed_out == 1 and stats.retries == 1
