"""ccxt's ``upbit`` exchange (which nobody here wrote) against a loopback simulator."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from helpers import require_module

from marketspine._base.time import MINUTE_MS, parse_naive_utc

ccxt = require_module("ccxt", "ccxt is not installed (a dev dependency: pip install -e '.[dev]')")


@pytest.fixture
def sim(fixed_sim: str) -> tuple[str, Any]:
    exchange = ccxt.upbit({"timeout": 10_000})
    exchange.urls["api"] = {"public": fixed_sim, "private": fixed_sim}
    return fixed_sim, exchange


def rest(base: str, path: str, **params: Any) -> Any:
    response = httpx.get(base + path, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_load_markets(sim: tuple[str, Any]) -> None:
    base, exchange = sim
    markets = exchange.load_markets()
    listed = rest(base, "/v1/market/all")
    assert sorted(m["id"] for m in markets.values()) == sorted(row["market"] for row in listed)
    btc = exchange.market("BTC/KRW")
    assert (btc["id"], btc["base"], btc["quote"]) == ("KRW-BTC", "BTC", "KRW")


def test_fetch_ohlcv_latest_and_since(sim: tuple[str, Any]) -> None:
    base, exchange = sim
    latest = exchange.fetch_ohlcv("BTC/KRW", "1m", limit=50)
    rows = rest(base, "/v1/candles/minutes/1", market="KRW-BTC", count=50)
    expected = [
        [
            parse_naive_utc(r["candle_date_time_utc"]),
            r["opening_price"],
            r["high_price"],
            r["low_price"],
            r["trade_price"],
            r["candle_acc_trade_volume"],
        ]
        for r in reversed(rows)
    ]
    assert latest == expected
    since = latest[0][0] - 100 * MINUTE_MS
    older = exchange.fetch_ohlcv("BTC/KRW", "1m", since=since, limit=100)
    assert older, "no candles for since/limit"
    assert all(since <= c[0] < since + 100 * MINUTE_MS for c in older)
    assert [c[0] for c in older] == sorted({c[0] for c in older})
    assert older[-1][0] < latest[0][0]
    days = exchange.fetch_ohlcv("BTC/KRW", "1d", limit=10)
    assert len(days) == 10 and all(c[0] % 86_400_000 == 0 for c in days)


def test_fetch_ticker_and_tickers(sim: tuple[str, Any]) -> None:
    base, exchange = sim
    ticker = exchange.fetch_ticker("BTC/KRW")
    [raw] = rest(base, "/v1/ticker", markets="KRW-BTC")
    assert ticker["last"] == raw["trade_price"]
    assert ticker["timestamp"] == raw["trade_timestamp"]  # ccxt reads trade_timestamp
    assert ticker["high"] == raw["high_price"] and ticker["low"] == raw["low_price"]
    tickers = exchange.fetch_tickers(["BTC/KRW", "ETH/KRW"])
    assert set(tickers) == {"BTC/KRW", "ETH/KRW"}
    everything = exchange.fetch_tickers()  # ticker/all?quote_currencies=...
    assert "BTC/KRW" in everything and len(everything) >= 20


def test_fetch_order_book(sim: tuple[str, Any]) -> None:
    base, exchange = sim
    book = exchange.fetch_order_book("BTC/KRW")
    [raw] = rest(base, "/v1/orderbook", markets="KRW-BTC")
    units = raw["orderbook_units"]
    assert book["asks"] == [[u["ask_price"], u["ask_size"]] for u in units]
    assert book["bids"] == [[u["bid_price"], u["bid_size"]] for u in units]
    assert book["timestamp"] == raw["timestamp"]


def test_fetch_trades(sim: tuple[str, Any]) -> None:
    base, exchange = sim
    trades = exchange.fetch_trades("BTC/KRW", limit=100)
    raw = rest(base, "/v1/trades/ticks", market="KRW-BTC", count=100)
    assert len(trades) == 100
    assert sorted(t["id"] for t in trades) == sorted(str(r["sequential_id"]) for r in raw)
    by_id = {str(r["sequential_id"]): r for r in raw}
    for trade in trades:
        row = by_id[trade["id"]]
        assert trade["price"] == row["trade_price"] and trade["amount"] == row["trade_volume"]
        assert trade["timestamp"] == row["timestamp"]
        assert trade["side"] == ("buy" if row["ask_bid"] == "BID" else "sell")
