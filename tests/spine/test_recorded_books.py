"""``Spine.orderbooks_at`` and ``Spine.orderbooks_history``: the recorded books (Upbit keeps
none) at or before a time and over a range, exactly as stored, with ``meta``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from marketspine import InvalidRequestError, Spine
from marketspine._base.time import parse_time
from marketspine._spine.answers import OrderbookAnswer
from marketspine._store.recording_store import recording_for
from marketspine.records import Orderbook, OrderbookUnit
from marketspine.sim import SimConfig, create_app

T0 = parse_time("2026-01-05T10:00:00Z")


def book(market: str, ms: int, levels: int) -> Orderbook:
    units = tuple(OrderbookUnit(100.0 + i, 0.5 * (i + 1), 99.0 - i, 0.25) for i in range(levels))
    return Orderbook(market, ms, 12.5, 3.75, units, 0.0)


BOOKS = [book("KRW-BTC", T0 + i * 1000, 15 if i % 2 else 30) for i in range(5)]


@pytest.fixture
async def spine(tmp_path: Path) -> AsyncIterator[Spine]:
    app = create_app(SimConfig(seed=3, rate_limit=0))
    async with Spine(
        "http://sim", tmp_path / "books.db", transport=httpx.ASGITransport(app=app)
    ) as s:
        await recording_for(s.store).write(orderbooks=[*BOOKS, book("KRW-ETH", T0, 1)])
        yield s


async def test_the_book_at_a_time_is_the_last_recorded_at_or_before_it(spine: Spine) -> None:
    assert await spine.orderbooks_at("KRW-BTC", T0 - 1) is None
    found = await spine.orderbooks_at("krw-btc", "2026-01-05T10:00:02.500Z")
    assert found == BOOKS[2] and isinstance(found, OrderbookAnswer)
    assert found.meta.sources == ("database",) and found.meta.upstream_calls == 0
    assert await spine.orderbooks_at("KRW-BTC", T0 + 10**7) == BOOKS[-1]
    assert await spine.orderbooks_at("KRW-XRP", T0) is None


async def test_the_history_is_every_recorded_book_of_the_range(spine: Spine) -> None:
    assert await spine.orderbooks_history("KRW-BTC", start=T0) == BOOKS
    middle = await spine.orderbooks_history("KRW-BTC", start=T0 + 1000, end=T0 + 3000)
    assert middle == BOOKS[1:3] and middle.meta.sources == ("database",)
    assert await spine.orderbooks_history("KRW-BTC", start=T0 - 10_000, end=T0) == []
    with pytest.raises(InvalidRequestError, match=r"start \(\S+Z\) must be before end \(\S+Z\)"):
        await spine.orderbooks_history("KRW-BTC", start=T0, end=T0)
    with pytest.raises(InvalidRequestError, match="time"):
        await spine.orderbooks_at("KRW-BTC", None)  # type: ignore[arg-type]
