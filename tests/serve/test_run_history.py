"""serve's run history (#21 point 3): every warmup (at start, manual, failed) and every
backfill job (done, cancelled) is kept in the store and read back by
``/api/warmup/history`` and ``/api/backfill/history`` with the success rate against the
95% target; a history that cannot be written never breaks the warmup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_until
from serve_support import in_process_serve, service_client
from starlette.applications import Starlette

from marketspine._base.time import DAY_MS, format_utc
from marketspine._serve.service import ServeService
from marketspine._store.sqlite import SQLiteStore


@contextlib.asynccontextmanager
async def api(service: ServeService) -> AsyncIterator[httpx.AsyncClient]:
    bearer = {"Authorization": f"Bearer {service.admin_token}"}
    async with service_client(service, timeout=60, headers=bearer) as client:
        yield client


async def history_of(http: httpx.AsyncClient, kind: str, rows: int) -> dict[str, Any]:
    """``/api/{kind}/history`` once it holds ``rows`` runs (they are written in the background)."""
    async with asyncio.timeout(60):
        while True:
            answer = await http.get(f"/api/{kind}/history")
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            if body["summary"]["count"] >= rows:
                return body
            await asyncio.sleep(0.01)


async def test_start_manual_and_failed_warmups_are_kept_with_the_success_rate(
    running_sim: Callable[..., contextlib.AbstractContextManager[str]], tmp_path: Path
) -> None:
    with contextlib.ExitStack() as sim:
        url = sim.enter_context(running_sim())
        async with (
            ServeService(
                url, tmp_path / "h.db", admin_token="t", warmup_every_s=0, live_on_demand=False
            ) as service,
            api(service) as http,
        ):
            started = await history_of(http, "warmup", 1)
            assert [r["trigger"] for r in started["runs"]] == ["start"]
            manual = await http.post(
                "/admin/api/refresh-market-info", headers={"Authorization": "Bearer t"}
            )
            assert manual.status_code == 200 and manual.json()["success"]
            await history_of(http, "warmup", 2)

            sim.close()  # the upstream's port is closed now: the next warmup fails
            failed = await service.warmup()
            assert failed["success"] is False
            body = await history_of(http, "warmup", 3)

    runs = body["runs"]
    assert [(r["trigger"], r["ok"]) for r in runs] == [
        ("manual", False),
        ("manual", True),
        ("start", True),
    ]
    newest, _, first = runs
    assert newest["results"][0]["exchange"] == "upbit" and not newest["results"][0]["ok"]
    assert "upbit:" in newest["error"] and newest["results"][0]["error"] in newest["error"]
    assert first["markets"] > 0 and first["results"][0]["markets"] == first["markets"]
    assert first["results"][0]["duration_ms"] >= 0 and first["error"] is None
    assert runs[0]["started_ms"] >= runs[1]["started_ms"] >= runs[2]["started_ms"]
    summary = body["summary"]
    assert summary["count"] == 3 and summary["succeeded"] == 2
    assert summary["success_rate"] == round(2 / 3, 4)
    assert summary["target"] == 0.95 and summary["meets_target"] is False
    assert summary["max_duration_ms"] == max(r["duration_ms"] for r in runs)
    assert summary["median_duration_ms"] == sorted(r["duration_ms"] for r in runs)[1]


async def test_backfill_jobs_are_kept_done_and_cancelled(
    sim_app: Starlette, tmp_path: Path, sim_now_ms: int
) -> None:
    async with (
        in_process_serve(sim_app, tmp_path / "j.db") as service,
        api(service) as http,
    ):
        since = format_utc(sim_now_ms - DAY_MS) + "Z"
        started = await http.post(
            "/api/backfill", json={"markets": ["KRW-ETH"], "timeframe": "5m", "since": since}
        )
        job = service.jobs.get(started.json()["id"])
        assert job is not None
        async with asyncio.timeout(30):
            await job.done.wait()
        await history_of(http, "backfill", 1)
        long = await http.post(
            "/api/backfill",
            json={
                "markets": ["KRW-BTC", "KRW-XRP"],
                "timeframe": "1s",
                "since": format_utc(sim_now_ms - 30 * DAY_MS),
            },
        )
        await http.delete(f"/api/backfill/{long.json()['id']}")
        body = await history_of(http, "backfill", 2)
        assert (await http.get("/api/warmup/history")).json()["summary"]["count"] == 0
        bad = await http.get("/api/backfill/history", params={"limit": "0"})
        assert bad.status_code == 400 and "limit" in bad.json()["error"]["message"]
        one = (await http.get("/api/backfill/history", params={"limit": 1})).json()
        assert len(one["runs"]) == 1
        paths = (await http.get("/api/openapi.json")).json()["paths"]
        assert {"/api/warmup/history", "/api/backfill/history"} <= set(paths)

    cancelled, done = body["runs"]
    assert (done["ok"], done["trigger"], done["markets"]) == (True, "job", 1)
    assert done["label"] == f"{job.id} 5m" and done["error"] is None
    assert done["results"][0]["market"] == "KRW-ETH" and done["results"][0]["candles"] > 0
    assert (cancelled["ok"], cancelled["error"], cancelled["markets"]) == (False, "cancelled", 2)
    assert body["summary"]["success_rate"] == 0.5


async def test_a_history_that_cannot_be_written_never_breaks_the_warmup(
    sim_app: Starlette, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ro.db"
    async with SQLiteStore(path):  # a marketspine file, then opened read-only below
        pass
    caplog.set_level(logging.WARNING, "marketspine.serve")
    async with (
        SQLiteStore(path, read_only=True) as store,
        in_process_serve(sim_app, store) as service,
    ):
        report = await service.warmup()
        assert report["success"] is True
        await wait_until(lambda: "cannot keep the warmup run" in caplog.text, 10, "the log line")
        assert await store.runs("warmup") == []
