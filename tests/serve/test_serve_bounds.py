"""What input can make ``serve`` hold is bounded, and limits key on the peer (#24 points 3
and 4), in-process on the in-process simulator: bodies over 64 KiB are 413 before a route
runs; a fifth running backfill job is 429; closed answers are kept under what a request
means, junk parameters adding nothing; ``/api/candles`` refuses a range of more than
100,000 windows naming the first page, waits in the per-client gate and stops fetching when
its client leaves; one address holds a bounded number of gate lines however many names it
gives; wrong bearer tokens lock their own address out (429) and never another, where the
admin token keeps working; a browser that logged in before is counted under its device
cookie, not the address it shares; a login posted from another site is refused and not
counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SIM_NOW_MS, wait_until
from serve_support import in_process_serve
from starlette.applications import Starlette

from marketspine._base.time import format_utc
from marketspine._serve.admin_auth import COOKIE, DEVICE_COOKIE, device_cookie, device_of
from marketspine._serve.app import create_service_app
from marketspine._serve.disconnect import ClientLeft, unless_client_leaves
from marketspine._serve.security import MAX_BODY_BYTES
from marketspine._serve.service import FairGate, ServeService

pytestmark = pytest.mark.timeout(60)

ADMIN = "admin-token-0123456789"
JOB = {"markets": ["KRW-BTC"], "timeframe": "1m", "since": "2026-07-01"}


class HeldCandles:
    """The simulator, with every candle request held until ``release`` is set; counts the
    candle requests that arrived and those cancelled while held."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.release = asyncio.Event()
        self.arrived = 0
        self.cancelled = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/candles/"):
            self.arrived += 1
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        await self.app(scope, receive, send)


@pytest.fixture
def held(sim_app: Starlette) -> HeldCandles:
    return HeldCandles(sim_app)


@pytest.fixture
async def service(held: HeldCandles, tmp_path: Path) -> AsyncIterator[ServeService]:
    async with in_process_serve(
        held, tmp_path / "serve.db", admin_token=ADMIN, max_wait_s=1.0, per_client=1
    ) as service:
        # A lock-out long enough to outlast any pause of a loaded machine between requests.
        service.login_throttle.first_lockout_s = 60
        yield service
        held.release.set()


def client(service: ServeService, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client of ``service``'s app, connecting from ``address``."""
    transport = httpx.ASGITransport(app=create_service_app(service), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8600", timeout=30)


@pytest.fixture
async def http(service: ServeService) -> AsyncIterator[httpx.AsyncClient]:
    async with client(service) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(answer: httpx.Response, status: int) -> str:
    """The message of an error answer in serve's shape, after checking its status."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and body["error"]["name"] == status, body
    message: str = body["error"]["message"]
    return message


# -- request bodies -------------------------------------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_body_over_64_kib_is_413_and_no_route_runs(
    http: httpx.AsyncClient, service: ServeService
) -> None:
    big = {**JOB, "junk": "x" * MAX_BODY_BYTES}
    answer = await http.post("/api/backfill", json=big, headers=bearer(ADMIN))
    assert "at most 65536 bytes" in error_of(answer, 413)
    assert answer.headers["connection"] == "close"  # the rest is not read
    assert answer.headers["X-Frame-Options"] == "DENY"  # the security headers still apply
    login = await http.post("/admin/login", content=b"token=" + b"x" * MAX_BODY_BYTES)
    error_of(login, 413)
    # Chunked (no Content-Length): refused once 64 KiB have arrived.
    chunked = await http.post("/admin/login", content=_chunks(*[b"x" * 4096] * 64))
    error_of(chunked, 413)
    assert service.jobs.all() == [] and service.login_throttle.wait_s("127.0.0.1") == 0
    # A body within the bound is read as before, chunked or not.
    small = await http.post("/admin/login", content=_chunks(b"token=", ADMIN.encode()))
    assert small.status_code == 303, small.text


# -- backfill jobs ---------------------------------------------------------------------------


async def test_a_backfill_job_beyond_the_running_four_is_429_until_one_ends(
    http: httpx.AsyncClient, service: ServeService
) -> None:
    started = []
    for _ in range(4):  # held upstream: they keep running
        answer = await http.post("/api/backfill", json=JOB, headers=bearer(ADMIN))
        assert answer.status_code == 202, answer.text
        started.append(answer.json()["id"])
    refused = await http.post("/api/backfill", json=JOB, headers=bearer(ADMIN))
    message = error_of(refused, 429)
    assert message.startswith("4 backfill jobs are running") and "DELETE /api/backfill" in message
    assert len(service.jobs.all()) == 4
    cancelled = await http.delete(f"/api/backfill/{started[0]}", headers=bearer(ADMIN))
    assert cancelled.json()["state"] == "cancelled"
    again = await http.post("/api/backfill", json=JOB, headers=bearer(ADMIN))
    assert again.status_code == 202, again.text


# -- the closed-answer cache -----------------------------------------------------------------


async def test_closed_answers_are_kept_under_what_the_request_means(
    http: httpx.AsyncClient, held: HeldCandles, service: ServeService
) -> None:
    held.release.set()
    to_ms = SIM_NOW_MS - 86_400_000
    to = format_utc(to_ms)
    path = "/v1/candles/minutes/1"
    first = await http.get(path, params={"market": "KRW-BTC", "count": 5, "to": to})
    assert first.status_code == 200 and len(first.json()) == 5, first.text
    assert len(service.closed_answers) == 1
    bytes_kept = service.closed_answers.bytes
    # Junk parameters (the reproduction added 60 KB of it per request) and other spellings
    # of the same request meet the same entry and add nothing.
    for n in range(50):
        junk = {"junk": f"{n}-" + "y" * 2000}
        answer = await http.get(path, params={"market": "KRW-BTC", "count": 5, "to": to, **junk})
        assert answer.content == first.content
    for spelling in (to + "Z", to.replace("T", " "), to + "+00:00"):
        answer = await http.get(path, params={"market": "krw-btc", "count": "5", "to": spelling})
        assert answer.content == first.content, spelling
    assert len(service.closed_answers) == 1 and service.closed_answers.bytes == bytes_kept
    assert service.closed_answers.bytes >= len(first.content) + 200  # its key is charged
    # Day candles converted to KRW are another answer than the kept unconverted one.
    days = {"market": "KRW-BTC", "count": "2", "to": to}
    plain = await http.get("/v1/candles/days", params=days)
    converted = await http.get("/v1/candles/days", params={**days, "converting_price_unit": "KRW"})
    assert plain.status_code == converted.status_code == 200, converted.text
    assert "converted_trade_price" not in plain.json()[0]
    assert "converted_trade_price" in converted.json()[0]


# -- /api/candles ----------------------------------------------------------------------------


async def test_api_candles_refuses_an_unbounded_range_naming_the_first_page(
    http: httpx.AsyncClient, held: HeldCandles
) -> None:
    answer = await http.get(
        "/api/candles",
        params={"market": "KRW-BTC", "timeframe": "1s", "start": "2017-01-01"},
        headers=bearer(ADMIN),
    )
    message = error_of(answer, 400)
    assert "more than 100000 1s windows" in message
    assert "start=2017-01-01T00:00:00Z&end=2017-01-02T03:46:40Z" in message
    assert held.arrived == 0  # nothing asked upstream
    held.release.set()
    page = await http.get(
        "/api/candles",
        params={"market": "KRW-BTC", "timeframe": "1m", "start": "2026-07-29", "end": "2026-07-30"},
        headers=bearer(ADMIN),
    )
    assert page.status_code == 200 and len(page.json()["candles"]) > 1000, page.text


async def test_api_candles_wait_in_the_per_client_gate(
    service: ServeService, held: HeldCandles
) -> None:
    params = {"market": "KRW-BTC", "timeframe": "1m", "count": "3"}
    async with client(service, "10.0.0.1") as one, client(service, "10.0.0.2") as other:
        first = asyncio.create_task(one.get("/api/candles", params=params, headers=bearer(ADMIN)))
        await wait_until(lambda: held.arrived >= 1, 10, "the first request upstream")
        # per_client=1: the same client's next request waits max_wait_s, then 429.
        second = await one.get("/api/candles", params=params, headers=bearer(ADMIN))
        assert "waited 1 s for its turn" in error_of(second, 429)
        # Another client is not in that line.
        third = asyncio.create_task(other.get("/api/candles", params=params, headers=bearer(ADMIN)))
        await wait_until(lambda: service.gate.waiting() == 2, 10, "both clients inside")
        held.release.set()
        assert (await first).status_code == 200
        assert (await third).status_code == 200


async def test_api_candles_stop_fetching_when_the_client_leaves(
    service: ServeService, held: HeldCandles
) -> None:
    app = create_service_app(service)
    sent: list[dict[str, Any]] = []
    left = asyncio.Event()
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/candles",
        "raw_path": b"/api/candles",
        "query_string": b"market=KRW-BTC&timeframe=1m&start=2026-07-01&end=2026-07-20",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8600"), (b"authorization", f"Bearer {ADMIN}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8600),
    }
    asked = asyncio.create_task(app(scope, receive, send))
    await wait_until(lambda: held.arrived >= 1, 10, "a page asked upstream")
    left.set()  # the client hangs up
    await _within(asked, 10)
    assert held.cancelled >= 1 and held.cancelled == held.arrived  # nothing fetches on
    assert service.gate.waiting() == 0
    assert not any(m.get("status") == 200 for m in sent)


async def _within(task: asyncio.Task[Any], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        await task


async def test_work_raced_against_the_client_returns_or_raises_as_it_would() -> None:
    async def stays() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def answer() -> int:
        return 7

    async def fails() -> int:
        raise ValueError("bad")

    assert await unless_client_leaves(stays, answer()) == 7
    with pytest.raises(ValueError, match="bad"):
        await unless_client_leaves(stays, fails())

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(ClientLeft):
        await unless_client_leaves(gone, asyncio.Event().wait())


# -- who a limit counts ----------------------------------------------------------------------


async def test_rotating_names_hold_a_bounded_number_of_lines_of_one_address() -> None:
    gate = FairGate(per_client=1, lines_per_address=4)
    release = asyncio.Event()
    inside = 0

    async def ask(address: str, name: str) -> None:
        nonlocal inside
        async with gate.slot((address, name), wait_s=30):
            inside += 1
            await release.wait()

    async with asyncio.TaskGroup() as group:
        for n in range(100):
            group.create_task(ask("10.0.0.1", f"bot-{n}"))
        group.create_task(ask("10.0.0.2", "polite"))
        await wait_until(lambda: inside == 6, 10, "four lines, the overflow line, the other")
        assert gate.lines("10.0.0.1") == 5 and gate.lines("10.0.0.2") == 1
        assert gate.waiting() == 101
        release.set()
    assert gate.waiting() == 0 and gate.lines("10.0.0.1") == 0


async def test_wrong_bearer_tokens_lock_out_their_own_address_only(
    service: ServeService,
) -> None:
    async with client(service, "10.0.0.9") as attacker, client(service, "10.0.0.1") as admin:
        statuses = []
        for n in range(5):
            answer = await attacker.get("/api/status", headers=bearer(f"guess-{n:012d}"))
            statuses.append(answer.status_code)
        assert statuses == [401, 401, 401, 401, 429]
        locked = await attacker.get("/api/status", headers=bearer("another-guess-0000"))
        assert "too many wrong tokens" in error_of(locked, 429)
        assert int(locked.headers["Retry-After"]) >= 1
        # The page's login counts in the same throttle.
        login = await attacker.post("/admin/login", data={"token": ADMIN})
        assert login.status_code == 429
        # While that lock-out holds, the admin token from another address works.
        ok = await admin.get("/api/status", headers=bearer(ADMIN))
        assert ok.status_code == 200, ok.text
        logged_in = await admin.post("/admin/login", data={"token": ADMIN})
        assert logged_in.status_code == 303
        refresh = await admin.get("/api/backfill", headers=bearer(ADMIN))
        assert refresh.status_code == 200


async def test_a_login_from_another_site_is_refused_and_not_counted(
    http: httpx.AsyncClient, service: ServeService
) -> None:
    for _ in range(10):
        answer = await http.post(
            "/admin/login", data={"token": "wrong"}, headers={"Origin": "https://evil.example"}
        )
        assert answer.status_code == 403 and "another site" in answer.text
    for headers in (
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},  # a sandboxed page elsewhere
        {"Sec-Fetch-Site": "same-site"},  # another port of this host
        {"Origin": "http://127.0.0.1:9999"},
    ):
        cross = await http.post("/admin/login", data={"token": "wrong"}, headers=headers)
        assert cross.status_code == 403, headers
    assert service.login_throttle.wait_s("127.0.0.1") == 0
    same = await http.post(
        "/admin/login", data={"token": ADMIN}, headers={"Origin": "http://127.0.0.1:8600"}
    )
    assert same.status_code == 303, same.text
    # What a browser sends from serve's own login page (no-referrer makes the Origin null).
    own = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert (await http.post("/admin/login", data={"token": ADMIN}, headers=own)).status_code == 303


async def test_a_browser_that_logged_in_before_is_not_locked_out_by_its_address(
    service: ServeService,
) -> None:
    async with client(service) as browser, client(service) as other:  # both 127.0.0.1
        first = await browser.post("/admin/login", data={"token": ADMIN})
        assert first.status_code == 303 and DEVICE_COOKIE in first.cookies
        browser.cookies.delete(COOKIE)  # logged out: only the device cookie stays
        for n in range(6):  # another local process guesses
            await other.post("/admin/login", data={"token": f"guess-{n}"})
        assert (await other.post("/admin/login", data={"token": ADMIN})).status_code == 429
        again = await browser.post("/admin/login", data={"token": ADMIN})
        assert again.status_code == 303, again.text
        # A forged device cookie is no device: counted under the address, locked out.
        other.cookies.set(DEVICE_COOKIE, "forged.0000", domain="127.0.0.1", path="/admin")
        assert (await other.post("/admin/login", data={"token": ADMIN})).status_code == 429


def test_device_cookies_are_signed_with_the_admin_token() -> None:
    cookie = device_cookie(ADMIN)
    device = device_of(cookie, ADMIN)
    assert device is not None and cookie.startswith(device + ".")
    assert device_of(cookie, ADMIN + "-rotated") is None  # a new token forgets devices
    assert device_of(device + ".deadbeef", ADMIN) is None
    assert device_of(None, ADMIN) is None and device_of("x" * 500, ADMIN) is None
