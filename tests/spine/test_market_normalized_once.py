"""A Spine.candles call normalizes its market once, at the Spine's boundary: the layers
below (the candle reader, the Client it calls) take the code as it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from marketspine._base import markets
from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig, create_app


@pytest.fixture
async def spine(tmp_path: Path) -> AsyncIterator[Spine]:
    app = create_app(SimConfig(seed=3, rate_limit=0))
    async with Spine(
        "http://sim", tmp_path / "spine.db", transport=httpx.ASGITransport(app=app)
    ) as s:
        yield s


@pytest.mark.parametrize("market", ["krw-btc", " KRW-ETH "])
async def test_one_cold_candles_call_normalizes_its_market_once(
    spine: Spine, monkeypatch: pytest.MonkeyPatch, market: str
) -> None:
    seen: list[object] = []
    normalize = markets.normalize_market

    def counted(value: object, name: str = "market") -> markets.MarketCode:
        seen.append(value)
        return normalize(value, name)

    monkeypatch.setattr(markets, "normalize_market", counted)
    # Cold: the forming candle, upstream's clock and several pages are fetched upstream.
    result = await spine.candles(market, "1m", count=450)
    assert len(result) == 450 and result.meta.upstream_calls >= 3
    assert seen == [market]
