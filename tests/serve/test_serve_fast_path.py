"""The fast path of a polled history page (``CachedCandles``, in front of every middleware):
it answers byte for byte as the usual way does, headers included, counts the same metrics,
and keeps what runs before a route on the usual way: the ``Host`` check, the body limit
and the per-client line at the gate. In-process (httpx ASGITransport) on the simulator."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import wait_until
from serve_support import in_process_serve
from starlette.applications import Starlette

from marketspine._serve.app import create_service_app
from marketspine._serve.security import MAX_BODY_BYTES, SECURITY_HEADERS, AllowedHosts
from marketspine._serve.service import FairGate, ServeService

ADMIN = "admin-secret-0123456"
NAME = "spine.example.lan"
PATH = "/v1/candles/minutes/5"
PARAMS = {"market": "KRW-BTC", "count": "20", "to": "2026-01-01T00:00:00"}
TOO_MANY = "Too many API requests."


class SlowPathCalls:
    """Counts the kept answers the usual way gave (its handler notes each spelling it
    answered; the fast path notes none)."""

    def __init__(self, service: ServeService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        kept = service.closed_answers
        remember = kept.remember

        def counted(path: str, query: bytes, key: Any) -> None:
            self.count += 1
            remember(path, query, key)

        monkeypatch.setattr(kept, "remember", counted)


@pytest.fixture
async def service(sim_app: Starlette, tmp_path: Path) -> AsyncIterator[ServeService]:
    async with in_process_serve(
        sim_app, tmp_path / "serve.db", admin_token=ADMIN, read_token="reader-secret-012345"
    ) as svc:
        yield svc


@pytest.fixture
async def http(service: ServeService) -> AsyncIterator[httpx.AsyncClient]:
    """serve locked down (tokens, ``NAME`` allowed), asked by IP address as a bot does."""
    app = create_service_app(service, allowed_hosts=AllowedHosts([NAME]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8600", timeout=30
    ) as client:
        yield client


@pytest.fixture
def slow(service: ServeService, monkeypatch: pytest.MonkeyPatch) -> SlowPathCalls:
    return SlowPathCalls(service, monkeypatch)


async def kept_page(http: httpx.AsyncClient, service: ServeService) -> bytes:
    """Ask the page once (fetched and kept), then wait until the budget the first fetch
    drew on is full again, so ``Remaining-Req`` stays the same from here on."""
    first = await http.get(PATH, params=PARAMS)
    assert first.status_code == 200 and len(first.json()) == 20, first.text
    await wait_until(
        lambda: service.remaining_req("candles").endswith("sec=9"), 10, "the budget refilled"
    )
    return first.content


def metric(text: str, line_start: str) -> float:
    found = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    assert len(found) == 1, (line_start, found)
    return float(found[0].rsplit(" ", 1)[1])


COUNTED = (
    'marketspine_answers_total{layer="memory"}',
    'marketspine_cache_requests_total{result="hit"}',
    'marketspine_http_requests_total{route="/v1/candles/minutes/{unit}",status="200"}',
    'marketspine_http_request_duration_seconds_count{route="/v1/candles/minutes/{unit}"}',
)


async def counts(http: httpx.AsyncClient) -> list[float]:
    text = (await http.get("/metrics")).text
    return [metric(text, name) for name in COUNTED]


async def test_the_fast_path_answers_byte_for_byte_as_the_usual_way(
    http: httpx.AsyncClient, service: ServeService, slow: SlowPathCalls
) -> None:
    body = await kept_page(http, service)
    assert slow.count == 1  # the fetch kept it
    # The same request with an (empty) body goes the usual way: BodyLimit looks at it.
    usual = await http.get(PATH, params=PARAMS, headers={"Content-Length": "0"})
    assert slow.count == 2
    before = await counts(http)
    fast = await http.get(PATH, params=PARAMS)
    assert slow.count == 2  # the handler never saw it
    assert fast.status_code == usual.status_code == 200
    assert fast.content == usual.content == body
    assert fast.headers.raw == usual.headers.raw  # every header, in the same order
    assert fast.headers["X-Marketspine-Source"] == "memory"
    assert "X-Marketspine-Stale" not in fast.headers  # closed candles are never stale
    assert re.fullmatch(r"group=candles; min=600; sec=\d", fast.headers["Remaining-Req"])
    assert fast.headers["limit-by-ip"] == "Yes"
    for name, value in SECURITY_HEADERS.items():
        assert fast.headers[name] == value
    # ... and counted as the usual way counts an answer from memory.
    after = await counts(http)
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]


async def test_the_trailing_slash_and_other_units_are_counted_under_their_route(
    http: httpx.AsyncClient, service: ServeService, slow: SlowPathCalls
) -> None:
    for path in ("/v1/candles/days/", "/v1/candles/days"):
        params = {"market": "KRW-BTC", "count": "3", "to": "2026-01-01T00:00:00"}
        first = await http.get(path, params=params)
        asked = slow.count
        again = await http.get(path, params=params)
        assert slow.count == asked and again.content == first.content
    text = (await http.get("/metrics")).text
    served = metric(text, 'marketspine_http_requests_total{route="/v1/candles/days",status="200"}')
    assert served == 4


async def test_a_foreign_host_or_a_large_body_is_refused_before_the_fast_path(
    http: httpx.AsyncClient, service: ServeService, slow: SlowPathCalls
) -> None:
    body = await kept_page(http, service)
    for host in ("evil.example", "evil.example:8600"):
        refused = await http.get(PATH, params=PARAMS, headers={"Host": host})
        assert refused.status_code == 403, refused.text
        assert "DNS rebinding" in refused.json()["error"]["message"]
        assert refused.headers["X-Frame-Options"] == "DENY"  # the refusal has them too
    for host in (NAME, f"{NAME}:8600", "localhost", "[::1]:8600"):
        answer = await http.get(PATH, params=PARAMS, headers={"Host": host})
        assert answer.status_code == 200 and answer.content == body, host
    big = await http.request("GET", PATH, params=PARAMS, content=b"x" * (MAX_BODY_BYTES + 1))
    assert big.status_code == 413 and big.headers["Connection"] == "close"
    assert slow.count == 1  # none of them reached the handler


async def test_the_locked_api_still_takes_a_token_for_the_same_candles(
    http: httpx.AsyncClient, service: ServeService
) -> None:
    await kept_page(http, service)
    query = {"market": "KRW-BTC", "timeframe": "5m", "start": "2025-12-31T22:20"}
    query["end"] = "2026-01-01"
    assert (await http.get("/api/candles", params=query)).status_code == 401
    for path in ("/api/candles", "/admin/api/candles"):
        answer = await http.get(path, params=query, headers={"Authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 200, answer.text


async def test_a_client_whose_line_is_full_waits_in_it_on_the_fast_path_too(
    http: httpx.AsyncClient, service: ServeService, slow: SlowPathCalls
) -> None:
    body = await kept_page(http, service)
    service.gate = FairGate(per_client=1)
    service.max_wait_s = 0.3
    bot = {"X-Marketspine-Client": "bot"}
    async with service.gate.slot(("127.0.0.1", "bot")):  # the bot's one place is taken
        waited = await http.get(PATH, params=PARAMS, headers=bot)
        assert waited.status_code == 429 and waited.text == TOO_MANY
        assert waited.headers["Remaining-Req"].startswith("group=candles;")
        asked = slow.count
        # Another client of the same address has its own line: answered at once.
        other = await http.get(PATH, params=PARAMS, headers={"X-Marketspine-Client": "chart"})
        assert other.status_code == 200 and other.content == body
        assert slow.count == asked  # by the fast path
    again = await http.get(PATH, params=PARAMS, headers=bot)
    assert again.status_code == 200 and again.content == body
    assert service.gate.waiting() == 0
    text = (await http.get("/metrics")).text
    assert metric(text, "marketspine_downstream_throttled_total") == 1


async def test_a_page_not_kept_goes_the_usual_way(
    http: httpx.AsyncClient, service: ServeService, slow: SlowPathCalls
) -> None:
    # No ``to``: the forming candle is in it, so nothing is kept and every answer is made.
    params = {"market": "KRW-BTC", "count": "3"}
    for _ in range(2):
        answer = await http.get(PATH, params=params)
        assert answer.status_code == 200 and len(answer.json()) == 3
    assert slow.count == 0
    # A bad request spelled like nothing kept gets Upbit's error, not a cached page.
    bad = await http.get(PATH, params={**PARAMS, "count": "0"})
    assert bad.status_code == 400 and "error" in bad.json()


async def test_a_failing_fast_path_leaves_the_answer_to_the_usual_way(
    http: httpx.AsyncClient,
    service: ServeService,
    slow: SlowPathCalls,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = await kept_page(http, service)

    def broken(path: str, query: bytes) -> bytes | None:
        raise RuntimeError("a bug in the fast path")

    monkeypatch.setattr(service.closed_answers, "spelled", broken)
    answer = await http.get(PATH, params=PARAMS)
    assert answer.status_code == 200 and answer.content == body
    assert slow.count == 2  # the handler answered it
    assert "the fast path of /v1/candles/minutes/5 failed" in caplog.text
