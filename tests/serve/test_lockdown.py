"""serve locked down (#21 point 5): who may read and change ``/api``, the open ``/v1`` and
``/websocket/v1``, the ``Host`` check against DNS rebinding, the security headers and the
start-up warning. In-process (the serve app over httpx in front of the simulator) for the
credential matrix, a real ``serve`` process for the Host check over the wire and the
WebSocket handshake."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from serve_support import AUTH, TOKEN, ServeProcess, in_process_serve
from starlette.applications import Starlette
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from marketspine._cli.main import main
from marketspine._serve.app import create_service_app, exposure_warning
from marketspine._serve.security import (
    PLOTLY_MAPLIBRE_STYLE,
    SECURITY_HEADERS,
    AllowedHosts,
    host_name,
    is_loopback,
)

# Each starts a real serve process (serve_support.serve_process).
pytestmark = pytest.mark.process

ADMIN, READER = "admin-secret-0123456", "reader-secret-012345"
NAME = "spine.example.lan"
FOREIGN = "evil.example"
COOKIE = "marketspine_admin"

# Every /api route, with the status it answers once let in (no warmup ran: 404; a body
# with a bad timeframe: 400, so no job starts; an unknown job: 404).
BAD_JOB = {"markets": ["KRW-BTC"], "timeframe": "7m", "since": "2026-01-01"}
READS = [
    ("/api/candles?market=KRW-BTC&timeframe=1d&count=2", 200),
    ("/api/coverage", 200),
    ("/api/status", 200),
    ("/api/warmup", 404),
    ("/api/backfill", 200),
    ("/api/backfill/nope", 404),
]
WRITES = [("POST", "/api/backfill", 400), ("DELETE", "/api/backfill/nope", 404)]


@pytest.fixture
async def served(sim_app: Starlette, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """serve in-process with an admin and a read token and ``NAME`` allowed; the client
    sends no credentials of its own."""
    async with in_process_serve(
        sim_app, tmp_path / "serve.db", admin_token=ADMIN, read_token=READER
    ) as service:
        # These tests count refusals one by one; the lock-out that wrong bearer tokens
        # earn is shown in test_serve_bounds.py.
        service.login_throttle.free_failures = 1000
        app = create_service_app(service, allowed_hosts=AllowedHosts([NAME]))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8600", timeout=30
        ) as client:
            yield client


async def login(client: httpx.AsyncClient) -> tuple[str, str]:
    """Log in as the admin page does; returns (session id, its CSRF token)."""
    answer = await client.post("/admin/login", data={"token": ADMIN})
    assert answer.status_code == 303, answer.text
    session = answer.cookies[COOKIE]
    page = (await client.get("/admin")).text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert csrf is not None
    client.cookies.clear()  # from here on each request says what it carries
    return session, csrf.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, (answer.request.url, answer.text)
    assert answer.json()["error"]["name"] in (status, "csrf"), answer.text


async def test_every_api_read_takes_a_read_or_admin_token_or_a_session(
    served: httpx.AsyncClient,
) -> None:
    session, _ = await login(served)
    for path, status in READS:
        refused(await served.get(path), 401)
        refused(await served.get(path, headers=bearer("wrong")), 401)
        assert (await served.get(path)).headers["WWW-Authenticate"] == "Bearer"
        for headers in (bearer(READER), bearer(ADMIN), {"Cookie": f"{COOKIE}={session}"}):
            answer = await served.get(path, headers=headers)
            assert answer.status_code == status, (path, headers, answer.text)


async def test_every_api_change_takes_the_admin_token_or_a_session_with_its_csrf_token(
    served: httpx.AsyncClient,
) -> None:
    session, csrf = await login(served)
    cookie = {"Cookie": f"{COOKIE}={session}"}
    for method, path, status in WRITES:

        async def call(headers: dict[str, str], method: str = method, path: str = path) -> Any:
            body = BAD_JOB if method == "POST" else None
            return await served.request(method, path, json=body, headers=headers)

        refused(await call({}), 401)
        refused(await call(bearer("wrong")), 401)
        refused(await call(bearer(READER)), 403)  # read-only
        refused(await call(cookie), 403)  # no CSRF token
        refused(await call({**cookie, "X-CSRF-Token": "forged"}), 403)
        refused(await call({"X-CSRF-Token": csrf}), 401)  # a CSRF token is no session
        for headers in (bearer(ADMIN), {**cookie, "X-CSRF-Token": csrf}):
            answer = await call(headers)
            assert answer.status_code == status, (method, path, headers, answer.text)
    assert (await served.get("/api/backfill", headers=bearer(ADMIN))).json() == []


async def test_the_admin_refresh_refuses_the_read_token(served: httpx.AsyncClient) -> None:
    answer = await served.post("/admin/api/refresh-market-info", headers=bearer(READER))
    refused(answer, 403)


async def test_the_admin_page_reads_candles_and_coverage_under_admin(
    served: httpx.AsyncClient,
) -> None:
    session, _ = await login(served)
    for path in ("/admin/api/candles?market=KRW-BTC&timeframe=1d&count=2", "/admin/api/coverage"):
        refused(await served.get(path), 401)
        answer = await served.get(path, headers={"Cookie": f"{COOKIE}={session}"})
        assert answer.status_code == 200, answer.text
        same = (await served.get(path[6:], headers=bearer(READER))).json()
        if "candles" in same:  # where they came from differs: the first fetched them
            answer_candles, same = answer.json()["candles"], same["candles"]
            assert answer_candles == same and len(same) == 2
        else:
            assert answer.json() == same


async def test_openapi_is_open_and_describes_the_schemes(served: httpx.AsyncClient) -> None:
    schema = (await served.get("/api/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "session"}
    assert schema["security"] == [{"bearer": []}, {"session": []}]
    assert schema["paths"]["/healthz"]["get"]["security"] == []


async def test_v1_healthz_and_metrics_stay_open(served: httpx.AsyncClient) -> None:
    ticker = await served.get("/v1/ticker", params={"markets": "KRW-BTC"})
    assert ticker.status_code == 200 and ticker.json()[0]["market"] == "KRW-BTC"
    assert (await served.get("/healthz")).status_code == 200
    assert (await served.get("/metrics")).status_code == 200


async def test_every_answer_carries_the_security_headers(served: httpx.AsyncClient) -> None:
    answers = [
        await served.get("/v1/ticker", params={"markets": "KRW-BTC"}),
        await served.get("/v1/nowhere"),
        await served.get("/api/status"),  # 401
        await served.get("/api/status", headers=bearer(READER)),
        await served.get("/api/openapi.json"),
        await served.get("/admin"),
        await served.get("/admin/static/admin.js"),
        await served.get("/admin/static/plotly.min.js"),
        await served.get("/healthz"),
        await served.get("/metrics"),
        await served.get("/v1/ticker", headers={"Host": FOREIGN}),  # 403
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.url, name)
    assert answers[-1].status_code == 403
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp


async def test_a_foreign_host_is_refused_in_process(served: httpx.AsyncClient) -> None:
    for path in ("/v1/ticker?markets=KRW-BTC", "/api/status", "/admin", "/healthz"):
        for host in (FOREIGN, f"{FOREIGN}:8600", "localhost.evil.example"):
            answer = await served.get(path, headers={"Host": host, **bearer(ADMIN)})
            refused(answer, 403)
            assert "--allowed-host" in answer.json()["error"]["message"]
        for host in (NAME, f"{NAME.upper()}:443", "localhost:8600", "[::1]:8600", "10.1.2.3"):
            answer = await served.get(path, headers={"Host": host, **bearer(ADMIN)})
            assert answer.status_code == 200, (path, host, answer.text)


def test_host_names_and_loopback() -> None:
    assert host_name("[::1]:8600") == "::1" and host_name("::1") == "::1"
    assert host_name("Spine.Example.LAN.:80") == "spine.example.lan"
    hosts = AllowedHosts([f"{NAME}:8443"])
    assert hosts.allows(NAME) and hosts.allows("127.0.0.1:1") and hosts.allows(None)
    assert not hosts.allows(FOREIGN) and not hosts.allows(f"x.{NAME}")
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.2", "spine.lan"))
    with pytest.raises(Exception, match="not a host name"):
        AllowedHosts(["http://x/"])


def test_the_start_up_warning_beyond_loopback() -> None:
    assert exposure_warning("127.0.0.1", "http://127.0.0.1:8600", None) is None
    warning = exposure_warning("0.0.0.0", "http://0.0.0.0:8600", None)
    assert warning is not None
    assert "0.0.0.0:8600" in warning and "without TLS" in warning and "--read-token" in warning
    given = exposure_warning("::", "http://[::]:8600", "r")
    assert given is not None and "--read-token" not in given


def test_the_maplibre_style_hash_is_that_of_the_shipped_plotly() -> None:
    """plotly.js inserts MapLibre's stylesheet; the CSP allows exactly that text."""
    js = (resources.files("plotly") / "package_data" / "plotly.min.js").read_text("utf-8")
    start = js.index("e.textContent='.maplibregl") + len("e.textContent='")
    css = js[start : js.index("'", start)]
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"'sha256-{digest}'" == PLOTLY_MAPLIBRE_STYLE


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--allowed-host", "http://x/", "--allowed-host"), ("--read-token", " ", "--read-token")],
)
def test_a_bad_lockdown_flag_is_one_line_and_exit_2(
    flag: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--upstream", "sim", "--port", "0", "--db", str(db), flag, value])
    _, err = capsys.readouterr()
    assert exited.value.code == 2, err
    assert err.startswith("marketspine: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not db.exists()


# -- the real process ---------------------------------------------------------------------------


@contextlib.contextmanager
def locked_serve(
    start_serve: Callable[..., AbstractContextManager[ServeProcess]], sim: str, db: Path
) -> Any:
    env = {**os.environ, "MARKETSPINE_READ_TOKEN": READER}
    with start_serve(sim, db, "--admin-token", TOKEN, "--allowed-host", NAME, env=env) as s:
        yield s


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def _ws_snapshot(url: str, host: str) -> dict[str, Any]:
    """One ticker snapshot over ``/websocket/v1``, the handshake naming ``host``."""
    sock = socket.create_connection(("127.0.0.1", _port(url)))
    async with asyncio.timeout(20):
        async with ws_connect(f"ws://{host}/websocket/v1", sock=sock, max_queue=None) as ws:
            request = [{"ticket": "t"}, {"type": "ticker", "codes": ["KRW-BTC"]}]
            await ws.send(json.dumps(request))
            frame = json.loads(await ws.recv())
            assert isinstance(frame, dict)
            return frame


def test_the_real_process_checks_host_and_tokens(
    start_serve: Callable[..., AbstractContextManager[ServeProcess]],
    fixed_sim: str,
    tmp_path: Path,
) -> None:
    with locked_serve(start_serve, fixed_sim, tmp_path / "s.db") as served:
        port = _port(served.url)
        with httpx.Client(base_url=served.url, timeout=30) as http:
            for path in ("/v1/ticker?markets=KRW-BTC", "/api/status", "/admin", "/metrics"):
                answer = http.get(path, headers={"Host": f"{FOREIGN}:{port}", **AUTH})
                refused(answer, 403)
                assert answer.headers["X-Frame-Options"] == "DENY"
                for host in (f"{NAME}:{port}", f"localhost:{port}"):
                    answer = http.get(path, headers={"Host": host, **AUTH})
                    assert answer.status_code == 200, (path, host, answer.text)
            # The read token from the environment reads and changes nothing.
            assert http.get("/api/status", headers=bearer(READER)).status_code == 200
            refused(http.post("/api/backfill", json=BAD_JOB, headers=bearer(READER)), 403)
            refused(http.get("/api/status"), 401)
            assert http.get("/v1/ticker", params={"markets": "KRW-BTC"}).status_code == 200

        # /websocket/v1: open without a token, refused for a foreign Host.
        frame = asyncio.run(_ws_snapshot(served.url, f"{NAME}:{port}"))
        assert frame["code"] == "KRW-BTC"
        with pytest.raises(InvalidStatus) as handshake:
            asyncio.run(_ws_snapshot(served.url, f"{FOREIGN}:{port}"))
        assert handshake.value.response.status_code == 403
    assert "beyond loopback" not in served.stderr(), "it listened on 127.0.0.1"
