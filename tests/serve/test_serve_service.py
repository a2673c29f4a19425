"""The serve app in-process (httpx ASGITransport) on the in-process simulator: fair
queueing between clients, the bounded wait, a 418 served from cache marked stale, the /api
candles, coverage and backfill jobs, and live watching that stops after idling."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from helpers import afternoon_clock, wait_until
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, HOUR_MS, MINUTE_MS, format_utc, parse_time
from marketspine._serve.app import create_service_app
from marketspine._serve.service import ServeService

TOO_MANY = "Too many API requests."


class Banning(httpx.AsyncBaseTransport):
    """The simulator, until ``banned``: then every request gets a 10-minute 418."""

    def __init__(self, app: Starlette) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.banned = False
        self.bans = 0
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.banned:
            self.bans += 1
            body = b'{"error":{"name":418,"message":"blocked for 600 seconds"}}'
            return httpx.Response(418, headers={"Retry-After": "600"}, content=body)
        return await self._inner.handle_async_request(request)


@pytest.fixture
def upstream(sim_app: Starlette) -> Banning:
    return Banning(sim_app)


@pytest.fixture
async def service(upstream: Banning, tmp_path: Path) -> AsyncIterator[ServeService]:
    async with in_process_serve(upstream, tmp_path / "serve.db") as svc:
        yield svc


@pytest.fixture
async def http(service: ServeService) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(service, headers={"Authorization": "Bearer t"}) as client:
        yield client


MARKETS = [
    "KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-ADA", "KRW-DOGE", "KRW-TRX", "KRW-DOT",
    "KRW-AVAX", "KRW-LINK", "KRW-ATOM", "KRW-NEAR", "KRW-SUI", "KRW-APT", "KRW-ARB", "KRW-OP",
    "KRW-SAND", "KRW-MANA", "KRW-AXS", "KRW-ETC",
]  # fmt: skip


async def known_markets(http: httpx.AsyncClient, n: int) -> list[str]:
    listed = {row["market"] for row in (await http.get("/v1/market/all")).json()}
    codes = [m for m in MARKETS if m in listed]
    codes += sorted(m for m in listed if m not in codes)
    assert len(codes) >= n
    return codes[:n]


async def test_a_flooding_client_does_not_queue_ahead_of_another(
    service: ServeService, http: httpx.AsyncClient
) -> None:
    codes = await known_markets(http, 21)
    service.gate = type(service.gate)(per_client=2)
    done: list[str] = []

    async def ask(who: str, code: str) -> None:
        response = await http.get(
            "/v1/ticker", params={"markets": code}, headers={"X-Marketspine-Client": who}
        )
        assert response.status_code == 200, response.text
        done.append(who)

    flood = [asyncio.create_task(ask("flood", code)) for code in codes[:20]]
    await wait_until(lambda: service.gate.waiting() >= 8, 10, "8 requests at the gate")
    done_before = len(done)
    waiting = service.gate.waiting()
    await ask("polite", codes[20])
    await asyncio.gather(*flood)
    # Behind at most the flood's two requests inside, not behind all it had waiting.
    assert waiting >= 8
    assert done.index("polite") <= done_before + 2, (done_before, done)
    assert done[-1] == "flood"


async def test_a_request_waiting_too_long_gets_upbits_429_for_that_client_only(
    service: ServeService, http: httpx.AsyncClient
) -> None:
    codes = await known_markets(http, 16)
    service.gate = type(service.gate)(per_client=1)
    service.max_wait_s = 0.3

    async def ask(who: str, code: str) -> httpx.Response:
        return await http.get(
            "/v1/ticker", params={"markets": code}, headers={"X-Marketspine-Client": who}
        )

    flood = [asyncio.create_task(ask("flood", code)) for code in codes[:15]]
    await wait_until(lambda: service.gate.waiting() >= 5, 10, "5 requests at the gate")
    polite = await ask("polite", codes[15])
    answers = await asyncio.gather(*flood)
    assert polite.status_code == 200
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(a.text == TOO_MANY for a in refused)
    assert all(a.status_code in (200, 429) for a in answers)
    assert all("Remaining-Req" in a.headers for a in refused)


async def test_a_418_opens_the_breaker_and_cache_is_served_stale(
    service: ServeService, http: httpx.AsyncClient, upstream: Banning
) -> None:
    params: dict[str, str | int] = {"market": "KRW-BTC", "count": 50}
    fresh = await http.get("/v1/candles/minutes/1", params=params)
    assert fresh.status_code == 200 and len(fresh.json()) == 50
    assert "X-Marketspine-Stale" not in fresh.headers
    upstream.banned = True
    stale = await http.get("/v1/candles/minutes/1", params=params)
    assert stale.status_code == 200, stale.text
    assert stale.headers["X-Marketspine-Stale"] == "true"
    # The forming candle needs upstream: left out; the closed ones come from cache.
    assert stale.json()[:49] == fresh.json()[1:]
    again = await http.get("/v1/candles/minutes/1", params=params)
    assert again.headers["X-Marketspine-Stale"] == "true"
    nothing_cached = await http.get("/v1/ticker", params={"markets": "KRW-ETH"})
    assert nothing_cached.status_code == 503
    assert nothing_cached.json()["error"]["name"] == 503
    assert upstream.bans == 1  # one 418, then no more hammering
    metrics = (await http.get("/metrics")).text
    assert "marketspine_upstream_banned_total 1.0" in metrics


async def test_api_candles_any_length_derived_and_filled(
    http: httpx.AsyncClient, sim_now_ms: int
) -> None:
    start = format_utc(sim_now_ms - 2 * DAY_MS) + "Z"
    end = format_utc(sim_now_ms - sim_now_ms % HOUR_MS) + "Z"
    hourly = await http.get(
        "/api/candles", params={"market": "KRW-BTC", "timeframe": "1h", "start": start, "end": end}
    )
    assert hourly.status_code == 200, hourly.text
    body = hourly.json()
    assert body["timeframe"] == "1h" and 40 <= len(body["candles"]) <= 48
    times = [c["time_utc"] for c in body["candles"]]
    assert times == sorted(set(times)) and times[0] >= start and times[-1] < end
    minutes = await http.get(
        "/api/candles",
        params={"market": "KRW-BTC", "timeframe": "1m", "start": start, "end": end, "fill": "true"},
    )
    filled = [parse_time(c["time_utc"]) for c in minutes.json()["candles"]]
    assert all(b - a == MINUTE_MS for a, b in itertools.pairwise(filled))
    first_minute = -(-parse_time(start) // MINUTE_MS) * MINUTE_MS
    assert first_minute <= filled[0] <= first_minute + 5 * MINUTE_MS
    assert filled[-1] == parse_time(end) - MINUTE_MS
    again = await http.get(
        "/api/candles", params={"market": "KRW-BTC", "timeframe": "1h", "start": start, "end": end}
    )
    assert again.json()["meta"]["upstream_calls"] == 0
    assert again.json()["meta"]["provisional"] == 0  # a range read: upstream's own candles
    coverage = (
        await http.get("/api/coverage", params={"market": "KRW-BTC", "timeframe": "1m"})
    ).json()
    assert coverage["ranges"] and coverage["ranges"][0][0] <= start
    bad = await http.get("/api/candles", params={"market": "KRW-BTC", "timeframe": "2m"})
    assert bad.status_code == 400 and "2m" in bad.json()["error"]["message"]


async def test_backfill_job_progress_and_cancel(
    service: ServeService, http: httpx.AsyncClient, sim_now_ms: int
) -> None:
    since = format_utc(sim_now_ms - DAY_MS) + "Z"
    started = await http.post(
        "/api/backfill", json={"markets": ["KRW-ETH", "KRW-XRP"], "timeframe": "5m", "since": since}
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    job = service.jobs.get(job_id)
    assert job is not None
    async with asyncio.timeout(20):
        await job.done.wait()
    report = (await http.get(f"/api/backfill/{job_id}")).json()
    assert report["state"] == "done" and report["progress"] == 1.0
    assert all(m["pages"] >= 1 for m in report["per_market"].values())
    long = await http.post(
        "/api/backfill",
        json={
            "markets": ["KRW-BTC"],
            "timeframe": "1s",
            "since": format_utc(sim_now_ms - 30 * DAY_MS),
        },
    )
    long_id = long.json()["id"]
    cancelled = await http.delete(f"/api/backfill/{long_id}")
    assert cancelled.json()["state"] == "cancelled"
    assert [j["id"] for j in (await http.get("/api/backfill")).json()] == [job_id, long_id]
    assert (await http.get("/api/backfill/nope")).status_code == 404
    bad = await http.post("/api/backfill", json={"markets": [], "timeframe": "5m", "since": since})
    assert bad.status_code == 400
    typo = await http.post(
        "/api/backfill", json={"markets": ["KRW-BTC", "KRW-BTX"], "timeframe": "5m", "since": since}
    )
    assert typo.status_code == 404, typo.text
    assert "'KRW-BTX'" in typo.json()["error"]["message"]
    assert len((await http.get("/api/backfill")).json()) == 2  # no job was started for it


async def test_live_watch_on_demand_stops_after_idling(
    running_sim: Callable[..., object], tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    # Ten times real speed: trades (and so fresh live tickers) come often, even under load.
    with running_sim(SimConfig(rate_limit=0, speed=10.0), afternoon_clock(10.0)) as url:  # type: ignore[attr-defined]
        async with ServeService(
            url, tmp_path / "live.db", admin_token="t", warmup_every_s=-1, idle_unwatch_s=0.3
        ) as service:
            service.demand.want("ticker", "KRW-BTC")
            service.demand.want("candle.1m", "KRW-ETH")  # built from KRW-ETH's trade stream
            live = service.demand.is_live
            await wait_until(lambda: live("ticker", "KRW-BTC"), 30, "a live KRW-BTC ticker")
            await wait_until(lambda: live("candle.1m", "KRW-ETH"), 30, "live KRW-ETH 1m candles")
            ticker = await service.spine.ticker("KRW-BTC")
            assert ticker.market == "KRW-BTC"
            async with service_client(service) as http:
                sources: list[str] = []
                for _ in range(500):  # the live ticker is fresh within a second of a trade
                    answer = await http.get("/v1/ticker", params={"markets": "KRW-BTC"})
                    sources.append(answer.headers["X-Marketspine-Source"])
                    if sources[-1] == "live":
                        break
                    await asyncio.sleep(0.02)
                assert sources[-1] == "live", sources
            # idle: unwatched again
            await wait_until(lambda: not service.demand.watched(), 10, "nothing watched")

            def open_sockets() -> int:
                stats = httpx.get(url + "/sim/stats", timeout=5).json()
                return int(stats["websocket"]["open"])

            await wait_until(lambda: open_sockets() == 0, 10, "every socket closed")


async def test_identical_requests_from_many_clients_make_one_upstream_call(
    http: httpx.AsyncClient, upstream: Banning
) -> None:
    await http.get("/v1/market/all")  # the market list, out of the way

    async def ask(who: int) -> httpx.Response:
        return await http.get(
            "/v1/ticker/all",
            params={"quote_currencies": "KRW"},
            headers={"X-Marketspine-Client": f"bot-{who}"},
        )

    before = upstream.paths.count("/v1/ticker/all")
    answers = await asyncio.gather(*(ask(i) for i in range(12)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert upstream.paths.count("/v1/ticker/all") == before + 1


async def test_warmup_runs_at_start_and_on_its_schedule(sim_app: Starlette, tmp_path: Path) -> None:
    async with in_process_serve(sim_app, tmp_path / "w.db", warmup_every_s=0.05) as service:
        registry = service.metrics.registry

        def runs() -> float:
            return (
                registry.get_sample_value("marketspine_warmups_total", {"result": "success"}) or 0
            )

        await wait_until(lambda: runs() >= 3, 10, "three runs")
        assert service.warmup_report is not None and service.warmup_report["success"]


async def test_an_unexpected_failure_is_an_upbit_shaped_500(
    service: ServeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**_: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service.spine, "markets", broken)
    app = create_service_app(service)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
        response = await http.get("/v1/market/all")
    assert response.status_code == 500
    message = "internal error (RuntimeError): serve's log has the details"
    assert response.json() == {"error": {"name": 500, "message": message}}
    assert "disk on fire" not in response.text  # a driver's text may carry a database URL


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/candles/minutes/1", {"GET", "HEAD"}),
        ("DELETE", "/v1/ticker", {"GET", "HEAD"}),
        ("PUT", "/api/backfill", {"GET", "HEAD", "POST"}),  # two methods, one path
        ("POST", "/api/backfill/some-job", {"GET", "HEAD", "DELETE"}),
        ("GET", "/admin/api/refresh-market-info", {"POST"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
    ],
)
async def test_a_wrong_method_on_a_known_path_is_405_naming_the_allowed_ones(
    http: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    response = await http.request(method, path)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed
    error = response.json()["error"]
    assert error["name"] == 405
    assert f"{method} {path}" in error["message"]
    assert all(name in error["message"] for name in allowed), error["message"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_unknown_path_stays_the_gateway_404(http: httpx.AsyncClient, method: str) -> None:
    response = await http.request(method, "/v1/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"name": "not_found", "message": "no Route matched with those values"}
    }


async def test_polled_series_show_in_status_and_metrics(http: httpx.AsyncClient) -> None:
    for _ in range(3):  # a bot polling the last 50 minutes
        answer = await http.get("/v1/candles/minutes/1", params={"market": "KRW-BTC", "count": 50})
        assert answer.status_code == 200 and len(answer.json()) == 50
    polled = (await http.get("/api/status")).json()["polled"]
    assert [(p["market"], p["timeframe"], p["count"], p["learned"]) for p in polled] == [
        ("KRW-BTC", "1m", 50, True)
    ]
    metrics = (await http.get("/metrics")).text
    assert 'marketspine_polled_series{learned="true"} 1.0' in metrics
    assert "marketspine_learned_poll_hits_total 0.0" in metrics
    assert 'marketspine_hot_closes_total{source="live"} 0.0' in metrics
    status = (await http.get("/api/status")).json()
    assert status["spine"]["hot_closes_live"] == 0
    assert status["spine"]["hot_reads_waited"] == status["spine"]["hot_reads_waited_in_vain"] == 0
    assert "marketspine_hot_reads_waited_total 0.0" in metrics
    assert "marketspine_hot_reads_waited_in_vain_total 0.0" in metrics


async def test_status_tells_what_happened_upstream(http: httpx.AsyncClient) -> None:
    answer = await http.get("/v1/ticker", params={"markets": "KRW-BTC"})
    assert answer.status_code == 200
    upstream = (await http.get("/api/status")).json()["upstream"]
    assert upstream["sent"]["ticker"] >= 1
    # Nothing given up on, no HTTP/2 connection left for a new one (the simulator is HTTP/1.1).
    assert upstream["timed_out"] == upstream["connections_retired"] == upstream["failed"] == 0
    metrics = (await http.get("/metrics")).text
    assert "marketspine_upstream_timed_out_total 0.0" in metrics
    assert "marketspine_upstream_connections_retired_total 0.0" in metrics


async def test_a_repeated_history_page_takes_the_fast_path_with_the_same_answer(
    http: httpx.AsyncClient, service: ServeService, upstream: Banning
) -> None:
    path = "/v1/candles/minutes/5"
    params: dict[str, str | int] = {"market": "KRW-BTC", "count": 20, "to": "2026-01-01T00:00:00"}
    first = await http.get(path, params=params)
    assert first.status_code == 200 and len(first.json()) == 20
    slow = await http.get(path, params={**params, "junk": "x"})  # parsed: same key, kept
    assert slow.headers["X-Marketspine-Source"] == "memory"
    fast = await http.get(path, params=params)
    asked = len(upstream.paths)
    for answer in (slow, fast):
        assert answer.content == first.content
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["Remaining-Req"].startswith("group=candles;")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"  # security headers too
    # The fast path is the one the handler never saw: its answers are still counted.
    metrics = (await http.get("/metrics")).text
    served = [
        line for line in metrics.splitlines()
        if line.startswith('marketspine_http_requests_total{route="/v1/candles/minutes/{unit}"')
    ]  # fmt: skip
    assert served == [
        'marketspine_http_requests_total{route="/v1/candles/minutes/{unit}",status="200"} 3.0'
    ]
    assert len(upstream.paths) == asked
    # A spelling never answered is parsed as usual, and a closed page it means is kept.
    other = await http.get(path, params={**params, "count": 19})
    assert other.json() == first.json()[:19] or other.json() == first.json()[1:]
