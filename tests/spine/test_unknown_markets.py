"""An unlisted market code is named, with the listed code it likely meant: Upbit's 404 to a
request of several codes names none, and ``BTC-KRW`` (the order most exchanges write) is
simply not found (the simulator in-process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from marketspine import InvalidRequestError, Spine, UnknownMarketError

ASKS: list[tuple[Callable[[Spine], Awaitable[Any]], str, str]] = [
    (
        lambda s: s.tickers(["KRW-BTC", "BTC-KRW"]),
        "KRW-BTC,BTC-KRW",
        "unknown market 'BTC-KRW' (1 of the 2 asked); did you mean KRW-BTC?",
    ),
    (lambda s: s.ticker("BTC-KRW"), "BTC-KRW", "unknown market 'BTC-KRW'; did you mean KRW-BTC?"),
    (
        lambda s: s.orderbooks(["KRW-NOPE", "KRW-ETH"]),
        "KRW-NOPE,KRW-ETH",
        "unknown market 'KRW-NOPE' (1 of the 2 asked)",
    ),
    (
        lambda s: s.candles("ETH-KRW", "1m", count=5),
        "ETH-KRW",
        "unknown market 'ETH-KRW'; did you mean KRW-ETH?",
    ),
    (lambda s: s.trades("BTC-KRW"), "BTC-KRW", "unknown market 'BTC-KRW'; did you mean KRW-BTC?"),
    (lambda s: s.tickers(quote="USD"), "USD", "unknown quote currency 'USD': listed markets are"),
]


@pytest.mark.parametrize(("ask", "market", "text"), ASKS)
async def test_an_unlisted_code_is_named_with_the_code_meant(
    sim_spine: Spine, ask: Callable[[Spine], Awaitable[Any]], market: str, text: str
) -> None:
    with pytest.raises(UnknownMarketError) as raised:
        await ask(sim_spine)
    assert raised.value.market == market
    assert str(raised.value).startswith(text), str(raised.value)
    assert "Upbit answered 404 Code not found" in str(raised.value)


async def test_tickers_of_nothing_says_to_give_markets_or_a_quote(sim_spine: Spine) -> None:
    with pytest.raises(InvalidRequestError, match=r"give markets .* or quote"):
        await sim_spine.tickers()
