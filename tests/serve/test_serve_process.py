"""The ``marketspine serve`` process: start-up line, admin token, health, metrics, the admin
API, and a restart that answers stored candles without a burst of upstream requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_until_sync
from serve_support import AUTH, TOKEN, ServeProcess, serve_process, sim_stats

pytestmark = pytest.mark.process

REFRESH = "/admin/api/refresh-market-info"
WARMUP_KEYS = {
    "success",
    "refreshed_exchanges",
    "total_markets",
    "execution_time",
    "exchange_details",
}


def test_healthz_and_openapi(serve: ServeProcess) -> None:
    health = serve.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = serve.get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/candles", "/api/coverage", "/api/backfill", "/api/warmup"} <= set(schema["paths"])


def test_admin_refresh_needs_the_bearer_token(serve: ServeProcess, fixed_sim: str) -> None:
    url = serve.url + REFRESH
    # serve's own warmup at start asks for the market list too: count from after it.
    wait_until_sync(
        lambda: serve.get("/api/warmup", headers=AUTH).status_code == 200,
        30,
        "serve's start-up warmup",
    )
    before = sim_stats(fixed_sim)["requests"]["by_group"].get("market", 0)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = httpx.post(url, headers=headers, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error"]["name"] == 401
    assert sim_stats(fixed_sim)["requests"]["by_group"].get("market", 0) == before
    done = httpx.post(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert done.status_code == 200, done.text
    report = done.json()
    assert set(report) == WARMUP_KEYS and report["success"] is True
    assert report["total_markets"] > 0
    assert sim_stats(fixed_sim)["requests"]["by_group"].get("market", 0) == before + 1
    assert serve.get("/api/warmup", headers=AUTH).json() == report


def test_metrics_names(serve: ServeProcess) -> None:
    serve.get("/v1/candles/days", market="KRW-BTC", count=3)
    text = serve.get("/metrics").text
    for name in (
        "marketspine_upstream_requests_total",
        "marketspine_upstream_rate_limited_total",
        "marketspine_upstream_banned_total",
        "marketspine_budget_remaining",
        "marketspine_answers_total",
        "marketspine_http_requests_total",
        "marketspine_http_request_duration_seconds_bucket",
        "marketspine_websocket_clients",
        "marketspine_websocket_subscriptions",
        "marketspine_websocket_dropped_clients_total",
        "marketspine_warmup_success",
        "marketspine_warmup_duration_seconds",
    ):
        assert name in text, name
    assert 'marketspine_http_requests_total{route="/v1/candles/days",status="200"}' in text


def test_generated_token_is_stored_0600_and_printed_once(fixed_sim: str, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    env = {k: v for k, v in os.environ.items() if k != "MARKETSPINE_ADMIN_TOKEN"}
    with serve_process(fixed_sim, db, env=env) as first:
        printed = [line for line in first.lines if line.startswith("admin token")]
    token_file = tmp_path / "t.db.admin-token"
    token = token_file.read_text().strip()
    assert len(printed) == 1 and printed[0].endswith(token)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    with serve_process(fixed_sim, db, env=env) as second:
        assert not [line for line in second.lines if "admin token" in line]
        ok = httpx.post(
            second.url + REFRESH, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert ok.status_code == 200


def test_environment_token(fixed_sim: str, tmp_path: Path) -> None:
    env = {**os.environ, "MARKETSPINE_ADMIN_TOKEN": "from-the-environment"}
    with serve_process(fixed_sim, tmp_path / "e.db", env=env) as served:
        assert not [line for line in served.lines if "admin token" in line]
        url = served.url + REFRESH
        headers = {"Authorization": "Bearer from-the-environment"}
        assert httpx.post(url, headers=headers, timeout=30).is_success
    assert not (tmp_path / "e.db.admin-token").exists()


def test_restart_answers_stored_candles_without_upstream_calls(
    fixed_sim: str, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    pages: list[dict[str, Any]] = [
        {"market": "KRW-BTC", "count": 200, "to": "2026-07-29T00:00:00"},
        {"market": "KRW-BTC", "count": 200, "to": "2026-07-28T20:40:00"},
        {"market": "KRW-ETH", "count": 150, "to": "2026-07-29T00:00:00"},
    ]
    with serve_process(fixed_sim, db, "--admin-token", TOKEN) as first:
        answers = [first.get("/v1/candles/minutes/1", **p).json() for p in pages]
    before = sim_stats(fixed_sim)["requests"]["by_group"].get("candles", 0)
    with serve_process(fixed_sim, db, "--admin-token", TOKEN) as second:
        again = [second.get("/v1/candles/minutes/1", **p) for p in pages]
    assert [r.json() for r in again] == answers
    assert all(r.headers["X-Marketspine-Source"] == "database" for r in again)
    assert sim_stats(fixed_sim)["requests"]["by_group"].get("candles", 0) == before


def test_sigterm_shuts_down_cleanly_and_keeps_what_was_stored(
    fixed_sim: str, tmp_path: Path
) -> None:
    db = tmp_path / "term.db"
    params: dict[str, Any] = {"market": "KRW-ADA", "count": 120, "to": "2026-07-29T00:00:00"}
    with serve_process(fixed_sim, db, "--admin-token", TOKEN) as served:
        stored = served.get("/v1/candles/minutes/5", **params).json()
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=20) == 0
    with serve_process(fixed_sim, db, "--admin-token", TOKEN) as again:
        answer = again.get("/v1/candles/minutes/5", **params)
    assert answer.json() == stored and len(stored) == 120
    assert answer.headers["X-Marketspine-Source"] == "database"


def test_upstream_sim_runs_the_simulator_in_the_same_process(tmp_path: Path) -> None:
    with serve_process("sim", tmp_path / "sim.db", "--admin-token", TOKEN) as served:
        markets = served.get("/v1/market/all")
        candles = served.get("/v1/candles/minutes/1", market="KRW-BTC", count=5)
    assert markets.status_code == 200 and len(markets.json()) > 0
    assert candles.status_code == 200 and len(candles.json()) == 5


def test_bad_port_is_a_clear_error(fixed_sim: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    with serve_process(fixed_sim, tmp_path / "a.db", "--admin-token", TOKEN) as served:
        port = served.url.rsplit(":", 1)[1]
        args = ["--upstream", fixed_sim, "--db", str(tmp_path / "b.db"), "--port", port]
        taken = subprocess.run(
            [sys.executable, "-m", "marketspine", "serve", *args, "--admin-token", TOKEN],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert taken.returncode == 2
    assert "cannot listen on" in taken.stderr and "Traceback" not in taken.stderr


def test_sigusr1_shows_where_serve_is_and_serve_goes_on(serve: ServeProcess) -> None:
    """The tasks and threads of a serve that seems stuck, as for collect (``kill -USR1``)."""
    serve.process.send_signal(signal.SIGUSR1)
    wait_until_sync(lambda: "asyncio tasks" in serve.stderr(), 30, "the dump of serve's tasks")
    wait_until_sync(lambda: "most recent call first" in serve.stderr(), 30, "the threads' stacks")
    assert "--- <Task" in serve.stderr()
    assert serve.get("/healthz").status_code == 200


def test_every_log_line_is_json_under_log_format_json_uvicorns_too(
    fixed_sim: str, tmp_path: Path
) -> None:
    with serve_process(
        fixed_sim, tmp_path / "s.db", "--admin-token", TOKEN, "--log-format", "json"
    ) as served:
        host, port = served.url.removeprefix("http://").split(":")
        for request in (b"NOT HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(request + b"\r\n\r\n")
                assert sock.recv(100).split(b" ")[1] in (b"400", b"431")  # uvicorn logs it
        wait_until_sync(lambda: "passed 16384 bytes" in served.stderr(), 10, "the 431 logged")
    lines = served.stderr().splitlines()
    assert all(line.startswith("{") for line in lines), lines
    logged = {(j["level"], j["logger"], j["message"]) for j in map(json.loads, lines)}
    assert ("WARNING", "uvicorn.error", "Invalid HTTP request received.") in logged
