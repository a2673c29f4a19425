"""The admin page of ``serve`` at ``/admin``: log in with the admin token, then see and
steer the spine — market info with the refresh button, coverage, backfill jobs, a candle
chart, the rate budget, the breaker, answers per layer, WebSocket clients and a live ticker
table. The page is static HTML + JavaScript shipped in the package (``admin_static/``);
plotly.js comes from the ``plotly`` package's own bundle, so nothing is fetched from a CDN.
That bundle is 4.8 MB: it is sent gzip-compressed (about 1.5 MB, compressed once per
process) to a browser that accepts gzip, and the page loads it ``defer`` so the first paint
does not wait for it.

Routes here answer JSON to the page; every state-changing one needs the session cookie and
its ``X-CSRF-Token`` (403 without). ``POST /admin/api/refresh-market-info`` (in
``_serve/admin_api``) takes that or the bearer token. The page's chart and coverage come
from ``/admin/api/candles`` and ``/admin/api/coverage``: ``/api``'s routes mounted where the
session cookie (scoped to ``/admin``) is sent. Nothing on the page is inline (no script,
style or event handler in the HTML), so serve's Content-Security-Policy needs no
``'unsafe-inline'``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .._spine.quotes import Channel
from ..errors import MarketspineError
from .admin_auth import (
    COOKIE,
    DEVICE_COOKIE,
    DEVICE_S,
    AdminSessions,
    LoginThrottle,
    Session,
    device_cookie,
    device_of,
    tokens_match,
)
from .security import foreign_origin, peer_of

if TYPE_CHECKING:
    from .service import ServeService

__all__ = ["AdminPage", "admin_page_routes"]

_STATIC = resources.files("marketspine._serve") / "admin_static"
_ASSETS = {"admin.js": "text/javascript", "admin.css": "text/css"}
_MAX_TICKERS = 50


def _plotly_js() -> Path:
    """plotly.js as the ``plotly`` package ships it (no CDN: serve may run offline)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


class CompressedAsset:
    """One large static file held in memory as it is and gzip-compressed, with its ETag;
    read and compressed on first use (about 0.25 s for plotly.js, off the event loop), so
    a serve that never shows the page pays nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: tuple[bytes, bytes, str] | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> tuple[bytes, bytes, str]:
        """(plain bytes, gzip bytes, ETag)."""
        async with self._lock:
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(self._read)
            return self._loaded

    def _read(self) -> tuple[bytes, bytes, str]:
        plain = self.path.read_bytes()
        # mtime=0: the same bytes (and so the same ETag) from every process.
        packed = gzip.compress(plain, compresslevel=6, mtime=0)
        return plain, packed, '"' + hashlib.sha256(plain).hexdigest()[:32] + '"'


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


def _error(status: int, name: str, message: str) -> Response:
    return _json({"error": {"name": name, "message": message}}, status)


class AdminPage:
    """Sessions, the login throttle and the page's routes over one ``ServeService``."""

    def __init__(
        self,
        service: ServeService,
        *,
        sessions: AdminSessions | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.service = service
        self.sessions = sessions or AdminSessions()
        # The one throttle the bearer path of /api and /admin/api counts in too.
        self.throttle = throttle or service.login_throttle
        self.plotly = CompressedAsset(_plotly_js())

    # -- who is asking ----------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def may_change(self, request: Request) -> Response | None:
        """None when ``request`` comes from a session with its CSRF token; else the refusal
        (401 without a session, 403 without the right ``X-CSRF-Token``)."""
        session = self.session_of(request)
        if session is None:
            return _error(401, "unauthorized", "log in at /admin first")
        if not self.sessions.csrf_ok(session, request.headers.get("x-csrf-token")):
            return _error(403, "csrf", "X-CSRF-Token header missing or wrong for this session")
        return None

    # -- pages --------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        session = self.session_of(request)
        page = "admin.html" if session is not None else "login.html"
        html = (_STATIC / page).read_text(encoding="utf-8")
        if session is not None:
            html = html.replace("{{csrf}}", session.csrf)
        else:
            message = request.query_params.get("error", "")
            html = html.replace("{{error}}", _escape(message))
        return Response(
            html,
            media_type="text/html",
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
        )

    async def login(self, request: Request) -> Response:
        foreign = foreign_origin(request)
        if foreign is not None:
            # A form on another site posting here (CSRF on the login) is neither checked
            # nor counted: its failures must not lock the real admin out.
            return _login_refused(
                f"a login from another site ({foreign}) is refused: log in on this page", 403
            )
        # A browser that logged in here before is counted apart from its address, which
        # it may share with others (every local process is 127.0.0.1).
        device = device_of(request.cookies.get(DEVICE_COOKIE), self.service.admin_token)
        client = peer_of(request) if device is None else f"device {device}"
        wait = self.throttle.wait_s(client)
        if wait > 0:
            return _login_refused(
                f"too many failed logins: wait {wait:.0f} s", 429, retry_after=wait
            )
        # A plain urlencoded form (the login page's): the standard library parses it.
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        if not tokens_match(given, self.service.admin_token):
            lockout = self.throttle.failed(client)
            # The same work is done for a right and a wrong token up to here; the
            # lock-out only delays the *next* attempt, never this answer.
            return _login_refused(
                "wrong admin token" + (f": wait {lockout:.0f} s" if lockout else ""),
                401,
                retry_after=lockout,
            )
        self.throttle.succeeded(client)
        session = self.sessions.open()
        response = RedirectResponse("/admin", status_code=303)
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(self.sessions.session_s),
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        if device is None:
            response.set_cookie(
                DEVICE_COOKIE,
                device_cookie(self.service.admin_token),
                max_age=DEVICE_S,
                path="/admin",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def logout(self, request: Request) -> Response:
        refused = self.may_change(request)
        if refused is not None:
            return refused
        self.sessions.close(request.cookies.get(COOKIE))
        response = _json({"logged_out": True})
        response.delete_cookie(COOKIE, path="/admin")
        return response

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return await self._plotly(request)
        if name not in _ASSETS:
            return _error(404, "not_found", f"no admin asset {name!r}")
        return Response(
            (_STATIC / name).read_text(encoding="utf-8"),
            media_type=_ASSETS[name],
            headers={"Cache-Control": "no-cache"},
        )

    async def _plotly(self, request: Request) -> Response:
        plain, packed, etag = await self.plotly.load()
        headers = {"Cache-Control": "max-age=86400", "ETag": etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if _accepts_gzip(request):
            headers["Content-Encoding"] = "gzip"
            body = packed
        else:
            body = plain
        return Response(body, media_type="text/javascript", headers=headers)

    # -- the page's JSON ------------------------------------------------------------------------

    async def state(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _error(401, "unauthorized", "log in at /admin first")
        return _json(await self.snapshot())

    async def snapshot(self) -> dict[str, Any]:
        """Everything the page shows that is not a chart or coverage."""
        service = self.service
        client = service.spine.client.statistics()
        statuses = _samples(service, "marketspine_upstream_requests_total")
        per_group: dict[str, dict[str, int]] = {}
        for labels, value in statuses:
            group, status = labels.get("group", "?"), labels.get("status", "?")
            row = per_group.setdefault(group, {"429": 0, "418": 0})
            if status in ("429", "418"):
                row[status] += int(value)
        budget = {
            name: {
                "used": g.sent,
                "remaining": g.tokens,
                "waiting": sum(g.waiting.values()),
                "rate_limited": per_group.get(name, {}).get("429", 0),
                "banned": per_group.get(name, {}).get("418", 0),
                "blocked_for_s": round(g.blocked_for, 3),
            }
            for name, g in sorted(client.budget.groups.items())
        }
        layers = {
            labels.get("layer", "?"): int(value)
            for labels, value in _samples(service, "marketspine_answers_total")
        }
        answered = sum(layers.values())
        gateway = service.gateway.statistics() if service.gateway is not None else None
        return {
            "now": time.time(),
            "warmup": _warmup_view(service),
            "budget": budget,
            "upstream": {
                "breaker": str(getattr(client.breaker.state, "value", client.breaker.state)),
                "breaker_opened": client.breaker.opened,
                "retry_after_s": round(client.breaker.retry_after, 3),
                "rate_limited": client.rate_limited,
                "banned": client.banned,
                "failed": client.failed,
                "coalesced": client.coalesced,
            },
            "layers": layers,
            # Candles fetched while the database's disk is full, held until there is room.
            "held_candles": service.spine.statistics().held_candles,
            "hit_rate": None
            if not answered
            else round(1 - layers.get("upstream", 0) / answered, 4),
            "websocket": None
            if gateway is None
            else {
                "clients": gateway.clients,
                "subscriptions": gateway.subscriptions,
                "upstream_pairs": gateway.upstream_pairs,
                "dropped_clients": gateway.dropped_clients,
                "frames_sent": gateway.frames_sent,
                "snapshot_joins": gateway.snapshot_joins,
                "snapshot_join_trades": gateway.snapshot_join_trades,
                "snapshot_joins_incomplete": gateway.snapshot_joins_incomplete,
            },
            "watched": [list(pair) for pair in service.demand.watched()],
            "polled": [p.as_dict() for p in service.spine.polled()],
            "tickers": await self._tickers(),
            "jobs": [job.as_dict() for job in service.jobs.all()],
        }

    async def _tickers(self) -> list[dict[str, Any]]:
        markets = sorted({m for kind, m in self.service.demand.watched() if kind == "ticker"})
        rows: list[dict[str, Any]] = []
        for market in markets[:_MAX_TICKERS]:
            try:
                async with asyncio.timeout(1.0):
                    ticker = await self.service.spine.ticker(market, channel=Channel.WEBSOCKET_ONLY)
            except (MarketspineError, TimeoutError):
                continue
            rows.append(
                {
                    "market": ticker.market,
                    "price": ticker.price,
                    "change_rate": ticker.change_rate,
                    "acc_value_24h": ticker.acc_value_24h,
                    "ms": ticker.ms,
                }
            )
        return rows

    async def watch(self, request: Request) -> Response:
        """Watch markets' tickers live. A watch lapses ``lapse_s`` after the last time it was
        asked for (the answer says so): the page asks again well before that while it is
        open, so its tickers stay watched."""
        refused = self.may_change(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        markets = body.get("markets") if isinstance(body, dict) else None
        if not isinstance(markets, list) or not all(isinstance(m, str) for m in markets):
            return _error(400, "invalid_request", 'body must be {"markets": ["KRW-BTC", ...]}')
        for market in markets[:_MAX_TICKERS]:
            self.service.demand.want("ticker", market.strip().upper())
        return _json(
            {
                "watching": [m.strip().upper() for m in markets[:_MAX_TICKERS]],
                "lapse_s": self.service.demand.idle_s,
            }
        )

    async def backfill(self, request: Request) -> Response:
        """Start a backfill job (the page's form), or cancel one (DELETE)."""
        refused = self.may_change(request)
        if refused is not None:
            return refused
        if request.method == "DELETE":
            job_id = request.path_params.get("job_id", "")
            job = self.service.jobs.cancel(job_id)
            if job is None:
                return _error(404, "not_found", f"no backfill job {job_id!r}")
            return _json(job.as_dict())
        body = await _json_body(request)
        if not isinstance(body, dict) or not body.get("markets") or not body.get("since"):
            return _error(
                400,
                "invalid_request",
                'body must be {"markets": [...], "timeframe": "1m", "since": ..., "until": ...}',
            )
        markets = body["markets"]
        if isinstance(markets, str):
            markets = [m for m in markets.replace(",", " ").split() if m]
        try:
            job = await self.service.jobs.start(
                markets,
                body.get("timeframe") or "1m",
                body["since"],
                body.get("until") or None,
            )
        except MarketspineError as exc:
            return _error(400, "invalid_request", str(exc))
        return _json(job.as_dict(), 202)


def _login_refused(message: str, status: int, *, retry_after: float = 0.0) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
    page = (_STATIC / "login.html").read_text(encoding="utf-8")
    return Response(
        page.replace("{{error}}", _escape(message)),
        status,
        media_type="text/html",
        headers={"Cache-Control": "no-store", **headers},
    )


async def _json_body(request: Request) -> Any:
    try:
        return msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        return None


def _samples(service: ServeService, name: str) -> list[tuple[dict[str, str], float]]:
    """Current values of one metric's samples, with their labels."""
    return [
        (sample.labels, sample.value)
        for family in service.metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def _warmup_view(service: ServeService) -> dict[str, Any] | None:
    report = service.warmup_report
    if report is None:
        return None
    return {**report, "finished_at": service.warmup_at}


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def admin_page_routes(page: AdminPage) -> list[BaseRoute]:
    return [
        Route("/admin", page.index),
        Route("/admin/", page.index),
        Route("/admin/login", page.login, methods=["POST"]),
        Route("/admin/logout", page.logout, methods=["POST"]),
        Route("/admin/static/{name}", page.asset),
        Route("/admin/api/state", page.state),
        Route("/admin/api/watch", page.watch, methods=["POST"]),
        Route("/admin/api/backfill", page.backfill, methods=["POST"]),
        Route("/admin/api/backfill/{job_id}", page.backfill, methods=["DELETE"]),
    ]
