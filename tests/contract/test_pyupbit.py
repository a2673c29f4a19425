"""pyupbit (which nobody here wrote) against a loopback simulator.

pyupbit hard-codes https://api.upbit.com inside its functions and calls ``requests.get``
through ``pyupbit.request_api``; the test swaps that module's ``requests`` for one that
sends the same request to the simulator instead.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from helpers import require_module

pyupbit = require_module(
    "pyupbit", "pyupbit is not installed (a dev dependency: pip install -e '.[dev]')"
)
require_module(
    "pyupbit.request_api", "pyupbit is not installed (a dev dependency: pip install -e '.[dev]')"
)
requests = require_module("requests", "requests (pyupbit's HTTP client) is not installed")

UPBIT = "https://api.upbit.com"


@pytest.fixture
def sim(fixed_sim: str, monkeypatch: pytest.MonkeyPatch) -> str:
    def get(target: str, **kwargs: Any) -> Any:  # a requests.Response
        assert target.startswith(UPBIT), target
        return requests.get(fixed_sim + target[len(UPBIT) :], timeout=10, **kwargs)

    monkeypatch.setattr(pyupbit.request_api, "requests", SimpleNamespace(get=get))
    return fixed_sim


def rest_pages(base: str, path: str, count: int) -> list[dict[str, Any]]:
    """Candles newest first, paged the documented way: next ``to`` = oldest start seen."""
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"market": "KRW-BTC"}
    while len(rows) < count:
        params["count"] = min(200, count - len(rows))
        page = httpx.get(base + path, params=params, timeout=10).json()
        if not page:
            break
        rows += page
        params["to"] = page[-1]["candle_date_time_utc"]
    return rows


@pytest.mark.parametrize(
    ("interval", "path"), [("minute1", "/v1/candles/minutes/1"), ("day", "/v1/candles/days")]
)
def test_get_ohlcv_pages_contiguously_and_equals_rest(sim: str, interval: str, path: str) -> None:
    frame = pyupbit.get_ohlcv("KRW-BTC", interval=interval, count=450, period=0)
    assert frame is not None, "pyupbit returned None (it swallows every error)"
    assert len(frame) == 450
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    expected = list(reversed(rest_pages(sim, path, 450)))
    assert [ts.strftime("%Y-%m-%dT%H:%M:%S") for ts in frame.index] == [
        row["candle_date_time_kst"] for row in expected
    ]
    columns = ["open", "high", "low", "close", "volume", "value"]
    fields = [
        "opening_price",
        "high_price",
        "low_price",
        "trade_price",
        "candle_acc_trade_volume",
        "candle_acc_trade_price",
    ]
    assert frame[columns].values.tolist() == [[row[f] for f in fields] for row in expected]


def test_get_current_price_single_and_list(sim: str) -> None:
    tickers = httpx.get(f"{sim}/v1/ticker", params={"markets": "KRW-BTC,KRW-ETH"}).json()
    prices = {row["market"]: row["trade_price"] for row in tickers}
    assert pyupbit.get_current_price("KRW-BTC") == prices["KRW-BTC"]
    # A list goes out as repeated ``markets=`` keys.
    assert pyupbit.get_current_price(["KRW-BTC", "KRW-ETH"]) == prices


def test_get_orderbook(sim: str) -> None:
    book = pyupbit.get_orderbook("KRW-BTC")
    [expected] = httpx.get(f"{sim}/v1/orderbook", params={"markets": "KRW-BTC"}).json()
    assert book == expected
    assert len(book["orderbook_units"]) == 30
    books = pyupbit.get_orderbook(["KRW-BTC", "KRW-ETH"])
    assert [b["market"] for b in books] == ["KRW-BTC", "KRW-ETH"]


def test_get_tickers(sim: str) -> None:
    listed = [row["market"] for row in httpx.get(f"{sim}/v1/market/all").json()]
    assert pyupbit.get_tickers() == listed
    assert pyupbit.get_tickers(fiat="KRW") == [code for code in listed if code.startswith("KRW")]
    detailed = pyupbit.get_tickers(is_details=True)
    assert [row["market"] for row in detailed] == listed
    assert all("market_event" in row for row in detailed)
