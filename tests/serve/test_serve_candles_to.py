"""Through serve, a cold read before a ``to`` costs what a cold ``count`` read costs: ``/v1``
with ``to`` asks the page at ``to`` (one call for up to 200 candles, on a quiet market too,
where widening start/end ranges cost one collect per widening), and ``/api/candles`` with
``count`` and ``end`` (the admin chart's older pages) asks its first page, then the rest
together. The answers equal the simulator's own pages; calls are counted by the simulator
(in-process serve and simulator, on the simulator's fixed clock)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SIM_NOW_MS
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, format_utc

_AUTH = {"Authorization": "Bearer t"}


class Pages:
    """The simulator, with its candle requests counted. After the first, a page waits (at
    most ``alone_s``) until a second is in flight: pages sent together then overlap
    whatever the machine's load (``most`` reaches 2), pages sent one after another never
    do."""

    def __init__(self, app: Starlette, alone_s: float = 10.0) -> None:
        self.app = app
        self.alone_s = alone_s
        self.calls = 0
        self.now = 0
        self.most = 0
        self._company = asyncio.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/candles/"):
            await self.app(scope, receive, send)
            return
        self.calls += 1
        async with self._company:
            self.now += 1
            self.most = max(self.most, self.now)
            self._company.notify_all()
            if self.calls > 1 and self.most < 2:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.alone_s):
                        await self._company.wait_for(lambda: self.most >= 2)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


@pytest.fixture
def pages(sim_app: Starlette) -> Pages:
    return Pages(sim_app, alone_s=0.0)  # a test expecting pages together sets a wait


@pytest.fixture
async def http(pages: Pages, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        in_process_serve(pages, tmp_path / "serve.db") as service,
        service_client(service, timeout=60) as client,
    ):
        yield client


async def _upstream(sim_app: Starlette, path: str, params: dict[str, str | int]) -> list[Any]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app), base_url="http://sim"
    ) as sim:
        reply = await sim.get(path, params=params)
    assert reply.status_code == 200, reply.text
    rows: list[Any] = reply.json()
    return rows


async def _walk(sim_app: Starlette, market: str, count: int, to: str) -> list[Any]:
    """The ``count`` 1m candles before ``to`` as Upbit's pages give them, newest first."""
    rows: list[Any] = []
    while len(rows) < count:
        page = await _upstream(
            sim_app, "/v1/candles/minutes/1", {"market": market, "count": 200, "to": to}
        )
        rows += page
        if len(page) < 200:
            break
        to = page[-1]["candle_date_time_utc"] + "Z"
    return rows[:count]


@pytest.mark.parametrize("market", ["KRW-BTC", "KRW-AHT"])  # dense; 12 trades a day
async def test_a_cold_v1_read_with_to_costs_one_page_and_equals_upstream(
    http: httpx.AsyncClient, pages: Pages, sim_app: Starlette, market: str
) -> None:
    to = format_utc(SIM_NOW_MS - 30 * DAY_MS + 12_345) + "Z"  # inside a minute
    params: dict[str, str | int] = {"market": market, "count": 200, "to": to}
    ours = await http.get("/v1/candles/minutes/1", params=params)
    assert ours.status_code == 200, ours.text
    assert pages.calls == 1
    assert ours.json() == await _upstream(sim_app, "/v1/candles/minutes/1", params)
    again = await http.get("/v1/candles/minutes/1", params={**params, "count": 150})
    assert again.json() == ours.json()[:150] and pages.calls == 1  # stored: nothing asked


async def test_a_cold_v1_day_read_with_to_costs_its_two_pages(
    http: httpx.AsyncClient, pages: Pages, sim_app: Starlette
) -> None:
    # Days compare with the day before (change_price): 201 candles, two pages.
    to = format_utc(SIM_NOW_MS - 90 * DAY_MS)
    params: dict[str, str | int] = {"market": "KRW-META", "count": 200, "to": to}
    ours = await http.get("/v1/candles/days", params=params)
    assert ours.status_code == 200, ours.text
    assert pages.calls <= 2
    assert ours.json() == await _upstream(sim_app, "/v1/candles/days", params)


@pytest.mark.parametrize("market", ["KRW-BTC", "KRW-AHT"])
async def test_the_admin_charts_older_page_is_a_count_before_an_end(
    http: httpx.AsyncClient, pages: Pages, sim_app: Starlette, market: str
) -> None:
    end = format_utc(SIM_NOW_MS - 10 * DAY_MS) + "Z"
    count = 1000
    if market == "KRW-BTC":  # dense: the pages after the first are expected together
        pages.alone_s = 10.0
    ours = await http.get(
        "/api/candles",
        params={"market": market, "timeframe": "1m", "count": count, "end": end},
        headers=_AUTH,
    )
    assert ours.status_code == 200, ours.text
    body = ours.json()
    assert body["meta"]["upstream_calls"] == pages.calls <= math.ceil(count / 200) + 1
    if market == "KRW-BTC":
        assert pages.most >= 2, "the pages after the first went one at a time"
    truth = await _walk(sim_app, market, count, end)
    assert [c["time_utc"] for c in body["candles"]] == [
        r["candle_date_time_utc"] + "Z" for r in reversed(truth)
    ]
    assert [c["close"] for c in body["candles"]] == [r["trade_price"] for r in reversed(truth)]
