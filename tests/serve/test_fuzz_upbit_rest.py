"""Fuzzing serve's Upbit-compatible ``/v1``: hypothesis draws quotation paths and query
strings (good and bad market codes, counts, ``to`` times, cursors, units, ``days_ago``,
levels: huge, negative, fractional, non-finite, unicode, empty) and asks serve in front of
the in-process simulator, as ``serve --upstream sim`` runs. Every answer is below 500, and
the simulator never raised nor answered 5xx on the way (a huge ``cursor`` once made its
trade history turn float infinity into an integer)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from helpers import ManualClock
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from serve_support import in_process_serve, service_client

from marketspine.sim import SimConfig, create_app


class WatchedSim(httpx.AsyncBaseTransport):
    """The simulator in-process, every exception and 5xx it produced kept."""

    def __init__(self) -> None:
        self._inner = httpx.ASGITransport(
            app=create_app(SimConfig(rate_limit=0), clock=ManualClock())
        )
        self.failures: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            self.failures.append(f"{request.url}: {exc!r}")
            raise
        if response.status_code >= 500:
            self.failures.append(f"{request.url}: {response.status_code}")
        return response


PATHS = [
    "/v1/trades/ticks", "/v1/ticker", "/v1/ticker/all", "/v1/orderbook",
    "/v1/orderbook/instruments", "/v1/orderbook/supported_levels", "/v1/market/all",
    "/v1/candles/seconds", "/v1/candles/days", "/v1/candles/weeks", "/v1/candles/months",
    "/v1/candles/years", "/v1/candles/days/",
]  # fmt: skip
UNITS = ["1", "3", "5", "10", "15", "30", "60", "240", "0", "-1", "2", "1.5", "x", "１",
         "99999999999999999999999"]  # fmt: skip
MARKETS = ["KRW-BTC", "krw-eth", "BTC-ETH", "USDT-BTC", "KRW-NOPE", "KRW-BTC,KRW-ETH",
           "KRW-BTC,,", "KRW-비트", "", " ", "-", "KRW-BTC\x00"]  # fmt: skip
NUMBERS = ["0", "1", "-1", "7", "8", "200", "201", "500", "1000", "1.5", "-0", "1e3", "inf",
           "-inf", "nan", "9" * 30, "-" + "9" * 30, "0x10", "１", ""]  # fmt: skip
TIMES = ["2026-07-30T07:00:00", "2026-07-30T07:00:00Z", "2026-07-30 07:00:00+09:00",
         "2026-07-29", "1970-01-01T00:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59",
         "2999-01-01T00:00:00Z", "235959", "23:59:59", "240000", "1785397297123",
         "-1", "2026-13-01T00:00:00", "nan", ""]  # fmt: skip
CURSORS = ["17853972971230000", "1", "0", "-1", "1.5", "x", "", "9223372036854775808",
           "18446744073709551616", "9" * 25, "-" + "9" * 25, "1" + "0" * 30]  # fmt: skip
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=10)


def values(choices: list[str]) -> st.SearchStrategy[str]:
    listed = st.sampled_from(choices)  # drawn half the time: they are the edges
    return st.one_of(listed, listed, TEXT, st.integers().map(str))


PARAMS = {
    "market": values(MARKETS),
    "markets": values(MARKETS),
    "count": values(NUMBERS),
    "to": values(TIMES),
    "cursor": values(CURSORS),
    "days_ago": values(NUMBERS),
    "daysAgo": values(NUMBERS),
    "level": values(NUMBERS),
    "converting_price_unit": values(["KRW", "BTC", ""]),
    "quote_currencies": values(["KRW", "BTC,USDT", "krw", ",", ""]),
    "is_details": values(["true", "false", "TRUE", ""]),
}


# Each path with the parameters it reads (and, by then, one it does not).
NAMES = {
    "/v1/trades/ticks": ["count", "to", "cursor", "days_ago", "daysAgo"],
    "/v1/candles": ["count", "to", "converting_price_unit"],
    "/v1/ticker": [], "/v1/orderbook": ["count", "level"], "/v1/orderbook/instruments": [],
    "/v1/orderbook/supported_levels": [], "/v1/ticker/all": ["quote_currencies"],
    "/v1/market/all": ["is_details"],
}  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A path and its query: the market mostly a good one, so the other values reach the
    code behind the market check (and, through serve, the simulator)."""
    path = draw(st.sampled_from(PATHS + ["/v1/candles/minutes/"] * 2 + ["/v1/trades/ticks"] * 4))
    if path == "/v1/candles/minutes/":
        path += draw(st.sampled_from(UNITS))
    family = "/v1/candles" if path.startswith("/v1/candles") else path
    names = draw(st.lists(st.sampled_from(NAMES[family] + ["level"]), max_size=4, unique=True))
    query = {name: draw(PARAMS[name]) for name in names}
    market = draw(st.one_of(st.just("KRW-BTC"), st.just("KRW-BTC"), PARAMS["market"]))
    query["markets" if family in ("/v1/ticker", "/v1/orderbook") else "market"] = market
    if not draw(st.integers(0, 9)):
        query.pop("market", None)
        query.pop("markets", None)
    return path, query


def test_v1_never_answers_5xx_and_the_simulator_never_fails(tmp_path: Path) -> None:
    sim = WatchedSim()
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()

        async def start() -> httpx.AsyncClient:
            service = await stack.enter_async_context(in_process_serve(sim, tmp_path / "serve.db"))
            return await stack.enter_async_context(service_client(service))

        http = runner.run(start())
        answered: list[tuple[str, dict[str, str], int, str]] = []

        @settings(
            max_examples=200,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(requests())
        # Found before: the simulator's trade history turned a cursor far in the future
        # into float infinity and raised OverflowError (serve answered 500).
        @example(("/v1/trades/ticks", {"market": "KRW-BTC", "cursor": "1" + "0" * 30}))
        @example(("/v1/trades/ticks", {"market": "KRW-BTC", "to": "235959", "cursor": "9" * 25}))
        def ask(request: tuple[str, dict[str, str]]) -> None:
            path, query = request
            response = runner.run(http.get(path, params=query))
            answered.append((path, query, response.status_code, response.text[:200]))
            assert response.status_code < 500, answered[-1]
            assert not sim.failures, (answered[-1], sim.failures)

        try:
            ask()
        finally:
            runner.run(stack.aclose())
    statuses = {status for _, _, status, _ in answered}
    assert 200 in statuses and 400 in statuses, statuses  # both good and bad were asked
