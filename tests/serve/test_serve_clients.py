"""Clients nobody here wrote (pyupbit, ccxt, the official upbit-sdk) through a real
``marketspine serve`` process in front of a rate-limited simulator: the README's snippets run
as written, four clients at full speed at once cause no 429 upstream, and a repeated
``get_ohlcv(count=2000)`` costs no upstream request the second time."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SIM_NOW_MS, require_module, run_sim, wait_until_sync
from serve_support import AUTH, TOKEN, ServeProcess, serve_process, sim_stats

from marketspine.sim import SimConfig

ccxt = require_module("ccxt", "ccxt is not installed (a dev dependency: pip install -e '.[dev]')")
pyupbit = require_module(
    "pyupbit", "pyupbit is not installed (a dev dependency: pip install -e '.[dev]')"
)
require_module(
    "pyupbit.request_api", "pyupbit is not installed (a dev dependency: pip install -e '.[dev]')"
)
upbit = require_module(
    "upbit", "upbit-sdk is not installed (a dev dependency: pip install -e '.[dev]')"
)

pytestmark = pytest.mark.process

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPET = re.compile(r"```python\n# client: ([\w-]+)\n(.*?)```", re.S)
PLACEHOLDER = 'SERVE = "http://127.0.0.1:8600"'


@pytest.fixture(scope="module")
def limited_sim(request: pytest.FixtureRequest) -> Iterator[str]:
    """A simulator that enforces Upbit's 10 requests/s per group, clock stopped; only serve
    talks to it, so every 429 it counts would be serve's."""
    with run_sim(SimConfig(rate_limit=10), clock=lambda: SIM_NOW_MS) as url:
        yield url


@pytest.fixture(scope="module")
def served(limited_sim: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    db = tmp_path_factory.mktemp("clients") / "clients.db"
    with serve_process(limited_sim, db, "--admin-token", TOKEN) as process:
        yield process


@pytest.fixture
def restore_pyupbit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pyupbit snippet swaps a module attribute; put it back afterwards."""
    monkeypatch.setattr(pyupbit.request_api, "requests", pyupbit.request_api.requests)


def snippets() -> dict[str, str]:
    found = dict(SNIPPET.findall(README.read_text()))
    # Every README snippet runs somewhere: the WebSocket ones in test_serve_ws_clients.py.
    assert set(found) == {"pyupbit", "ccxt", "upbit-sdk", "upbit-sdk-ws", "ccxt-pro"}, sorted(found)
    return found


def run_snippet(name: str, url: str) -> dict[str, Any]:
    code = snippets()[name]
    assert PLACEHOLDER in code
    namespace: dict[str, Any] = {"__name__": f"readme_{name}"}
    exec(
        compile(code.replace(PLACEHOLDER, f"SERVE = {url!r}"), f"README:{name}", "exec"), namespace
    )
    return namespace


def test_readme_pyupbit_snippet(served: ServeProcess, restore_pyupbit: None) -> None:
    names = run_snippet("pyupbit", served.url)
    frame = names["frame"]
    assert frame is not None and len(frame) == 400  # pyupbit returns None on any error
    assert frame.index.is_unique and frame.index.is_monotonic_increasing
    rows = served.get("/v1/ticker", markets="KRW-BTC").json()
    assert names["price"] == rows[0]["trade_price"]


def test_readme_ccxt_snippet(served: ServeProcess) -> None:
    names = run_snippet("ccxt", served.url)
    assert len(names["ohlcv"]) == 200
    rows = served.get("/v1/candles/minutes/1", market="KRW-BTC", count=200).json()
    assert [c[0] for c in names["ohlcv"]] == [
        ccxt.Exchange.parse8601(r["candle_date_time_utc"] + "Z") for r in reversed(rows)
    ]
    assert (
        names["ticker"]["last"]
        == served.get("/v1/ticker", markets="KRW-BTC").json()[0]["trade_price"]
    )


def test_readme_freqtrade_config(served: ServeProcess) -> None:
    text = README.read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block is not None
    config = json.loads(block.group(1).replace("http://127.0.0.1:8600", served.url))
    exchange = ccxt.upbit(config["exchange"]["ccxt_config"])
    assert exchange.enableRateLimit is False
    assert len(exchange.fetch_ohlcv("ETH/KRW", "5m", limit=50)) == 50


def test_readme_upbit_sdk_snippet(served: ServeProcess) -> None:
    names = run_snippet("upbit-sdk", served.url)
    try:
        assert len(names["candles"]) == 200
        assert [t.market for t in names["tickers"]] == ["KRW-BTC", "KRW-ETH"]
    finally:
        names["client"].close()


def test_repeated_get_ohlcv_2000_makes_no_upstream_call(
    served: ServeProcess, limited_sim: str, restore_pyupbit: None
) -> None:
    run_snippet("pyupbit", served.url)
    first = pyupbit.get_ohlcv("KRW-XRP", interval="minute1", count=2000, period=0)
    assert first is not None and len(first) == 2000

    def forming_is_live() -> bool:
        status = served.get("/api/status", headers=AUTH).json()
        return ["candle.1m", "KRW-XRP"] in status["watched"]

    # the forming candle now comes from the trade stream
    wait_until_sync(forming_is_live, 10, "serve to watch KRW-XRP's 1m candles")
    before = sim_stats(limited_sim)["requests"]["total"]
    second = pyupbit.get_ohlcv("KRW-XRP", interval="minute1", count=2000, period=0)
    assert sim_stats(limited_sim)["requests"]["total"] == before
    assert second is not None and second.equals(first)


def test_four_clients_at_full_speed_cause_no_429(
    served: ServeProcess, limited_sim: str, restore_pyupbit: None
) -> None:
    run_snippet("pyupbit", served.url)
    exchange = ccxt.upbit({"enableRateLimit": False, "timeout": 15_000})
    exchange.urls["api"] = {"public": served.url, "private": served.url}
    failures: list[str] = []
    answered: list[str] = []
    markets = ["KRW-BTC", "KRW-ETH", "KRW-SOL"]

    def pyupbit_bot() -> None:
        for code in markets:
            frame = pyupbit.get_ohlcv(code, interval="minute5", count=300, period=0)
            price = pyupbit.get_current_price(code)
            if frame is None or price is None:
                failures.append(f"pyupbit {code}")
            answered.append("pyupbit")

    def ccxt_bot() -> None:
        for code in markets:
            symbol = code.split("-")[1] + "/KRW"
            exchange.fetch_ohlcv(symbol, "15m", limit=200)
            exchange.fetch_order_book(symbol)
            exchange.fetch_trades(symbol, limit=50)
            answered.append("ccxt")

    def sdk_bot() -> None:
        with upbit.Upbit(base_url=served.url, max_retries=0, timeout=15) as client:
            for code in markets:
                client.candles.list_days(market=code, count=100)
                client.tickers.list_by_trading_pairs(markets=code)
                answered.append("sdk")

    def screener() -> None:
        with httpx.Client(base_url=served.url, timeout=15) as http:
            for _ in markets:
                asks: list[tuple[str, dict[str, str | int]]] = [
                    ("/v1/ticker/all", {"quote_currencies": "KRW"}),
                    ("/v1/candles/minutes/1", {"market": "KRW-ETH", "count": 200}),
                    ("/v1/candles/minutes/30", {"market": "KRW-BTC", "count": 200}),
                ]
                for path, params in asks:
                    response = http.get(path, params=params)
                    if response.status_code != 200:
                        failures.append(f"screener {path} {response.status_code}")
                answered.append("screener")

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except Exception as exc:
                failures.append(f"{work.__name__}: {exc!r}")

        return run

    before = sim_stats(limited_sim)
    threads = [
        threading.Thread(target=guarded(w)) for w in (pyupbit_bot, ccxt_bot, sdk_bot, screener)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    after = sim_stats(limited_sim)
    assert not failures
    assert sorted(set(answered)) == ["ccxt", "pyupbit", "screener", "sdk"]
    assert len(answered) == 4 * len(markets)
    assert after["429"] == before["429"] == 0
    assert after["418"] == 0
    assert after["requests"]["total"] > before["requests"]["total"]  # it did go upstream
