"""Through serve: a ``/v1`` read of candles serve holds is answered while another client's
read of the same market and timeframe waits for upstream (in-process serve and simulator,
the simulator's candle pages held until released)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from helpers import SIM_NOW_MS, PageHold, wait_until
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, HOUR_MS, format_utc
from marketspine._serve.service import ServeService

PATH = "/v1/candles/minutes/60"


@pytest.fixture
def hold(sim_app: Starlette) -> PageHold:
    return PageHold(sim_app)


@pytest.fixture
async def service(hold: PageHold, tmp_path: Path) -> AsyncIterator[ServeService]:
    async with in_process_serve(hold, tmp_path / "serve.db") as svc:
        yield svc


@pytest.fixture
async def http(service: ServeService) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(service, timeout=60) as client:
        yield client


def _to(ms: int) -> str:
    return format_utc(ms) + "Z"


async def test_held_candles_are_answered_while_a_fetch_of_their_series_waits(
    http: httpx.AsyncClient, hold: PageHold, service: ServeService
) -> None:
    stored_to = SIM_NOW_MS - 2 * DAY_MS
    first = await http.get(PATH, params={"market": "KRW-BTC", "count": 200, "to": _to(stored_to)})
    assert first.status_code == 200 and len(first.json()) == 200
    service.spine.clear_memory()  # held in the store: the read below goes there
    history_to = stored_to - 20 * DAY_MS
    hold.before_ms = stored_to - 9 * DAY_MS  # pages below what serve holds wait
    hold.held.clear()
    history = asyncio.create_task(
        http.get(PATH, params={"market": "KRW-BTC", "count": 200, "to": _to(history_to)})
    )
    await wait_until(lambda: hold.waiting >= 1, 30, "the history page reached upstream")
    # Another query (not a kept answer) inside what serve holds: answered meanwhile.
    async with asyncio.timeout(30):
        held = await http.get(
            PATH, params={"market": "KRW-BTC", "count": 50, "to": _to(stored_to - 10 * HOUR_MS)}
        )
    assert not history.done() and hold.waiting >= 1
    assert held.status_code == 200 and len(held.json()) == 50
    assert held.headers["X-Marketspine-Source"] == "database"
    assert held.json() == first.json()[10:60]
    hold.held.set()
    answer = await history
    assert answer.status_code == 200 and len(answer.json()) == 200
