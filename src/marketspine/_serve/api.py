"""``serve``'s own JSON API under ``/api/`` (documented at ``/api/openapi.json``): candles by
``start``/``end`` of any length with derived timeframes and ``fill``; coverage and status;
backfill jobs (start, progress, cancel); the warmup report; the history of warmups and
backfill jobs. Errors have Upbit's shape.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .._base.args import time_arg
from .._base.time import DAY_MS, format_utc, parse_time
from .._base.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from .._base.urls import without_db_urls
from ..errors import InvalidRequestError, RetryLaterError, StoreError, UnknownMarketError
from .disconnect import ClientLeft, unless_client_leaves
from .history import SUCCESS_TARGET, history_answer
from .jobs import JobLimitError
from .service import client_of

if TYPE_CHECKING:
    from .service import ServeService

__all__ = ["OPENAPI", "api_routes"]

_MAX_API_CANDLES = 100_000
_MAX_HISTORY = 1000  # the store keeps at most this many runs of a kind


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": {"name": status, "message": message}}, status)


def _label(ms: int | None) -> str | None:
    return None if ms is None else format_utc(ms) + "Z"


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _flag(text: str | None, name: str) -> bool:
    """A boolean query parameter; anything else is a 400 naming it, never a quiet false."""
    if text is None or text.lower() in _FALSE:
        return False
    if text.lower() in _TRUE:
        return True
    raise InvalidRequestError(f"{name} must be true or false, got {text!r}")


def _time_param(text: str | None) -> str | int | None:
    """A time query parameter as ``Spine.candles`` takes it: epoch milliseconds written in
    digits as that int (checked as the library checks an int: epoch seconds are refused,
    naming the fix), anything else as the text (ISO 8601, else a 400 naming it). Digits
    that are an ISO 8601 basic date (``20260101``) stay that date."""
    if text is None:
        return None
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        return text
    try:
        parse_time(digits)
    except InvalidRequestError:
        return int(digits)
    return text


def _check_span(tf: Timeframe, start: str | int | None, end: str | int | None, now_ms: int) -> None:
    """Refuse a ``start``/``end`` range of more than ``_MAX_API_CANDLES`` windows, naming
    the first page to ask instead (one request never fetches without end: a 1s range from
    2017 would be a year of upstream pages)."""
    start_ms = time_arg(start, "start")
    if start_ms is None:
        return
    end_ms = time_arg(end, "end")
    stop = end_ms if end_ms is not None else now_ms
    window = tf.fixed_ms or 28 * DAY_MS  # months and years: never more than fit
    if stop - start_ms <= _MAX_API_CANDLES * window:
        return
    page_end = start_ms + _MAX_API_CANDLES * window
    raise InvalidRequestError(
        f"start..end spans more than {_MAX_API_CANDLES} {tf.name} windows, the most one "
        f"request answers: page through it, first start={_label(start_ms)}&end="
        f"{_label(page_end)}, then from that end on"
    )


def _guarded(handler: Any) -> Any:
    """Map the library's errors to Upbit-shaped answers."""

    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except UnknownMarketError as exc:
            return _error(404, str(exc))
        except InvalidRequestError as exc:
            return _error(400, str(exc))
        except JobLimitError as exc:
            return _error(429, str(exc))
        except RetryLaterError as exc:
            what = "candle database" if isinstance(exc, StoreError) else "upstream"
            return _error(503, f"{what} unavailable: {without_db_urls(str(exc))}")
        return response

    return endpoint


def api_routes(service: ServeService) -> list[BaseRoute]:
    async def candles(request: Request) -> Response:
        q = request.query_params
        market = q.get("market")
        if not market:
            raise InvalidRequestError("market is required, e.g. market=KRW-BTC")
        tf = parse_timeframe(q.get("timeframe", "1m"))
        count_text = q.get("count")
        start, end = _time_param(q.get("start")), _time_param(q.get("end"))
        count = None
        if count_text is not None:
            try:
                count = int(count_text)
            except ValueError:
                raise InvalidRequestError(f"count must be an integer, got {count_text!r}") from None
        if count is not None and not 1 <= count <= _MAX_API_CANDLES:
            raise InvalidRequestError(f"count must be 1..{_MAX_API_CANDLES}")
        if count is None:
            _check_span(tf, start, end, service.spine.client.upstream_now_ms())
        flags = {name: _flag(q.get(name), name) for name in ("fill", "closed_only")}
        work = service.spine.candles(
            market,
            tf,
            count=count,
            start=start,
            end=end,
            fill=flags["fill"],
            closed_only=flags["closed_only"],
        )
        # Through the same per-client gate as /v1, and only while the client waits for it.
        inside = False
        try:
            async with service.gate.slot(client_of(request), wait_s=service.max_wait_s):
                inside = True
                result = await unless_client_leaves(request.receive, work)
        except TimeoutError:
            if inside:  # the work's own, not the gate's
                raise
            work.close()  # never started: the gate had no room within max_wait_s
            service.metrics.downstream_throttled()
            return _error(
                429,
                f"this client has as many requests in progress as it may and waited "
                f"{service.max_wait_s:g} s for its turn: retry when one has been answered",
            )
        except ClientLeft:
            return Response(status_code=499)  # nobody reads it: only the log and metrics
        meta = result.meta
        body = {
            "market": result.market,
            "timeframe": tf.name,
            "meta": {
                "source": meta.source,
                "sources": list(meta.sources),
                "upstream_calls": meta.upstream_calls,
                "pages": meta.pages,
                "elapsed_ms": round(meta.elapsed_ms, 3),
                "stale": meta.stale,
                "forming": meta.forming,
                # Without these an /api client cannot tell "unknown" from "empty".
                "unserved_before": _label(meta.unserved_before_ms),
                "delisted": meta.delisted,
                # Closes built from the trade stream, in memory only (not yet upstream's own).
                "provisional": meta.provisional,
            },
            "candles": [
                {
                    "time_utc": format_utc(c.start_ms) + "Z",
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                    "value": c.value,
                }
                for c in result
            ],
        }
        for layer in meta.sources:
            service.metrics.answered(layer)
        service.metrics.cache_lookup(meta.sources)
        response = _json(body)
        response.headers["X-Marketspine-Source"] = meta.source
        return response

    async def coverage(request: Request) -> Response:
        q = request.query_params
        market, timeframe = q.get("market"), q.get("timeframe")
        store = service.spine.store
        if market and timeframe:
            tf = parse_timeframe(timeframe)
            covered = await store.coverage(market.strip().upper(), tf)
            return _json(
                {
                    "market": market.strip().upper(),
                    "timeframe": tf.name,
                    "ranges": [[_label(a), _label(b)] for a, b in covered.ranges],
                    "listing": _label(covered.listing_ms),
                }
            )
        series = await store.summary()
        return _json(
            [
                {
                    "market": s.market,
                    "timeframe": s.timeframe,
                    "rows": s.rows,
                    "first": _label(s.first_ms),
                    "last": _label(s.last_ms),
                    "ranges": [[_label(a), _label(b)] for a, b in s.ranges],
                    "listing": _label(s.listing_ms),
                }
                for s in series
                if (not market or s.market == market.strip().upper())
            ]
        )

    async def status(request: Request) -> Response:
        spine_stats = dataclasses.asdict(service.spine.statistics())
        client = service.spine.client.statistics()
        return _json(
            {
                "uptime_s": round(time.time() - service.started_at, 3),
                "spine": spine_stats,
                "upstream": {
                    "sent": dict(client.sent),
                    "retries": client.retries,
                    "rate_limited": client.rate_limited,
                    "banned": client.banned,
                    "coalesced": client.coalesced,
                    "failed": client.failed,
                    "timed_out": client.timed_out,
                    "connections_retired": client.connections_retired,
                    "breaker": str(client.breaker.state),
                    "budget": {
                        name: {"tokens": g.tokens, "waiting": dict(g.waiting), "sent": g.sent}
                        for name, g in client.budget.groups.items()
                    },
                },
                "watched": [list(k) for k in service.demand.watched()],
                "polled": [p.as_dict() for p in service.spine.polled()],
                "waiting_requests": service.gate.waiting(),
                "jobs": {"running": sum(j.state == "running" for j in service.jobs.all())},
                "warmup": service.warmup_report,
            }
        )

    async def backfill_start(request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError:
            raise InvalidRequestError(
                "body must be JSON: {markets, timeframe, since, until}"
            ) from None
        if not isinstance(body, dict) or "since" not in body:
            raise InvalidRequestError("body must be {markets, timeframe, since[, until]}")
        job = await service.jobs.start(
            body.get("markets") or [],  # one code is one market, never its characters
            body.get("timeframe", "1m"),
            body["since"],
            body.get("until"),
        )
        return _json(job.as_dict(), 202)

    async def backfill(request: Request) -> Response:
        # One route for both methods, so a wrong one's 405 names them both in Allow.
        if request.method == "POST":
            return await backfill_start(request)
        return _json([job.as_dict() for job in service.jobs.all()])

    async def backfill_one(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = (
            service.jobs.cancel(job_id) if request.method == "DELETE" else service.jobs.get(job_id)
        )
        if job is None:
            return _error(404, f"no backfill job {job_id!r}")
        return _json(job.as_dict())

    async def warmup(request: Request) -> Response:
        if service.warmup_report is None:
            return _error(404, "no warmup has finished yet")
        return _json(service.warmup_report)

    async def runs_of(kind: str, request: Request) -> Response:
        text = request.query_params.get("limit", "100")
        try:
            limit = int(text)
        except ValueError:
            raise InvalidRequestError(f"limit must be an integer, got {text!r}") from None
        if not 1 <= limit <= _MAX_HISTORY:
            raise InvalidRequestError(f"limit must be 1..{_MAX_HISTORY}")
        return _json(history_answer(kind, await service.spine.store.runs(kind, limit)))

    async def warmup_history(request: Request) -> Response:
        return await runs_of("warmup", request)

    async def backfill_history(request: Request) -> Response:
        return await runs_of("backfill", request)

    async def openapi(request: Request) -> Response:
        return _json(OPENAPI)

    return [
        Route("/api/openapi.json", openapi),
        Route("/api/candles", _guarded(candles)),
        Route("/api/coverage", _guarded(coverage)),
        Route("/api/status", _guarded(status)),
        Route("/api/warmup", _guarded(warmup)),
        Route("/api/warmup/history", _guarded(warmup_history)),
        Route("/api/backfill", _guarded(backfill), methods=["GET", "POST"]),
        # Before /api/backfill/{job_id}, which would take "history" for a job id.
        Route("/api/backfill/history", _guarded(backfill_history)),
        Route("/api/backfill/{job_id}", _guarded(backfill_one), methods=["GET", "DELETE"]),
    ]


def _q(
    name: str, description: str, *, required: bool = False, kind: str = "string"
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": kind},
    }


_ERROR = {"description": 'Upbit-shaped error {"error": {"name", "message"}}'}
_OK = {"description": "JSON"}
_TIMEFRAMES = ", ".join(TIMEFRAMES)

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "marketspine serve", "version": "0.1.0"},
    # Every /api route needs one of these (app.py locks them): reads take the read-only
    # token, the admin token or an admin session; changes the admin token, or a session
    # with its CSRF token in X-CSRF-Token. 401 without credentials, 403 for too few rights.
    "security": [{"bearer": []}, {"session": []}],
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "--admin-token (everything) or --read-token (GET only)",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "marketspine_admin",
                "description": "The admin page's login session; changes also need its "
                "X-CSRF-Token header",
            },
        }
    },
    "paths": {
        "/api/candles": {
            "get": {
                "summary": "Candles of one market, ascending, from the cheapest layer",
                "parameters": [
                    _q("market", "Market code such as KRW-BTC", required=True),
                    _q("timeframe", f"One of {_TIMEFRAMES} (default 1m)"),
                    _q(
                        "start",
                        "ISO 8601 or epoch ms; window starts in [start, end); at most "
                        f"{_MAX_API_CANDLES} windows per request (page for more)",
                    ),
                    _q("end", "ISO 8601 or epoch ms, exclusive (default now)"),
                    _q(
                        "count",
                        "The most recent N candles (before end, if given) instead of start",
                        kind="integer",
                    ),
                    _q(
                        "fill",
                        "true: flat zero-volume candles for windows without trades",
                        kind="boolean",
                    ),
                    _q("closed_only", "true: leave out the forming candle", kind="boolean"),
                ],
                "responses": {
                    "200": _OK,
                    "400": _ERROR,
                    "404": _ERROR,
                    "429": _ERROR,
                    "503": _ERROR,
                },
            }
        },
        "/api/coverage": {
            "get": {
                "summary": "Covered ranges per stored series (one series with market+timeframe)",
                "parameters": [_q("market", "Market code"), _q("timeframe", "Timeframe")],
                "responses": {"200": _OK, "400": _ERROR},
            }
        },
        "/api/status": {
            "get": {
                "summary": "Layer hits, upstream calls, budget, breaker, live watches, jobs",
                "responses": {"200": _OK},
            }
        },
        "/api/warmup": {
            "get": {
                "summary": "The last warmup report (success, refreshed_exchanges, total_markets, "
                "execution_time, exchange_details)",
                "responses": {"200": _OK, "404": _ERROR},
            }
        },
        "/api/warmup/history": {
            "get": {
                "summary": "Finished warmups (start, scheduled, manual), newest first, with a "
                "summary: count, success_rate against the target "
                f"({SUCCESS_TARGET:.0%}), median and max duration_ms",
                "parameters": [_q("limit", "Newest N runs, 1..1000 (default 100)", kind="integer")],
                "responses": {"200": _OK, "400": _ERROR},
            }
        },
        "/api/backfill/history": {
            "get": {
                "summary": "Finished backfill jobs (done, failed, cancelled), newest first, with "
                "the same summary as /api/warmup/history",
                "parameters": [_q("limit", "Newest N runs, 1..1000 (default 100)", kind="integer")],
                "responses": {"200": _OK, "400": _ERROR},
            }
        },
        "/api/backfill": {
            "post": {
                "summary": "Start a backfill job (runs at LOW priority, never blocks requests)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["markets", "timeframe", "since"],
                                "properties": {
                                    "markets": {"type": "array", "items": {"type": "string"}},
                                    "timeframe": {"type": "string"},
                                    "since": {"type": "string", "description": "ISO 8601"},
                                    "until": {
                                        "type": "string",
                                        "description": "ISO 8601 (default now)",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {"202": _OK, "400": _ERROR, "413": _ERROR, "429": _ERROR},
            },
            "get": {"summary": "Every job with its progress", "responses": {"200": _OK}},
        },
        "/api/backfill/{job_id}": {
            "parameters": [
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {"summary": "One job's progress", "responses": {"200": _OK, "404": _ERROR}},
            "delete": {
                "summary": "Cancel a job (what it stored stays)",
                "responses": {"200": _OK, "404": _ERROR},
            },
        },
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _OK}}},
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": _OK}}
        },
        "/admin/api/refresh-market-info": {
            "post": {
                "summary": "Run a warmup now (Authorization: Bearer <admin token>)",
                "responses": {"200": _OK, "401": _ERROR},
            }
        },
    },
}
