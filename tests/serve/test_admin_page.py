"""The admin page's login, session cookie and CSRF rules, through the real ``serve``."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from helpers import SIM_NOW_MS, wait_until_sync
from serve_support import AUTH, TOKEN, ServeProcess, sim_stats

from marketspine._base.time import format_utc

pytestmark = pytest.mark.process

REFRESH = "/admin/api/refresh-market-info"


@contextlib.contextmanager
def login(serve: ServeProcess, token: str = TOKEN) -> Iterator[tuple[httpx.Client, str]]:
    """A logged-in client and its CSRF token (read from the page, as the browser does)."""
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        answer = client.post("/admin/login", data={"token": token})
        assert answer.status_code == 303, answer.text
        page = client.get("/admin").text
        found = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert found, "the dashboard carries its CSRF token"
        yield client, found.group(1)


def market_requests(sim: str) -> int:
    return int(sim_stats(sim)["requests"]["by_group"].get("market", 0))


def test_login_sets_a_strict_http_only_expiring_session_cookie(serve: ServeProcess) -> None:
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        page = client.get("/admin")
        assert page.status_code == 200 and 'id="token"' in page.text, "the login page"
        assert "csrf-token" not in page.text
        answer = client.post("/admin/login", data={"token": TOKEN})
        assert answer.status_code == 303 and answer.headers["location"] == "/admin"
        cookie = answer.headers["set-cookie"].lower()
        for flag in ("httponly", "samesite=strict", "max-age=", "path=/admin"):
            assert flag in cookie, f"{flag} missing from {cookie}"
        dashboard = client.get("/admin")
        assert 'id="refresh-market-btn"' in dashboard.text
        assert 'id="market-status"' in dashboard.text


def test_a_wrong_token_gets_no_session(serve: ServeProcess) -> None:
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        answer = client.post("/admin/login", data={"token": TOKEN + "x"})
        assert answer.status_code == 401 and "wrong admin token" in answer.text
        assert "set-cookie" not in answer.headers
        assert client.get("/admin/api/state").status_code == 401


def test_state_changes_need_the_session_and_its_csrf_token(
    serve: ServeProcess, fixed_sim: str
) -> None:
    # serve's own warmup at start asks for the market list too: count from after it.
    wait_until_sync(
        lambda: serve.get("/api/warmup", headers=AUTH).status_code == 200,
        30,
        "serve's start-up warmup",
    )
    with login(serve) as (client, csrf):
        before = market_requests(fixed_sim)
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            refused = client.post(REFRESH, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["name"] == "csrf"
            assert client.post("/admin/api/backfill", headers=headers, json={}).status_code == 403
            assert client.post("/admin/logout", headers=headers).status_code == 403
        assert market_requests(fixed_sim) == before, "a refused refresh changed nothing"

        done = client.post(REFRESH, headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200 and done.json()["success"] is True
        assert market_requests(fixed_sim) == before + 1
        state = client.get("/admin/api/state").json()
        assert state["warmup"]["total_markets"] == done.json()["total_markets"]
        assert set(state) >= {"budget", "upstream", "layers", "websocket", "tickers", "jobs"}

        # Another session's CSRF token is not this one's.
        with login(serve) as (_, other_csrf):
            assert client.post(REFRESH, headers={"X-CSRF-Token": other_csrf}).status_code == 403
        assert client.post("/admin/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert client.get("/admin/api/state").status_code == 401, "logged out"
        assert client.post(REFRESH, headers={"X-CSRF-Token": csrf}).status_code == 401


def test_without_a_session_only_the_bearer_token_works(serve: ServeProcess) -> None:
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        assert client.post(REFRESH).status_code == 401
        assert client.post("/admin/api/backfill", json={}).status_code == 401
        assert client.get("/admin/api/state").status_code == 401
        bearer = client.post(REFRESH, headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200 and bearer.json()["success"] is True


def test_the_websocket_figures_are_those_of_the_metrics(serve: ServeProcess) -> None:
    """The page shows the gateway's counters as ``/metrics`` has them, the snapshot joins
    (walks, the trades they filled, those that left a hole) included."""
    with login(serve) as (client, _):
        websocket = client.get("/admin/api/state").json()["websocket"]
        metrics = client.get("/metrics").text
    for field, metric in (
        ("dropped_clients", "marketspine_websocket_dropped_clients_total"),
        ("snapshot_joins", "marketspine_websocket_snapshot_joins_total"),
        ("snapshot_join_trades", "marketspine_websocket_snapshot_join_trades_total"),
        ("snapshot_joins_incomplete", "marketspine_websocket_snapshot_joins_incomplete_total"),
    ):
        found = re.search(rf"\n{metric} (\S+)\n", metrics)
        assert found is not None, f"{metric} missing from /metrics"
        assert websocket[field] == float(found.group(1)), field


def test_backfill_from_the_admin_api_reports_bad_input(serve: ServeProcess) -> None:
    with login(serve) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        missing = client.post("/admin/api/backfill", headers=headers, json={"markets": []})
        assert missing.status_code == 400 and "markets" in missing.json()["error"]["message"]
        bad = client.post(
            "/admin/api/backfill",
            headers=headers,
            json={"markets": ["KRW-BTC"], "timeframe": "7m", "since": "2026-07-01"},
        )
        assert bad.status_code == 400 and "7m" in bad.json()["error"]["message"]
        assert client.delete("/admin/api/backfill/nope", headers=headers).status_code == 404


def test_repeated_failed_logins_slow_the_client_down(
    start_serve: Callable[..., AbstractContextManager[ServeProcess]],
    fixed_sim: str,
    tmp_path: Path,
) -> None:
    with (
        start_serve(fixed_sim, tmp_path / "db.sqlite", "--admin-token", TOKEN) as served,
        httpx.Client(base_url=served.url, timeout=30) as client,
    ):
        codes = [client.post("/admin/login", data={"token": "bad"}).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 401]
        # The fourth failure started a lock-out: even the right token waits for it now.
        locked = client.post("/admin/login", data={"token": TOKEN})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
        assert "set-cookie" not in locked.headers


def test_a_backfill_job_started_from_the_page_can_be_cancelled(serve: ServeProcess) -> None:
    with login(serve) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        # Two years of 1m candles: thousands of pages, far from done when cancelled.
        started = client.post(
            "/admin/api/backfill",
            headers=headers,
            json={
                "markets": "KRW-BTC KRW-ETH",
                "timeframe": "1m",
                "since": format_utc(SIM_NOW_MS - 730 * 86_400_000) + "Z",
                "until": format_utc(SIM_NOW_MS - 86_400_000) + "Z",
            },
        )
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["markets"] == ["KRW-BTC", "KRW-ETH"] and job["state"] == "running"
        assert client.delete(f"/admin/api/backfill/{job['id']}").status_code == 403, "no CSRF"
        cancelled = client.delete(f"/admin/api/backfill/{job['id']}", headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        deadline = time.monotonic() + 30
        while (state := client.get(f"/api/backfill/{job['id']}", headers=AUTH).json())[
            "state"
        ] == "running":
            assert time.monotonic() < deadline, "the cancelled job never stopped"
            time.sleep(0.05)
        assert state["state"] == "cancelled" and state["progress"] < 1.0
        listed = client.get("/admin/api/state").json()["jobs"]
        assert any(j["id"] == job["id"] and j["state"] == "cancelled" for j in listed)


def test_the_dashboard_has_the_history_and_chart_parts_and_no_inline_script(
    serve: ServeProcess,
) -> None:
    with login(serve) as (client, _):
        html = client.get("/admin").text
    for part in ('id="history"', 'id="history-chart"', 'id="history-rate"', 'id="chart-error"'):
        assert part in html, part
    assert 'id="chart-green-red"' in html
    # A Content-Security-Policy without 'unsafe-inline' must not break the page.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html), "an inline event handler"


def test_plotly_is_sent_compressed_deferred_and_cached(serve: ServeProcess) -> None:
    plotly = serve.url + "/admin/static/plotly.min.js"
    with httpx.Client(timeout=30) as client:
        plain = client.get(plotly, headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        packed = client.get(plotly, headers={"Accept-Encoding": "br;q=0, gzip, deflate"})
        assert packed.status_code == 200 and packed.headers["content-encoding"] == "gzip"
        # httpx inflates the body: the bytes sent are the Content-Length.
        sent = int(packed.headers["content-length"])
        assert packed.content == plain.content and sent < len(plain.content) / 2
        assert packed.headers["vary"] == "Accept-Encoding"
        assert packed.headers["etag"] == plain.headers["etag"]
        again = client.get(plotly, headers={"If-None-Match": packed.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        refused = client.get(plotly, headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
    with login(serve) as (client, _):
        html = client.get("/admin").text
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(" defer" in tag for tag in scripts), scripts


def test_the_page_state_lists_the_series_clients_poll(serve: ServeProcess) -> None:
    params: dict[str, str | int] = {"market": "KRW-XRP", "count": 7}
    for _ in range(3):  # a bot's poll loop: learned after the third
        assert httpx.get(serve.url + "/v1/candles/minutes/15", params=params).status_code == 200
    with login(serve) as (client, _):
        polled = client.get("/admin/api/state").json()["polled"]
    rows = [p for p in polled if (p["market"], p["timeframe"]) == ("KRW-XRP", "15m")]
    assert [(p["count"], p["learned"]) for p in rows] == [(7, True)]
