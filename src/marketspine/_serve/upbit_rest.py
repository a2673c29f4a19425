"""``serve``'s Upbit-compatible quotation REST (``/v1/…``): Upbit's paths, parameters, JSON
fields in Upbit's order, errors and ``Remaining-Req`` header, answered through one ``Spine``
(memory → store → upstream for candles; live state → REST for tickers, books and trades).

Every answer says which layer gave it in ``X-Marketspine-Source`` (``memory``, ``database``,
``live``, ``upstream`` or ``mixed``) and carries ``X-Marketspine-Stale: true`` when it was
served from cache because upstream is failing or banning us.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .._base.time import parse_time
from .._base.timeframes import REST_CANDLE_KINDS, Timeframe
from .._spine.result import CandleResult
from .._upbit.errors import upbit_error
from .._upbit.limits import MAX_BOOK_LEVELS, MAX_CANDLES, MAX_TRADES
from .._upbit.params import (
    MAX_CODES,
    cursor_value,
    days_ago_value,
    quote_values,
    time_of_day_ms,
)
from .._upbit.rest_rows import (
    instrument_row,
    market_row,
    orderbook_row,
    supported_levels_row,
    ticker_row,
    trade_row,
)
from .._upbit.texts import BAD_UNIT, MISSING, NOT_FOUND, TOO_MANY, TYPE_MISMATCH, WRONG_VALUE
from ..errors import (
    BannedError,
    InvalidRequestError,
    RateLimitedError,
    RetryLaterError,
    StoreError,
    UnknownMarketError,
)
from .query import (
    BadRequest,
    count_param,
    int_param,
    market_param,
    minute_frame,
    query_param,
    required_param,
)
from .security import SECURITY_HEADERS, AllowedHosts
from .service import client_of

if TYPE_CHECKING:
    from .._spine.spine import Spine
    from .service import ServeService

__all__ = ["Answer", "CachedCandles", "upbit_error", "upbit_routes"]

_EARLIEST_MS = parse_time("2017-01-01")  # Upbit opened in 2017: nothing is older
_encode = msgspec.json.Encoder().encode
_UPBIT_TEXTS = frozenset({MISSING, TYPE_MISMATCH, WRONG_VALUE, BAD_UNIT})


class Answer(msgspec.Struct):
    """A handler's answer: the JSON body and where it came from (``layers``: every layer
    that contributed, when more than one did)."""

    body: bytes
    source: str
    stale: bool = False
    layers: tuple[str, ...] = ()


# -- parameters ------------------------------------------------------------------------------


def _codes(params: QueryParams) -> list[str]:
    """``markets`` as a comma list or repeated keys (pyupbit sends lists that way)."""
    codes: list[str] = []
    for value in params.getlist("markets"):
        for part in value.split(","):
            if part.strip() and (code := market_param(part)) not in codes:
                codes.append(code)
                if len(codes) > MAX_CODES:
                    raise BadRequest(WRONG_VALUE)
    if not codes:
        raise BadRequest(MISSING)
    return codes


# -- handlers ----------------------------------------------------------------------------------


async def _market_all(request: Request, service: ServeService) -> Answer:
    details = (query_param(request.query_params, "is_details", "isDetails") or "").lower() == "true"
    with service.upstream_calls() as calls:
        rows = await service.spine.markets()
    body = _encode([market_row(m, details=details) for m in rows])
    return Answer(body, "upstream" if calls.count else "memory")


def _candles(kind: str) -> Callable[[Request, ServeService], Awaitable[Answer]]:
    async def handler(request: Request, service: ServeService) -> Answer:
        params = request.query_params
        tf = REST_CANDLE_KINDS[kind] if kind != "minutes" else minute_frame(request)
        code = market_param(required_param(params, "market"))
        count = count_param(params, MAX_CANDLES)
        convert = query_param(params, "converting_price_unit", "convertingPriceUnit")
        if convert is not None and (tf.unit != "day" or convert != "KRW"):
            raise BadRequest(WRONG_VALUE)
        to = params.get("to")
        to_ms: int | None = None
        if to is not None:
            try:
                to_ms = parse_time(to)
            except InvalidRequestError:
                raise BadRequest(WRONG_VALUE) from None
        # Closed history never changes: an answer made only of closed candles is kept whole,
        # under what the request means (not its text: junk parameters or another spelling
        # of the same time must neither miss nor add an entry).
        key = (tf.key, code, count, to_ms)
        kept = None
        if to_ms is not None and convert is None:  # converted answers are never kept
            kept = service.closed_answers.get(key)
        if kept is not None:
            service.closed_answers.remember(request.url.path, request.scope["query_string"], key)
            return Answer(kept, "memory")
        want = count + 1 if tf.unit == "day" else count  # days compare with the day before
        spine = service.spine
        if to_ms is None:
            result = await spine.candles(code, tf, count=want)
            service.demand.want(f"candle.{tf.name}", code)
        else:
            if to_ms <= _EARLIEST_MS:
                # Before Upbit existed: nothing to ask upstream about, as Upbit answers a
                # listed market (an empty page) or an unknown one (404).
                if code not in {m.market for m in await spine.markets()}:
                    raise BadRequest(NOT_FOUND, 404)
                return Answer(b"[]", "memory")
            result = await candles_before(spine, code, tf, want, to_ms)
            if result.meta.forming:
                service.demand.want(f"candle.{tf.name}", code)
        # Upstream unable with nothing held has raised above: a 503, never an empty 200.
        rows = list(result)
        previous = rows[-want] if tf.unit == "day" and len(rows) >= want else None
        rows = rows[-count:] if len(rows) >= count else rows
        if previous is not None and rows and previous.start_ms >= rows[0].start_ms:
            previous = None
        rate = await _krw_rate(spine, code) if convert is not None else None
        forming = rows[-1].start_ms if result.meta.forming and rows else None
        body = service.candle_rows.page(
            rows, tf, previous=previous, forming_start_ms=forming, krw_rate=rate
        )
        meta = result.meta
        closed = to_ms is not None and to_ms <= tf.floor(spine.client.upstream_now_ms())
        if closed and not meta.forming and not meta.stale and rate is None:
            service.closed_answers.put(key, body)
            service.closed_answers.remember(request.url.path, request.scope["query_string"], key)
        return Answer(body, meta.source, meta.stale, tuple(meta.sources))

    return handler


async def candles_before(
    spine: Spine, code: str, tf: Timeframe, count: int, to_ms: int
) -> CandleResult:
    """The ``count`` most recent existing candles starting before ``to_ms`` (Upbit's
    ``count`` + ``to``), the forming one included when ``to_ms`` is past its start: what is
    stored, then upstream the way a cold ``count`` read asks (the page at ``to``, then the
    rest spread together), down to the listing or the 1s horizon; what is stored alone
    while upstream is failing."""
    return await spine.candles(code, tf, count=count, end=to_ms)


async def _krw_rate(spine: Spine, code: str) -> float:
    quote = code.partition("-")[0]
    if quote == "KRW":
        return 1.0
    return (await spine.ticker(f"KRW-{quote}")).price


def _live_or(service: ServeService, kind: str, codes: list[str], calls: int) -> str:
    if calls:
        return "upstream"
    return "live" if all(service.demand.is_live(kind, c) for c in codes) else "memory"


async def _trades(request: Request, service: ServeService) -> Answer:
    params = request.query_params
    code = market_param(required_param(params, "market"))
    count = count_param(params, MAX_TRADES)
    # Every parameter checked here, as Upbit checks it: nothing absurd goes upstream.
    to = params.get("to")
    if to is not None:
        time_of_day_ms(to)
    cursor_text = params.get("cursor")
    cursor = None if cursor_text is None else cursor_value(cursor_text)
    days_text = query_param(params, "days_ago", "daysAgo")
    days_ago = None if days_text is None else days_ago_value(days_text)
    with service.upstream_calls() as calls:
        if to is None and cursor is None and days_ago is None:
            trades = list(await service.spine.trades(code, count))
            service.demand.want("trade", code)
        else:
            trades = await service.spine.client.trades(
                code, count=count, cursor=cursor, to=to, days_ago=days_ago
            )
    body = _encode([trade_row(t) for t in trades])
    return Answer(body, _live_or(service, "trade", [code], calls.count))


async def _ticker(request: Request, service: ServeService) -> Answer:
    codes = _codes(request.query_params)
    with service.upstream_calls() as calls:
        tickers = await service.spine.tickers(codes)
    for code in codes:
        service.demand.want("ticker", code)
    body = _encode([ticker_row(t) for t in tickers])
    if tickers.meta.stale:  # upstream cannot answer: the stream's last tickers, said so
        return Answer(body, "live", stale=True)
    return Answer(body, _live_or(service, "ticker", codes, calls.count))


async def _ticker_all(request: Request, service: ServeService) -> Answer:
    text = required_param(request.query_params, "quote_currencies", "quoteCurrencies")
    quotes = ",".join(quote_values(text))
    if not quotes:
        raise BadRequest(MISSING)
    with service.upstream_calls() as calls:
        tickers = await service.spine.tickers(quote=quotes)
    body = _encode([ticker_row(t) for t in tickers])
    return Answer(body, "upstream" if calls.count else "memory")


async def _orderbook(request: Request, service: ServeService) -> Answer:
    params = request.query_params
    codes = _codes(params)
    count_text = params.get("count")
    depth = MAX_BOOK_LEVELS if count_text is None else int_param(count_text)
    if not 1 <= depth <= MAX_BOOK_LEVELS:
        depth = MAX_BOOK_LEVELS  # Upbit: out of range means the default
    try:
        level = float(params.get("level") or 0)
    except ValueError:
        raise BadRequest(WRONG_VALUE) from None
    if not 0 <= level < float("inf"):
        raise BadRequest(WRONG_VALUE)
    stale = False
    with service.upstream_calls() as calls:
        if level:
            books = await service.spine.client.orderbooks(codes, count=depth, level=level)
        else:
            held = await service.spine.orderbooks(codes)
            stale, books = held.meta.stale, list(held)
            for code in codes:
                service.demand.want("orderbook", code)
    body = _encode([orderbook_row(b, depth) for b in books])
    if stale:  # upstream cannot answer: the stream's last books, said so
        return Answer(body, "live", stale=True)
    return Answer(body, _live_or(service, "orderbook", codes, calls.count))


async def _instruments(request: Request, service: ServeService) -> Answer:
    codes = _codes(request.query_params)
    with service.upstream_calls() as calls:
        rows = await service.instruments(codes)
    body = _encode([instrument_row(i) for i in rows])
    return Answer(body, "upstream" if calls.count else "memory")


async def _supported_levels(request: Request, service: ServeService) -> Answer:
    with service.upstream_calls() as calls:
        markets = [m.market for m in await service.spine.markets()]
        rows = await service.instruments(markets)
    body = _encode([supported_levels_row(i.market, i.supported_levels) for i in rows])
    return Answer(body, "upstream" if calls.count else "memory")


# -- the common wrapper -------------------------------------------------------------------------

Handler = Callable[[Request, "ServeService"], Awaitable[Answer]]


def _endpoint(service: ServeService, group: str, route: str, handler: Handler) -> Any:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        response = await _answer(service, group, handler, request)
        service.metrics.observe_request(route, response.status_code, time.perf_counter() - started)
        return response

    return endpoint


async def _answer(
    service: ServeService, group: str, handler: Handler, request: Request
) -> Response:
    headers = {"Remaining-Req": service.remaining_req(group), "limit-by-ip": "Yes"}
    try:
        try:
            async with asyncio.timeout(service.max_wait_s):
                async with service.gate.slot(client_of(request)):
                    try:
                        answer = await handler(request, service)
                    except BannedError:
                        # The 418 has opened the breaker: the retry is answered from cache
                        # (marked stale) or fails fast, never hammering on upstream.
                        answer = await handler(request, service)
        except TimeoutError:
            # Waited our turn for as long as a client waits: Upbit's own 429, for this
            # client only — nothing was sent upstream on its behalf meanwhile.
            service.metrics.downstream_throttled()
            return PlainTextResponse(TOO_MANY, 429, headers=headers)
    except BadRequest as exc:
        return upbit_error(exc.status, str(exc), headers)
    except UnknownMarketError:
        return upbit_error(404, NOT_FOUND, headers)
    except InvalidRequestError as exc:
        # Upbit's own text when the check said which (``_upbit.params``), else its usual one.
        message = str(exc) if str(exc) in _UPBIT_TEXTS else WRONG_VALUE
        return upbit_error(400, message, headers)
    except RateLimitedError:
        return PlainTextResponse(TOO_MANY, 429, headers=headers)
    except RetryLaterError as exc:
        if exc.retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        if isinstance(exc, StoreError):  # its path and cause are for the operator: logged
            return upbit_error(503, "candle database unavailable: serve's log says why", headers)
        return upbit_error(503, f"upstream unavailable: {exc}", headers)
    for layer in answer.layers or (answer.source,):
        service.metrics.answered(layer)
    service.metrics.cache_lookup(answer.layers or (answer.source,))
    headers["X-Marketspine-Source"] = answer.source
    if answer.stale:
        headers["X-Marketspine-Stale"] = "true"
    return Response(answer.body, 200, headers=headers, media_type="application/json")


class CachedCandles:
    """The fast path of a polled history page, tried before anything else (no middleware,
    routing or parsing): a ``GET /v1/candles/…`` spelled exactly as one whose closed answer
    is kept is answered as ``_answer`` would answer it, the same bytes in the same headers
    (the security headers included) and counted in the same metrics. It makes the checks
    that come first on the usual way itself: the ``Host`` (with ``hosts``), no request body,
    and a place free in the client's line at the gate (its answer waits for nothing, so a
    client whose line is full waits in it as before). Anything else goes the usual way, a
    web page's request (it carries ``Origin``) too: ``QuotationCors`` adds its headers."""

    def __init__(self, service: ServeService, hosts: AllowedHosts | None = None) -> None:
        self._service = service
        self._hosts = hosts
        self._host_verdicts: dict[bytes, bool] = {}
        self._counters: dict[str, Callable[[float], None]] = {}
        self._remaining = ("", b"")
        self._security = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in SECURITY_HEADERS.items()
        ]

    def answer(self, scope: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The two ASGI messages answering ``scope`` (already counted), or None when it
        must go the usual way."""
        path = scope.get("path", "")
        if not path.startswith(_CANDLES) or scope["type"] != "http" or scope["method"] != "GET":
            return None
        started = time.perf_counter()
        host: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"host":
                if host is None:
                    host = value
            elif key == b"content-length" or key == b"transfer-encoding":
                return None  # a body: BodyLimit judges it
            elif key == b"origin":
                return None  # a web page's: QuotationCors adds what it may read
        if self._hosts is not None and not self._host_allowed(self._hosts, host):
            return None  # HostCheck refuses it
        service = self._service
        body = service.closed_answers.spelled(path, scope["query_string"])
        if body is None:
            return None
        gate = service.gate
        peer = scope.get("client")
        # The client's name is read only while its address has requests inside.
        if gate.busy(peer[0] if peer else "unknown") and not gate.has_place(
            client_of(Request(scope))
        ):
            return None  # waits in its line on the usual way
        remaining = service.remaining_req("candles")
        if remaining is not self._remaining[0]:
            self._remaining = (remaining, remaining.encode("latin-1"))
        headers = [
            (b"remaining-req", self._remaining[1]),
            (b"limit-by-ip", b"Yes"),
            (b"x-marketspine-source", b"memory"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"vary", b"Origin"),  # QuotationCors's: a web page's answer differs
            *self._security,
        ]
        self._counter(path)(time.perf_counter() - started)
        return (
            {"type": "http.response.start", "status": 200, "headers": headers},
            {"type": "http.response.body", "body": body},
        )

    def _host_allowed(self, hosts: AllowedHosts, host: bytes | None) -> bool:
        """``hosts.allows(host)``, remembered for the few ``Host`` values clients send."""
        if host is None:
            return hosts.allows(None)
        verdict = self._host_verdicts.get(host)
        if verdict is None:
            verdict = hosts.allows(host.decode("latin-1"))
            if len(self._host_verdicts) < _REMEMBERED:  # any client can send any Host
                self._host_verdicts[host] = verdict
        return verdict

    def _counter(self, path: str) -> Callable[[float], None]:
        count = self._counters.get(path)
        if count is None:
            count = self._service.metrics.kept_answer(_candle_route(path))
            if len(self._counters) < _REMEMBERED:
                self._counters[path] = count
        return count


_CANDLES = "/v1/candles/"
_REMEMBERED = 256  # distinct Host values, and candle paths, the fast path remembers


def _candle_route(path: str) -> str:
    """The route template ``_endpoint`` reports a candle path under."""
    route = path.rstrip("/")
    if route.startswith("/v1/candles/minutes/"):
        return "/v1/candles/minutes/{unit}"
    return route


def upbit_routes(service: ServeService) -> list[BaseRoute]:
    """Every quotation path of Upbit's REST API (with the trailing-slash spellings some
    clients send for candles)."""
    paths: list[tuple[str, str, Handler]] = [
        ("/v1/market/all", "market", _market_all),
        ("/v1/trades/ticks", "trade", _trades),
        ("/v1/ticker", "ticker", _ticker),
        ("/v1/ticker/all", "ticker", _ticker_all),
        ("/v1/orderbook", "orderbook", _orderbook),
        ("/v1/orderbook/instruments", "orderbook", _instruments),
        ("/v1/orderbook/supported_levels", "orderbook", _supported_levels),
    ]
    for kind in REST_CANDLE_KINDS:
        paths.append((f"/v1/candles/{kind}", "candles", _candles(kind)))
    paths.append(("/v1/candles/minutes/{unit}", "candles", _candles("minutes")))
    routes: list[BaseRoute] = []
    for path, group, handler in paths:
        endpoint = _endpoint(service, group, path, handler)
        routes.append(Route(path, endpoint))
        if path.startswith("/v1/candles/"):
            routes.append(Route(path + "/", endpoint))
    return routes
