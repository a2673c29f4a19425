"""One client's bad request never hurts the others, and serve's failures are honest (#24
point 1): Upbit's parameters are checked before anything goes upstream; an upstream error
only one request gets never opens the shared circuit; when upstream cannot answer, serve
answers what it holds marked ``X-Marketspine-Stale``, else a 503 in Upbit's shape, never
an empty 200.

serve runs in-process (httpx ASGITransport) in front of the simulator, through a transport
that can ban (418), go down (connection refused) or fail one kind of request (500 or 400).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import NO_CAP, cap_pages, wait_until
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, format_utc
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._client.retry import RetryPolicy
from marketspine._serve.admin_page import AdminPage
from marketspine._serve.service import ServeService
from marketspine._store.sqlite import SQLiteStore
from marketspine.sim import SimConfig

WRONG_VALUE = "Invalid parameter. Check the given value!"
# Quick retries: a failing request costs milliseconds, not seconds of backoff.
FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002, max_ban_wait=0.0)


class Upstream(httpx.AsyncBaseTransport):
    """The simulator behind switchable faults: ``ban_s`` (every request gets a 418 of that
    many seconds), ``down`` (connection refused), ``hung`` (no answer), ``fails`` (a
    predicate on the request: answered ``fail_status``). ``sent`` counts what reached the
    simulator."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.ban_s = 0
        self.down = False
        self.hung = False
        self.fails: Callable[[httpx.Request], bool] = lambda request: False
        self.fail_status = 500
        self.sent = 0
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        if self.hung:
            self.refused += 1
            await asyncio.Event().wait()  # never answers: the client gives up on it
        if self.ban_s:
            self.refused += 1
            body = b'{"error":{"name":418,"message":"blocked"}}'
            return httpx.Response(418, headers={"Retry-After": str(self.ban_s)}, content=body)
        if self.fails(request):
            self.refused += 1
            status = self.fail_status
            return httpx.Response(status, json={"error": {"name": status, "message": "no"}})
        self.sent += 1
        return await self._inner.handle_async_request(request)


@pytest.fixture
def upstream(sim_app: Starlette) -> Upstream:
    return Upstream(httpx.ASGITransport(app=sim_app))


@pytest.fixture
async def service(upstream: Upstream, tmp_path: Path) -> AsyncIterator[ServeService]:
    async with in_process_serve(upstream, tmp_path / "serve.db", retry=FAST) as svc:
        yield svc


@pytest.fixture
async def http(service: ServeService) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(service) as client:
        yield client


def breaker(service: ServeService) -> tuple[str, int]:
    stats = service.spine.client.statistics().breaker
    return stats.state, stats.opened


def assert_upbit_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["name"] == 503 and "upstream" in error["message"]
    assert "X-Marketspine-Stale" not in response.headers


async def test_an_absurd_cursor_is_refused_before_upstream_and_others_are_served(
    service: ServeService, http: httpx.AsyncClient, upstream: Upstream, sim_app: Starlette
) -> None:
    stats = sim_app.state.sim.stats
    before = (upstream.sent, sum(stats.by_group.values()))
    for cursor in ["99999999999999999999999999", "-1", "1e9", "１"]:
        answer = await http.get(
            "/v1/trades/ticks",
            params={"market": "KRW-BTC", "cursor": cursor},
            headers={"X-Marketspine-Client": "attacker"},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"error": {"name": 400, "message": WRONG_VALUE}}
    for params in [{"market": "KRW-BTC", "to": "999999"}, {"market": "KRW-" + "X" * 40}]:
        answer = await http.get("/v1/trades/ticks", params=params)
        assert answer.status_code in (400, 404), answer.text
    # Nothing went upstream: the simulator counted no request.
    assert (upstream.sent, sum(stats.by_group.values())) == before
    other = await http.get(
        "/v1/orderbook", params={"markets": "KRW-ETH"}, headers={"X-Marketspine-Client": "bot"}
    )
    assert other.status_code == 200 and other.json()[0]["market"] == "KRW-ETH"
    assert breaker(service) == ("closed", 0)


@pytest.mark.parametrize("status", [500, 503, 400])
async def test_an_upstream_error_of_one_request_never_opens_the_circuit(
    service: ServeService, http: httpx.AsyncClient, upstream: Upstream, status: int
) -> None:
    # Upstream cannot answer one request (trades before one cursor), however often asked.
    upstream.fails = lambda request: "cursor" in request.url.params
    upstream.fail_status = status
    for _ in range(4):
        answer = await http.get(
            "/v1/trades/ticks", params={"market": "KRW-BTC", "cursor": "17853972606600000"}
        )
        if status >= 500:
            assert_upbit_503(answer)  # retried, then said: upstream failed this request
        else:
            assert answer.status_code == 400, answer.text
    assert upstream.refused == 4 * (FAST.attempts if status >= 500 else 1)
    assert breaker(service) == ("closed", 0)
    # Another client's requests go on, a cold candle request included.
    book = await http.get("/v1/orderbook", params={"markets": "KRW-ETH"})
    assert book.status_code == 200, book.text
    candles = await http.get("/v1/candles/minutes/5", params={"market": "KRW-XRP", "count": 3})
    assert candles.status_code == 200 and len(candles.json()) == 3
    assert candles.headers["X-Marketspine-Source"] != "none"


@pytest.mark.parametrize("failure", ["banned", "down"])
async def test_nothing_held_and_upstream_unable_is_a_503_never_an_empty_200(
    service: ServeService, http: httpx.AsyncClient, upstream: Upstream, failure: str
) -> None:
    if failure == "banned":
        upstream.ban_s = 60  # short enough that serve used to wait it out (8 s, then 429)
    else:
        upstream.down = True
    asked: list[tuple[str, dict[str, Any]]] = [
        ("/v1/candles/minutes/1", {"market": "KRW-BTC", "count": 50}),
        ("/v1/candles/days", {"market": "KRW-ETH", "count": 5, "to": "2026-07-01T00:00:00"}),
        ("/v1/candles/minutes/15", {"market": "KRW-SOL", "count": 10}),  # circuit open now
        ("/v1/ticker", {"markets": "KRW-BTC"}),
        ("/v1/orderbook", {"markets": "KRW-BTC"}),
    ]
    for path, params in asked:
        assert_upbit_503(await http.get(path, params=params))
    assert breaker(service)[0] == "open"  # a ban, or a refused connection every attempt


@pytest.mark.parametrize("failure", ["banned", "down"])
async def test_stored_candles_are_answered_stale_while_upstream_cannot_answer(
    service: ServeService, http: httpx.AsyncClient, upstream: Upstream, failure: str
) -> None:
    params: dict[str, Any] = {"market": "KRW-BTC", "count": 30}
    fresh = await http.get("/v1/candles/minutes/3", params=params)
    assert fresh.status_code == 200 and "X-Marketspine-Stale" not in fresh.headers
    service.spine.clear_memory()  # from the store, not memory
    if failure == "banned":
        upstream.ban_s = 60
    else:
        upstream.down = True
    stale = await http.get("/v1/candles/minutes/3", params=params)
    assert stale.status_code == 200, stale.text
    assert stale.headers["X-Marketspine-Stale"] == "true"
    # The forming candle needs upstream: left out; the closed ones come from the store.
    assert stale.json()[:29] == fresh.json()[1:]


@pytest.mark.process
@pytest.mark.parametrize("failure", ["banned", "hung"])
async def test_a_watched_ticker_is_answered_stale_at_once_while_upstream_fails(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path, failure: str
) -> None:
    with running_sim(SimConfig(rate_limit=0)) as url:
        upstream = Upstream(httpx.AsyncHTTPTransport())
        async with (
            ServeService(
                url,
                tmp_path / "serve.db",
                admin_token="t",
                transport=upstream,
                warmup_every_s=-1,
                retry=FAST,
            ) as service,
            service_client(service) as http,
        ):
            markets = (await http.get("/v1/market/all")).json()
            quiet = markets[-1]["market"]  # trades every few hours: its ticker ages
            params = {"markets": quiet}
            first = await http.get("/v1/ticker", params=params)
            assert first.status_code == 200, first.text
            live = service.spine._live
            await wait_until(
                lambda: live.ticker(quiet) is not None and live.ticker(quiet, 1.0) is None,
                20,
                "the stream to hold the quiet market's ticker, older than 1 s",
            )
            if failure == "banned":
                upstream.ban_s = 60  # never waited out while a client waits
            else:
                upstream.hung = True  # retried for longer than a client waits (8 s)
            # While the stream proves the quiet market's ticker current, it is simply
            # live: not stale, and nothing asked upstream.
            asked = upstream.refused
            current = await http.get("/v1/ticker", params=params)
            assert current.status_code == 200, current.text
            assert "X-Marketspine-Stale" not in current.headers
            assert current.headers["X-Marketspine-Source"] == "live"
            assert upstream.refused == asked
            # As while the socket reconnects: what is held is of unknown currency.
            live.follow_liveness(lambda: None)
            stale = await http.get("/v1/ticker", params=params)
            assert stale.status_code == 200, stale.text
            assert stale.headers["X-Marketspine-Stale"] == "true"
            assert stale.headers["X-Marketspine-Source"] == "live"
            assert stale.json()[0]["market"] == quiet
            assert stale.json()[0]["trade_price"] == first.json()[0]["trade_price"]
            if failure == "banned":
                again = await http.get("/v1/ticker", params=params)  # circuit open
                assert again.headers["X-Marketspine-Stale"] == "true"
                assert upstream.refused == 1
                assert_upbit_503(await http.get("/v1/ticker", params={"markets": "KRW-ETH"}))


@pytest.mark.process
def test_the_absurd_cursor_of_the_issue_against_real_processes(
    running_sim: Callable[..., AbstractContextManager[str]],
    start_serve: Callable[..., AbstractContextManager[Any]],
    tmp_path: Path,
) -> None:
    """#24's reproduction: the 26-digit cursor was passed upstream, answered 500, retried,
    and opened the shared circuit for every client. Now: 400 from serve, nothing upstream."""
    with running_sim(SimConfig(rate_limit=0)) as sim, start_serve(sim, tmp_path / "s.db") as served:

        def trade_requests() -> int:
            stats = httpx.get(sim + "/sim/stats", timeout=10).json()
            return int(stats["requests"]["by_path"].get("/v1/trades/ticks", 0))

        answer = served.get("/v1/trades/ticks", market="KRW-BTC", cursor="9" * 26)
        assert answer.status_code == 400
        assert answer.json() == {"error": {"name": 400, "message": WRONG_VALUE}}
        assert trade_requests() == 0  # (serve's own warmup may ask other paths meanwhile)
        other = served.get("/v1/orderbook", markets="KRW-ETH", headers={"User-Agent": "other"})
        assert other.status_code == 200, other.text
        metrics = served.get("/metrics").text
        assert "marketspine_upstream_circuit_open 0.0" in metrics
        assert re.search(r"marketspine_upstream_circuit_opened(_total)? 0\.0", metrics)


async def test_a_backfill_job_pauses_over_a_ban_and_completes(
    service: ServeService, http: httpx.AsyncClient, upstream: Upstream, sim_now_ms: int
) -> None:
    since = format_utc(sim_now_ms - 2 * DAY_MS) + "Z"
    assert (await http.get("/v1/market/all")).status_code == 200  # the market list is held
    upstream.ban_s = 1  # serve fails fast on it; the job waits it out and goes on
    started = await http.post(
        "/api/backfill",
        json={"markets": ["KRW-ETH"], "timeframe": "15m", "since": since},
        headers={"Authorization": "Bearer t"},
    )
    assert started.status_code == 202, started.text
    job = service.jobs.get(started.json()["id"])
    assert job is not None
    await wait_until(lambda: upstream.refused >= 1, 10, "the job to meet the ban")
    upstream.ban_s = 0
    await wait_until(job.done.is_set, 20, "the job to finish after the ban")
    assert job.state == "done", job.error
    assert job.progress["KRW-ETH"].finished and job.progress["KRW-ETH"].candles_written > 0


async def test_a_full_database_answers_what_was_fetched_holds_it_and_says_so_once(
    service: ServeService,
    http: httpx.AsyncClient,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # SQLite refuses writes as on a full disk (the file's pages capped): a candle page
    # fetched for a client cannot be stored. The client gets it all the same, and it is held
    # (asked again, no upstream call) until there is room; the database's path and cause are
    # for the operator: one WARNING. The others' stored answers go on.
    store = service.spine.store
    assert isinstance(store, SQLiteStore)
    stored = await http.get("/v1/candles/minutes/5", params={"market": "KRW-ETH", "count": 3})
    assert stored.status_code == 200
    await cap_pages(store, None)
    days: dict[str, str | int] = {"count": 100, "to": "2026-07-01"}
    answers = {}
    for market in ("KRW-BTC", "KRW-XRP"):
        answer = await http.get("/v1/candles/days", params={"market": market, **days})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()) == 100 and "X-Marketspine-Stale" not in answer.headers
        answers[market] = answer.json()
    service.spine.clear_memory()
    sent = upstream.sent
    again = await http.get("/v1/candles/days", params={"market": "KRW-BTC", **days})
    assert again.status_code == 200 and again.json() == answers["KRW-BTC"]
    assert upstream.sent == sent  # held, not fetched again
    assert await store.read("KRW-BTC", TF["1d"], 0, 2**62) == []  # not stored meanwhile
    held = await http.get("/v1/candles/minutes/5", params={"market": "KRW-ETH", "count": 3})
    assert held.status_code == 200 and held.json() == stored.json()
    full = [r for r in caplog.records if getattr(r, "event", None) == "database_full"]
    assert len(full) == 1 and full[0].levelname == "WARNING"
    status = (await http.get("/api/status", headers={"Authorization": "Bearer t"})).json()
    held_candles = status["spine"]["held_candles"]
    assert held_candles >= 200  # two pages at least, one a market
    metrics = (await http.get("/metrics")).text
    assert f"marketspine_store_held_candles {float(held_candles)}" in metrics
    assert (await AdminPage(service).snapshot())["held_candles"] == held_candles
    await cap_pages(store, NO_CAP)  # room: the next page fetched writes what was held first
    more = await http.get("/v1/candles/days", params={"market": "KRW-SOL", **days})
    assert more.status_code == 200
    for market in ("KRW-BTC", "KRW-XRP", "KRW-SOL"):
        assert len(await store.read(market, TF["1d"], 0, 2**62)) >= 100  # whole pages
    assert service.spine.statistics().held_candles == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback
