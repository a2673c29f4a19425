"""``ServeService.instruments`` (behind ``/v1/orderbook/instruments`` and
``supported_levels``): instruments held from before are answered with those fetched now, even
when a warmup clears what is held while the fetch is on its way (a full run's
``supported_levels`` once lacked two markets so)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from helpers import wait_until
from serve_support import in_process_serve
from starlette.applications import Starlette

ONLY_XRP = b"markets=KRW-XRP"


class HeldInstruments:
    """The simulator, with the instruments request of KRW-XRP alone held until ``release``."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.release = asyncio.Event()
        self.arrived = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/v1/orderbook/instruments"
            and scope["query_string"] == ONLY_XRP
        ):
            self.arrived += 1
            await self.release.wait()
        await self.app(scope, receive, send)


async def test_instruments_held_before_are_answered_though_a_warmup_clears_them_meanwhile(
    sim_app: Starlette, tmp_path: Path
) -> None:
    held = HeldInstruments(sim_app)
    async with in_process_serve(held, tmp_path / "serve.db") as service:
        before = await service.instruments(["KRW-BTC", "KRW-ETH"])
        assert [i.market for i in before] == ["KRW-BTC", "KRW-ETH"]
        asked = asyncio.create_task(service.instruments(["KRW-BTC", "KRW-ETH", "KRW-XRP"]))
        await wait_until(lambda: held.arrived == 1, 10, "the fetch of KRW-XRP alone")
        await service.warmup()  # clears the instruments held
        held.release.set()
        got = await asked
    assert [i.market for i in got] == ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
