"""Web pages of any origin may read serve's (and replay's) Upbit quotation answers, as they
read api.upbit.com's: ``/v1`` answers a request carrying ``Origin`` with CORS headers (the
budget's and the answering layer's headers readable too) and a preflight for ``GET``, the
fast path of kept candle pages included. ``/api``, ``/metrics`` and the admin page carry no
CORS header, so a page elsewhere cannot read them. In-process on the simulator, then a real
chromium: a chart page on another loopback port reads ``/v1`` and is refused ``/api``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from replay_support import BTC, make_recording, replay_server
from serve_support import AUTH, TOKEN, ServeProcess, in_process_serve, service_client
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from marketspine._serve.replay_app import REPLAY_TIME_HEADER
from marketspine._serve.security import AllowedHosts
from marketspine._serve.server_thread import server_thread
from marketspine._serve.service import ServeService

ORIGIN = "http://localhost:5173"  # a chart's dev server
PAGE = {"Origin": ORIGIN}
CANDLES = "/v1/candles/minutes/5"
KEPT = {"market": "KRW-BTC", "count": "20", "to": "2026-01-01T00:00:00"}


@pytest.fixture
async def service(sim_app: Starlette, tmp_path: Path) -> AsyncIterator[ServeService]:
    async with in_process_serve(sim_app, tmp_path / "serve.db", admin_token=TOKEN) as svc:
        yield svc


@pytest.fixture
async def http(service: ServeService) -> AsyncIterator[httpx.AsyncClient]:
    # Behind the Host check, as serve runs, asked by IP address as a page's fetch would be.
    hosts = AllowedHosts([])
    async with service_client(
        service, allowed_hosts=hosts, base_url="http://127.0.0.1:8600"
    ) as client:
        yield client


def exposed(response: httpx.Response) -> set[str]:
    names = response.headers.get("access-control-expose-headers", "")
    return {name.strip().lower() for name in names.split(",") if name.strip()}


async def test_a_web_page_reads_v1_answers_and_their_budget_headers(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/v1/ticker", params={"markets": "KRW-BTC"}, headers=PAGE)
    assert page.status_code == 200 and page.json()[0]["market"] == "KRW-BTC"
    assert page.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in page.headers  # public data only
    assert {"remaining-req", "retry-after", "x-marketspine-source"} <= exposed(page)
    # Errors too: the page reads Upbit's error body.
    bad = await http.get("/v1/ticker", params={"markets": "KRW-NOPE"}, headers=PAGE)
    assert bad.status_code == 404 and bad.headers["access-control-allow-origin"] == "*"
    # Scripts send no Origin: their answers are as before.
    script = await http.get("/v1/ticker", params={"markets": "KRW-BTC"})
    assert script.status_code == 200
    assert not any(name.startswith("access-control-") for name in script.headers)


async def test_a_preflight_for_get_of_v1_is_allowed_and_other_methods_are_not(
    http: httpx.AsyncClient,
) -> None:
    preflight = {**PAGE, "Access-Control-Request-Method": "GET"}
    asked = await http.options(
        CANDLES, headers={**preflight, "Access-Control-Request-Headers": "x-chart"}
    )
    assert asked.status_code == 200, asked.text
    assert asked.headers["access-control-allow-origin"] == "*"
    assert asked.headers["access-control-allow-methods"] == "GET"
    assert asked.headers["access-control-allow-headers"] == "x-chart"
    assert asked.headers["access-control-max-age"] == "600"
    refused = await http.options(
        CANDLES, headers={**preflight, "Access-Control-Request-Method": "DELETE"}
    )
    assert refused.status_code == 400, refused.text
    assert refused.headers["access-control-allow-methods"] == "GET"  # the browser won't send


@pytest.mark.parametrize("path", ["/api/status", "/metrics", "/admin", "/healthz"])
async def test_api_metrics_and_the_admin_page_carry_no_cors_headers(
    http: httpx.AsyncClient, path: str
) -> None:
    read = await http.get(path, headers={**PAGE, **AUTH})
    assert read.status_code == 200, read.text
    assert not any(name.startswith("access-control-") for name in read.headers)
    preflight = await http.options(
        path,
        headers={**PAGE, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"},
    )  # fmt: skip
    assert not any(name.startswith("access-control-") for name in preflight.headers)


async def test_a_kept_candle_page_asked_by_a_web_page_carries_the_cors_headers(
    http: httpx.AsyncClient, service: ServeService
) -> None:
    first = await http.get(CANDLES, params=KEPT)
    assert first.status_code == 200 and len(first.json()) == 20, first.text
    query = httpx.URL(CANDLES, params=KEPT).query
    assert service.closed_answers.spelled(CANDLES, query) is not None  # the fast path's now
    script = await http.get(CANDLES, params=KEPT)
    assert script.headers["x-marketspine-source"] == "memory"
    assert "access-control-allow-origin" not in script.headers
    page = await http.get(CANDLES, params=KEPT, headers=PAGE)
    assert page.headers["x-marketspine-source"] == "memory"
    assert page.headers["access-control-allow-origin"] == "*"
    assert page.content == first.content


def test_replay_answers_web_pages_with_its_replay_time_readable(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    make_recording(db)
    with replay_server(db) as url:
        page = httpx.get(url + "/v1/trades/ticks", params={"market": BTC}, headers=PAGE)
        api = httpx.get(url + "/api/status", headers=PAGE)
    assert page.status_code == 200 and page.headers["access-control-allow-origin"] == "*"
    assert REPLAY_TIME_HEADER.lower() in exposed(page)
    assert api.status_code == 200 and "access-control-allow-origin" not in api.headers


_CHART = """<!doctype html><title>chart</title><script>
const serve = new URL(location).searchParams.get("serve");
const read = (path, init) => fetch(serve + path, init).then(
  r => r.json().then(body => ({status: r.status, body, remaining: r.headers.get("remaining-req")})),
  e => ({error: String(e)}));
window.reads = Promise.all([
  read("/v1/ticker?markets=KRW-BTC"),
  read("/v1/candles/minutes/1?market=KRW-BTC&count=3", {headers: {"X-Chart": "1"}}),
  read("/api/status"),
]);
</script>"""


async def _chart(request: Any) -> HTMLResponse:
    return HTMLResponse(_CHART)


@pytest.mark.process
@pytest.mark.browser
def test_a_chart_page_of_another_origin_reads_v1_in_chromium_but_not_api(
    browser: Any, serve: ServeProcess
) -> None:
    # The page comes from another port of this host: another origin, on the loopback, as a
    # chart's dev server would be (a public site's page needs the browser's permission to
    # reach the loopback at all).
    with server_thread(Starlette(routes=[Route("/", _chart)])) as chart:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{chart}/?serve={serve.url}")
            ticker, candles, api = page.evaluate("window.reads")
        finally:
            context.close()
    assert ticker["status"] == 200 and ticker["body"][0]["market"] == "KRW-BTC", ticker
    assert ticker["remaining"].startswith("group=ticker; min=")
    assert candles["status"] == 200 and len(candles["body"]) == 3, candles  # after a preflight
    assert api == {"error": "TypeError: Failed to fetch"}  # refused by the browser
