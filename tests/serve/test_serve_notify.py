"""``serve --notify``: a real circuit opening reaches a loopback apprise ``json://``
receiver, a failing receiver never stops serving, and no secret (admin token, notify URL
credentials, database password) shows in the logs, /metrics, /api/status or the admin page."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import run_sim, wait_until_sync
from receiver import Receiver, receiver
from serve_support import serve_process
from services import PgSpace

from marketspine.sim import SimConfig

# Each starts a real serve process (serve_support.serve_process).
pytestmark = pytest.mark.process

ADMIN = "admin-secret-4242"
DB_PASSWORD = "pg-secret-5151"
NOTIFY_PASSWORD = "notify-secret-6363"


@pytest.fixture
def got() -> Iterator[Receiver]:
    with receiver() as found:
        yield found


def test_serve_alerts_on_a_circuit_and_leaks_no_secret(got: Receiver, pg_space: PgSpace) -> None:
    db = re.sub(r"://([^:@/]+)@", rf"://\1:{DB_PASSWORD}@", pg_space.url)
    port = got.url.rsplit(":", 1)[1].strip("/")
    notify = f"json://alerts:{NOTIFY_PASSWORD}@127.0.0.1:{port}/"
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    with run_sim(SimConfig(rate_limit=0)) as sim:
        with serve_process(
            sim, db, "--admin-token", ADMIN, "--notify", notify,
            "--log-level", "debug", "--log-format", "json",
        ) as served:  # fmt: skip
            # The circuit opened by the errors closes after its cool-down.
            wait_until_sync(
                lambda: (
                    served.get("/v1/candles/days", market="KRW-BTC", count=2).status_code == 200
                ),
                60,
                "serve answering candles once upstream is back",
            )
            httpx.post(f"{sim}/sim/faults", json={"error_rate": 1.0}).raise_for_status()
            # Five different requests failing at once: upstream is down (one request asked
            # again and again would count once, as its own failure).
            markets = ["KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-ADA", "KRW-DOGE"]
            with ThreadPoolExecutor(len(markets)) as pool:
                list(pool.map(lambda code: served.get("/v1/ticker", markets=code), markets))
            alert = next(m for m in got.wait_for(1) if m["title"] == "marketspine: circuit open")
            assert f"circuit to {sim} opened" in alert["message"]
            shown = [
                served.get("/metrics").text,
                httpx.get(served.url + "/api/status", headers=bearer, timeout=15).text,
                served.get("/admin").text,
                httpx.get(served.url + "/admin/api/state", headers=bearer, timeout=15).text,
                json.dumps(got.messages),
            ]
            httpx.post(f"{sim}/sim/faults", json={"error_rate": 0.0}).raise_for_status()
        log = served.stderr()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("event") == "circuit_open" for line in lines)
    for text in [log, "\n".join(served.lines), *shown]:
        for secret in (ADMIN, DB_PASSWORD, NOTIFY_PASSWORD):
            assert secret not in text


def test_a_failing_notifier_never_stops_serve(got: Receiver, tmp_path: Path) -> None:
    got.status = 500
    with run_sim(SimConfig(rate_limit=0)) as sim:
        with serve_process(sim, tmp_path / "s.db", "--notify", got.url) as served:
            httpx.post(f"{sim}/sim/faults", json={"error_rate": 1.0}).raise_for_status()
            # Five different requests failing at once: upstream is down (one request asked
            # again and again would count once, as its own failure).
            markets = ["KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-ADA", "KRW-DOGE"]
            with ThreadPoolExecutor(len(markets)) as pool:
                list(pool.map(lambda code: served.get("/v1/ticker", markets=code), markets))
            httpx.post(f"{sim}/sim/faults", json={"error_rate": 0.0}).raise_for_status()
            assert served.get("/healthz").status_code == 200
            # The circuit opened by the errors closes after its cool-down.
            wait_until_sync(
                lambda: (
                    served.get("/v1/candles/days", market="KRW-BTC", count=2).status_code == 200
                ),
                60,
                "serve answering candles once upstream is back",
            )
        log = served.stderr()
    assert "marketspine: WARNING: notification 'circuit_open' not delivered" in log
