"""A Spine (and a Client) works only while open: before ``async with`` and after
``aclose()`` every data method raises ClosedError — warmup and stream included — while
statistics, tick_size, clear_memory and aclose keep working."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import aclose

from marketspine import ClosedError, Spine
from marketspine._client.client import Client
from marketspine.sim import SimConfig, create_app


async def first_event(spine: Spine) -> Any:
    events = spine.stream(["trade"], ["KRW-BTC"])
    try:
        return await anext(events)
    finally:
        await aclose(events)


async def first_replayed(spine: Spine) -> Any:
    events = spine.replay(["trade"], ["KRW-BTC"], start="2026-01-01", end="2026-01-02")
    try:
        return await anext(events)
    finally:
        await aclose(events)


# Every public method that touches data, called with good arguments.
CALLS: dict[str, Callable[[Spine], Awaitable[Any]]] = {
    "candles": lambda s: s.candles("KRW-BTC", "1m", count=5),
    "preload": lambda s: s.preload({"KRW-BTC": {"1m": 5}}),
    "ticker": lambda s: s.ticker("KRW-BTC"),
    "tickers": lambda s: s.tickers(["KRW-BTC"]),
    "tickers by quote": lambda s: s.tickers(quote="KRW"),
    "orderbook": lambda s: s.orderbook("KRW-BTC"),
    "orderbooks": lambda s: s.orderbooks(["KRW-BTC"]),
    "orderbooks_at": lambda s: s.orderbooks_at("KRW-BTC", "2026-01-01"),
    "orderbooks_history": lambda s: s.orderbooks_history("KRW-BTC", start="2026-01-01"),
    "trades": lambda s: s.trades("KRW-BTC", 5),
    "trades range": lambda s: s.trades("KRW-BTC", start="2026-01-01", end="2026-01-02"),
    "watch": lambda s: s.watch(["trade"], ["KRW-BTC"]),
    "unwatch": lambda s: s.unwatch(["trade"], ["KRW-BTC"]),
    "stream": first_event,
    "replay": first_replayed,
    "markets": lambda s: s.markets(),
    "warmup": lambda s: s.warmup(),
}


def new_spine(tmp_path: Path) -> Spine:
    app = create_app(SimConfig(seed=3, rate_limit=0))
    return Spine("http://sim", tmp_path / "life.db", transport=httpx.ASGITransport(app=app))


def test_every_data_method_is_listed() -> None:
    public = {n for n in dir(Spine) if not n.startswith("_") and callable(getattr(Spine, n))}
    keeps_working = {
        "aclose", "clear_memory", "live_statistics", "polled", "statistics", "tick_size",
    }  # fmt: skip
    assert public - keeps_working == {name.split()[0] for name in CALLS}


@pytest.mark.parametrize("name", list(CALLS))
async def test_before_async_with_every_method_raises_closed_error(
    name: str, tmp_path: Path
) -> None:
    spine = new_spine(tmp_path)
    with pytest.raises(ClosedError, match="async with"):
        await CALLS[name](spine)
    assert not (tmp_path / "life.db").exists(), "nothing was opened on the way"


@pytest.mark.parametrize("name", list(CALLS))
async def test_after_aclose_every_method_raises_closed_error(name: str, tmp_path: Path) -> None:
    spine = new_spine(tmp_path)
    async with spine:
        await spine.candles("KRW-BTC", "1m", count=5)
    with pytest.raises(ClosedError, match="closed"):
        await CALLS[name](spine)


async def test_warmup_outside_async_with_raises_instead_of_reporting(tmp_path: Path) -> None:
    spine = new_spine(tmp_path)
    with pytest.raises(ClosedError):
        await spine.warmup()
    async with spine:
        report = await spine.warmup()
        assert report["success"] is True
    with pytest.raises(ClosedError):
        await spine.warmup()


async def test_properties_and_reentry(tmp_path: Path) -> None:
    spine = new_spine(tmp_path)
    for prop in ("client", "store"):
        with pytest.raises(ClosedError):
            getattr(spine, prop)
    async with spine:
        assert spine.client is not None
    for prop in ("client", "store"):
        with pytest.raises(ClosedError, match="closed"):
            getattr(spine, prop)
    with pytest.raises(ClosedError, match="new Spine"):
        async with spine:
            pass


async def test_what_keeps_working_after_close(tmp_path: Path) -> None:
    spine = new_spine(tmp_path)
    async with spine:
        await spine.candles("KRW-BTC", "1m", count=5)
    await spine.aclose()  # idempotent
    assert spine.statistics().requests == {"candles": 1}
    assert spine.tick_size("KRW-BTC", 150_000_000) == 1000
    spine.clear_memory()
    assert spine.statistics().memory_candles == 0


async def test_a_client_outside_async_with_raises_closed_error() -> None:
    app = create_app(SimConfig(seed=3, rate_limit=0))
    client = Client("http://sim", transport=httpx.ASGITransport(app=app))
    with pytest.raises(ClosedError, match="async with"):
        await client.tickers(["KRW-BTC"])
    async with client:
        assert len(await client.tickers(["KRW-BTC"])) == 1
    with pytest.raises(ClosedError):
        await client.candles("KRW-BTC", "1m", count=1)
