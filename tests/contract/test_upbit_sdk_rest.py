"""The official ``upbit-sdk`` REST resources (which nobody here wrote) against a loopback
simulator, through its ``base_url``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import require_module

require_module("upbit", "upbit-sdk is not installed (a dev dependency: pip install -e '.[dev]')")
import upbit  # noqa: E402


@pytest.fixture
def sim(fixed_sim: str) -> Iterator[tuple[str, upbit.Upbit]]:
    with upbit.Upbit(base_url=fixed_sim, max_retries=0, timeout=10) as client:
        yield fixed_sim, client


def rest(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(base + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def dump(items: Any) -> list[dict[str, Any]]:
    """The SDK's parsed models back as wire-named dicts."""
    return [item.model_dump(by_alias=True, exclude_unset=True) for item in items]


def wire(value: Any) -> Any:
    """The SDK declares decimals as ``str`` and turns our JSON numbers into strings; compare
    those as numbers (exactly: the string is the number's repr)."""
    if isinstance(value, dict):
        return {key: wire(item) for key, item in value.items()}
    if isinstance(value, list):
        return [wire(item) for item in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def same(sdk_items: Any, raw: list[dict[str, Any]]) -> bool:
    return bool(wire(dump(sdk_items)) == wire(raw))


def test_trading_pairs(sim: tuple[str, upbit.Upbit]) -> None:
    base, client = sim
    pairs = client.trading_pairs.list(is_details=True)
    raw = rest(base, "/v1/market/all", is_details="true")
    assert same(pairs, raw)
    assert dump(pairs)[0]["market_event"]["caution"] == raw[0]["market_event"]["caution"]


def test_candles_of_every_kind(sim: tuple[str, upbit.Upbit]) -> None:
    base, client = sim
    to = "2026-07-20T00:00:00"
    calls: list[tuple[Any, str, dict[str, Any]]] = [
        (client.candles.list_seconds, "/v1/candles/seconds", {}),
        (client.candles.list_minutes, "/v1/candles/minutes/5", {"unit": 5}),
        (client.candles.list_days, "/v1/candles/days", {"converting_price_unit": "KRW"}),
        (client.candles.list_weeks, "/v1/candles/weeks", {}),
        (client.candles.list_months, "/v1/candles/months", {}),
        (client.candles.list_years, "/v1/candles/years", {}),
    ]
    for method, path, extra in calls:
        got = method(market="KRW-BTC", count=3, to=to, **extra)
        query = {k: v for k, v in extra.items() if k != "unit"}
        assert same(got, rest(base, path, market="KRW-BTC", count=3, to=to, **query)), path
        assert len(got) == 3


def test_tickers_trades_orderbooks(sim: tuple[str, upbit.Upbit]) -> None:
    base, client = sim
    tickers = client.tickers.list_by_trading_pairs(markets="KRW-BTC,KRW-ETH")
    assert same(tickers, rest(base, "/v1/ticker", markets="KRW-BTC,KRW-ETH"))
    by_quote = client.tickers.list_by_quote_currencies(quote_currencies="BTC")
    assert same(by_quote, rest(base, "/v1/ticker/all", quote_currencies="BTC"))
    trades = client.trades.list(market="KRW-BTC", count=20, days_ago=1)
    raw_trades = rest(base, "/v1/trades/ticks", market="KRW-BTC", count=20, days_ago=1)
    assert same(trades, raw_trades)
    # sequential_id must survive exactly (beyond 2**53), so compare it without floats.
    assert [t["sequential_id"] for t in dump(trades)] == [t["sequential_id"] for t in raw_trades]
    assert all(t["sequential_id"] > 2**53 for t in raw_trades)
    books = client.orderbooks.list(markets="KRW-BTC", count=5)
    assert same(books, rest(base, "/v1/orderbook", markets="KRW-BTC", count=5))
    instruments = client.orderbooks.list_instruments(markets="KRW-BTC,BTC-ETH")
    raw_instruments = rest(base, "/v1/orderbook/instruments", markets="KRW-BTC,BTC-ETH")
    assert dump(instruments) == raw_instruments  # strings on the wire, strings in the SDK


def test_errors_map_to_sdk_exceptions(sim: tuple[str, upbit.Upbit]) -> None:
    _, client = sim
    with pytest.raises(upbit.NotFoundError):
        client.tickers.list_by_trading_pairs(markets="KRW-NOPE")
    with pytest.raises(upbit.BadRequestError):
        client.candles.list_minutes(unit=7, market="KRW-BTC")  # type: ignore[arg-type]
