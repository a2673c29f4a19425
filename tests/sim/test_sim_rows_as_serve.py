"""The simulator and ``serve`` write Upbit's REST rows through one writer: what the
simulator answers, decoded into records and written again the way ``serve`` writes them,
has the same fields in the same order (and, where a row needs nothing but its record,
the same values). In-process on a fixed clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from marketspine._base.timeframes import parse_timeframe
from marketspine._upbit.rest import (
    decode_candles,
    decode_instruments,
    decode_markets,
    decode_orderbooks,
    decode_tickers,
    decode_trades,
)
from marketspine._upbit.rest_rows import (
    CandleRows,
    instrument_row,
    market_row,
    orderbook_row,
    supported_levels_row,
    ticker_row,
    trade_row,
)


def ordered(value: Any) -> Any:
    """Rows as lists of (key, value) pairs, so field order counts in comparisons."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def keys(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [list(row) for row in rows]


@pytest.mark.parametrize(
    ("path", "timeframe"),
    [
        ("/v1/candles/seconds", "1s"),
        ("/v1/candles/minutes/1", "1m"),
        ("/v1/candles/minutes/240", "4h"),
        ("/v1/candles/days", "1d"),
        ("/v1/candles/weeks", "1w"),
        ("/v1/candles/months", "1M"),
        ("/v1/candles/years", "1y"),
    ],
)
async def test_candle_pages_match_serves_rows(
    sim_client: httpx.AsyncClient, path: str, timeframe: str
) -> None:
    tf = parse_timeframe(timeframe)
    response = await sim_client.get(path, params={"market": "KRW-BTC", "count": 20})
    assert response.status_code == 200
    theirs = response.json()
    candles = decode_candles(response.content, tf)[::-1]  # serve writes ascending in
    ours = msgspec.json.decode(
        CandleRows().page(candles, tf, previous=None, forming_start_ms=candles[-1].start_ms)
    )
    assert len(theirs) == len(ours) > 1
    assert keys(ours) == keys(theirs)
    if tf.unit != "day":  # a day row compares with the day before, which a page lacks
        assert ordered(ours) == ordered(theirs)


async def test_quote_rows_match_serves_rows(sim_client: httpx.AsyncClient) -> None:
    markets = {"markets": "KRW-BTC,KRW-ETH,BTC-ETH"}
    cases: list[tuple[str, dict[str, Any], Callable[[bytes], list[Any]], Callable[[Any], Any]]] = [
        ("/v1/trades/ticks", {"market": "KRW-BTC", "count": 50}, decode_trades, trade_row),
        ("/v1/ticker", markets, decode_tickers, ticker_row),
        ("/v1/ticker/all", {"quote_currencies": "KRW,BTC"}, decode_tickers, ticker_row),
        ("/v1/orderbook/instruments", markets, decode_instruments, instrument_row),
    ]
    for path, params, decode, write in cases:
        response = await sim_client.get(path, params=params)
        assert response.status_code == 200, path
        theirs = response.json()
        ours = [write(record) for record in decode(response.content)]
        assert theirs and ordered(ours) == ordered(theirs), path


@pytest.mark.parametrize("params", [{}, {"count": 5}, {"level": 10000}])
async def test_orderbook_rows_match_serves_rows(
    sim_client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await sim_client.get("/v1/orderbook", params={"markets": "KRW-BTC", **params})
    theirs = response.json()
    depth = params.get("count", 30)
    ours = [orderbook_row(book, depth) for book in decode_orderbooks(response.content)]
    assert theirs and ordered(ours) == ordered(theirs)


@pytest.mark.parametrize("details", ["false", "true"])
async def test_market_rows_match_serves_rows(sim_client: httpx.AsyncClient, details: str) -> None:
    response = await sim_client.get("/v1/market/all", params={"is_details": details})
    theirs = response.json()
    write_details = details == "true"
    ours = [market_row(m, details=write_details) for m in decode_markets(response.content)]
    assert theirs and ordered(ours) == ordered(theirs)


async def test_supported_levels_rows_match_serves_rows(sim_client: httpx.AsyncClient) -> None:
    instruments = await sim_client.get("/v1/orderbook/instruments", params={"markets": "KRW-BTC"})
    levels = await sim_client.get("/v1/orderbook/supported_levels")
    (instrument,) = decode_instruments(instruments.content)
    row = next(r for r in levels.json() if r["market"] == "KRW-BTC")
    ours = supported_levels_row(instrument.market, instrument.supported_levels)
    assert ordered(ours) == ordered(row)
