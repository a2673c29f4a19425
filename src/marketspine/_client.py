"""The Upbit REST client: typed records out, the rate budget respected, errors typed.

One ``Client`` owns one ``httpx.AsyncClient``; use it as ``async with Client(...) as client``.
Every request goes through the same pipeline:

    identical GET already in flight? ──yes──▶ share its result (or its error)
        │ no
    circuit breaker ─▶ rate budget (priority) ─▶ send ─▶ reconcile Remaining-Req / Date
        │
    200 → bytes · 4xx → InvalidRequestError/UnknownMarketError · 429/418/5xx/timeout → retry
    the same request (bounded), then RateLimitedError/BannedError/UpstreamError

HTTP failures are translated into marketspine errors in exactly one place (``_send`` and
``_status_error``), always with ``raise ... from``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar

import httpx
import msgspec

from ._circuit import BreakerStatistics, CircuitBreaker
from ._errors import (
    BannedError,
    InvalidRequestError,
    MarketspineError,
    RateLimitedError,
    RetryLaterError,
    UnknownMarketError,
    UpstreamError,
)
from ._ratebudget import (
    GROUPS,
    BudgetStatistics,
    LocalRateBudget,
    Priority,
    RateBudget,
    group_of,
)
from ._records import (
    Candle,
    Instrument,
    MarketInfo,
    Orderbook,
    Ticker,
    Trade,
    decode_candles,
    decode_instruments,
    decode_markets,
    decode_orderbooks,
    decode_tickers,
    decode_trades,
)
from ._time import format_utc
from ._time import now_ms as wall_now_ms
from ._timeframes import Timeframe, parse_timeframe

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "MARKETS_PER_REQUEST",
    "Client",
    "ClientStatistics",
    "RetryPolicy",
]

log = logging.getLogger("marketspine.client")

DEFAULT_BASE_URL = "https://api.upbit.com"
DEFAULT_TIMEOUT = 10.0
# Market lists are split so URLs stay far below the ~8 KB gateways accept.
MARKETS_PER_REQUEST = 100
MAX_CANDLES = 200
MAX_TRADES = 500
MAX_BOOK_LEVELS = 30

_REMAINING_REQ = re.compile(r"group=([a-z\-]+);\s*min=\d+;\s*sec=(\d+)")
_BLOCK_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s\b|초)", re.IGNORECASE)
_TIME_OF_DAY = re.compile(r"\d{6}|\d{2}:\d{2}:\d{2}")
_NOT_FOUND = "Code not found"


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried. ``attempts`` counts every try of one request, the
    first included. 5xx answers, timeouts and connection errors wait a capped exponential
    backoff with full jitter: a random delay in ``[0, min(max_delay, base_delay * 2**n)]``.
    A 429 pauses the whole group for ``rate_limited_delay`` seconds (doubling while 429s
    repeat, at most ``max_delay``). A 418 block is waited out when it lasts at most
    ``max_ban_wait`` seconds (``default_ban`` when upstream does not say how long), and is
    raised as BannedError otherwise."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    rate_limited_delay: float = 1.0
    default_ban: float = 10.0
    max_ban_wait: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidRequestError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if min(self.base_delay, self.max_delay, self.rate_limited_delay, self.default_ban) < 0:
            raise InvalidRequestError("RetryPolicy delays must be >= 0 s")

    def backoff(self, failures: int, unit_random: float) -> float:
        """The delay before retrying after ``failures`` consecutive failures (1 = first)."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** (failures - 1))
        return unit_random * ceiling


@dataclass(frozen=True)
class ClientStatistics:
    """A snapshot of the client: requests sent per group, retries, 429s, 418s, calls that
    shared another caller's in-flight request, requests that finally failed, and the
    breaker and budget underneath."""

    sent: Mapping[str, int]
    retries: int
    rate_limited: int
    banned: int
    coalesced: int
    failed: int
    breaker: BreakerStatistics
    budget: BudgetStatistics


class _LeaderGone(Exception):
    """The caller fetching a shared request was cancelled; a waiting caller takes over."""


class _Flight:
    """A request in flight, shared by identical callers: its answer, and the priority it
    waits for the budget at — raised when a more urgent caller joins, so a CRITICAL caller
    never waits behind the LOW request it joined."""

    def __init__(self, priority: Priority) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.priority = priority
        self.raised = asyncio.Event()

    def join(self, priority: Priority) -> None:
        if priority > self.priority:
            self.priority = priority
            self.raised.set()


Params = tuple[tuple[str, str], ...]
R = TypeVar("R")


class Client:
    """An Upbit quotation REST client. Methods return typed records in Upbit's order and
    raise errors from ``marketspine._errors``; they never return None or skip a page.

    ``transport`` is the test seam (``httpx.ASGITransport(app=...)``); ``budget`` may be
    shared between clients (default: a new ``LocalRateBudget`` on ``clock``/``sleep``);
    ``timeout`` bounds each attempt in seconds; ``breaker`` guards this upstream;
    ``clock``/``sleep``/``rng`` make time and jitter injectable; ``wall_ms`` is the local
    wall clock behind ``upstream_now_ms``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RateBudget | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        wall_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        if timeout <= 0:
            raise InvalidRequestError(f"timeout must be > 0 s, got {timeout}")
        self._base_url = base_url.rstrip("/")
        self._transport = transport
        self._timeout = timeout
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._wall_ms = wall_ms
        self._budget: RateBudget = budget or LocalRateBudget(clock=clock, sleep=sleep)
        self._breaker = breaker or CircuitBreaker(name=self._base_url, clock=clock)
        self._http: httpx.AsyncClient | None = None
        self._in_flight: dict[tuple[str, Params], _Flight] = {}
        self._sent: Counter[str] = Counter()
        self._retries = 0
        self._rate_limited = 0
        self._banned = 0
        self._coalesced = 0
        self._failed = 0
        # Bounds on (upstream clock - local wall clock), in ms.
        self._offset_low: float | None = None
        self._offset_high: float | None = None
        self._clock_heard = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            transport=self._transport,
            timeout=self._timeout,
            # No Origin header ever: Upbit limits requests that carry one to 1 per 10 s.
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "gzip",
                "User-Agent": "marketspine",
            },
            follow_redirects=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (idempotent)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    # -- quotation endpoints -----------------------------------------------------------------

    async def candles(
        self,
        market: str,
        timeframe: Timeframe | str,
        *,
        count: int = MAX_CANDLES,
        to_ms: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Candle]:
        """Up to ``count`` (1..200) existing candles starting before ``to_ms`` (exclusive;
        default now), newest first; without ``to_ms`` the first is the forming candle.
        Windows without trades have no candle, so the result may span more windows.

        Raises InvalidRequestError for bad arguments, UnknownMarketError for unlisted
        markets, RetryLaterError subclasses when upstream stays unavailable.
        """
        tf = parse_timeframe(timeframe)
        _check_market(market)
        _check_range("count", count, 1, MAX_CANDLES)
        params: list[tuple[str, str]] = [("market", market), ("count", str(count))]
        if to_ms is not None:
            # Candles start on whole seconds: "start < to_ms" is "start < to_ms rounded up".
            params.append(("to", format_utc(-(-to_ms // 1000) * 1000) + "Z"))
        body = await self._get(tf.rest_path, tuple(params), priority)
        candles = decode_candles(body, tf)
        if candles:
            self._saw_upstream_time(max(c.last_trade_ms for c in candles))
        return candles

    async def trades(
        self,
        market: str,
        *,
        count: int = MAX_CANDLES,
        cursor: int | None = None,
        to: str | None = None,
        days_ago: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Trade]:
        """Up to ``count`` (1..500) recent trades, newest first: before the trade whose
        ``seq`` is ``cursor``, before ``to`` (``HHmmss`` or ``HH:mm:ss`` UTC) within the UTC
        day ``days_ago`` (1..7) days back, or the latest.

        Raises InvalidRequestError, UnknownMarketError, RetryLaterError subclasses.
        """
        _check_market(market)
        _check_range("count", count, 1, MAX_TRADES)
        params: list[tuple[str, str]] = [("market", market), ("count", str(count))]
        if cursor is not None:
            params.append(("cursor", str(cursor)))
        if to is not None:
            if not _TIME_OF_DAY.fullmatch(to):
                raise InvalidRequestError(
                    f"invalid trades 'to' {to!r}: expected HHmmss or HH:mm:ss (UTC)"
                )
            params.append(("to", to))
        if days_ago is not None:
            _check_range("days_ago", days_ago, 1, 7)
            params.append(("days_ago", str(days_ago)))
        trades = decode_trades(await self._get("/v1/trades/ticks", tuple(params), priority))
        if trades:
            self._saw_upstream_time(max(t.ms for t in trades))
        return trades

    async def tickers(
        self, markets: Sequence[str], *, priority: Priority = Priority.NORMAL
    ) -> list[Ticker]:
        """Tickers of ``markets`` (long lists are split into several requests).

        Raises UnknownMarketError if any market is not listed, InvalidRequestError,
        RetryLaterError subclasses.
        """
        tickers = await self._per_market_chunks("/v1/ticker", markets, (), priority, decode_tickers)
        if tickers:
            self._saw_upstream_time(max(t.ms for t in tickers))
        return tickers

    async def tickers_by_quote(
        self, quotes: Sequence[str], *, priority: Priority = Priority.NORMAL
    ) -> list[Ticker]:
        """Tickers of every market quoted in ``quotes`` (``KRW``, ``BTC``, ``USDT``...).

        Raises UnknownMarketError for unknown quotes, RetryLaterError subclasses.
        """
        wanted = _unique(q.strip().upper() for q in quotes)
        if not wanted:
            return []
        params = (("quote_currencies", ",".join(wanted)),)
        tickers = decode_tickers(await self._get("/v1/ticker/all", params, priority))
        if tickers:
            self._saw_upstream_time(max(t.ms for t in tickers))
        return tickers

    async def orderbooks(
        self,
        markets: Sequence[str],
        *,
        count: int = MAX_BOOK_LEVELS,
        level: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Orderbook]:
        """Order books of ``markets`` with ``count`` (1..30) levels, aggregated to ``level``
        when given (KRW markets; upstream omits books whose market lacks that level).

        Raises InvalidRequestError, UnknownMarketError, RetryLaterError subclasses.
        """
        _check_range("count", count, 1, MAX_BOOK_LEVELS)
        extra: list[tuple[str, str]] = [("count", str(count))]
        if level is not None:
            if not math.isfinite(level) or level < 0:
                raise InvalidRequestError(f"invalid orderbook level {level!r}: expected >= 0")
            extra.append(("level", _level_text(level)))
        books = await self._per_market_chunks(
            "/v1/orderbook", markets, tuple(extra), priority, decode_orderbooks
        )
        if books:
            self._saw_upstream_time(max(b.ms for b in books))
        return books

    async def markets(
        self, *, details: bool = True, priority: Priority = Priority.NORMAL
    ) -> list[MarketInfo]:
        """Every listed market; with ``details`` the warning and caution flags.

        Raises RetryLaterError subclasses when upstream stays unavailable.
        """
        params = (("is_details", "true" if details else "false"),)
        return decode_markets(await self._get("/v1/market/all", params, priority))

    async def instruments(
        self, markets: Sequence[str], *, priority: Priority = Priority.NORMAL
    ) -> list[Instrument]:
        """Current tick size and supported orderbook levels of ``markets``.

        Raises UnknownMarketError, InvalidRequestError, RetryLaterError subclasses.
        """
        return await self._per_market_chunks(
            "/v1/orderbook/instruments", markets, (), priority, decode_instruments
        )

    # -- clock and statistics ------------------------------------------------------------------

    def upstream_now_ms(self) -> int:
        """Best estimate of upstream's clock in UTC epoch ms: the local wall clock, moved
        only as far as the evidence demands — up to the newest tick seen (a trade, book or
        candle tick cannot be from upstream's future), down to the latest ``Date`` header
        (upstream's clock floored to the second) plus one second. Without evidence, the
        local wall clock."""
        offset = 0.0
        if self._offset_low is not None:
            offset = max(offset, self._offset_low)
        if self._offset_high is not None:
            offset = min(offset, self._offset_high)
        return int(self._wall_ms() + offset)

    async def synced_now_ms(
        self, market: str, *, until_ms: int | None = None, priority: Priority = Priority.NORMAL
    ) -> int:
        """Upstream's clock, first asked of upstream (one ticker request for ``market``)
        unless a reply has told it already: a local clock running ahead would otherwise take
        the forming candle for closed and store it. A range ending (``until_ms``) over an
        hour before the local clock cannot reach the forming candle, so it asks nothing.
        Raises as ``tickers`` does."""
        now = self.upstream_now_ms()
        if self._clock_heard or (until_ms is not None and until_ms < now - _CLOCK_SLACK_MS):
            return now
        await self.tickers([market], priority=priority)
        self._clock_heard = True  # even if the reply had no Date: ask once, not always
        return self.upstream_now_ms()

    def statistics(self) -> ClientStatistics:
        """A snapshot of the client's counters, breaker and budget."""
        return ClientStatistics(
            sent={group: self._sent[group] for group in GROUPS},
            retries=self._retries,
            rate_limited=self._rate_limited,
            banned=self._banned,
            coalesced=self._coalesced,
            failed=self._failed,
            breaker=self._breaker.statistics(),
            budget=self._budget.statistics(),
        )

    # -- the pipeline ----------------------------------------------------------------------------

    async def _per_market_chunks(
        self,
        path: str,
        markets: Sequence[str],
        extra: Params,
        priority: Priority,
        decode: Callable[[bytes], list[R]],
    ) -> list[R]:
        if isinstance(markets, str):
            raise InvalidRequestError(
                f"markets must be a list of codes such as ['KRW-BTC'], got the string {markets!r}"
            )
        codes = _unique(markets)
        for code in codes:
            _check_market(code)
        chunks = [
            codes[i : i + MARKETS_PER_REQUEST] for i in range(0, len(codes), MARKETS_PER_REQUEST)
        ]

        async def fetch(chunk: list[str]) -> list[R]:
            params = (("markets", ",".join(chunk)), *extra)
            return decode(await self._get(path, params, priority))

        if len(chunks) <= 1:
            return await fetch(chunks[0]) if chunks else []
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(fetch(chunk)) for chunk in chunks]
        except BaseExceptionGroup as group:
            # Callers get one typed error, as from a single request.
            raise group.exceptions[0] from None
        return [record for task in tasks for record in task.result()]

    async def _get(self, path: str, params: Params, priority: Priority) -> bytes:
        """The body of a successful GET, shared with identical GETs already in flight."""
        key = (path, params)
        while (shared := self._in_flight.get(key)) is not None:
            self._coalesced += 1
            shared.join(priority)
            try:
                # shield: a waiting caller's cancellation must not cancel the shared request.
                return await asyncio.shield(shared.answer)
            except _LeaderGone:
                continue
        flight = self._in_flight[key] = _Flight(priority)
        future = flight.answer
        try:
            body = await self._fetch(path, params, flight)
        except asyncio.CancelledError:
            future.set_exception(_LeaderGone())
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(body)
            return body
        finally:
            del self._in_flight[key]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" noise without followers

    async def _acquire(self, group: str, flight: _Flight) -> None:
        """Wait for the budget at the flight's priority; when a more urgent caller joins
        meanwhile, leave the queue and wait again at the raised priority."""
        while True:
            flight.raised.clear()
            if flight.priority == Priority.CRITICAL:  # nothing can raise it further
                await self._budget.acquire(group, flight.priority)
                return
            acquiring = asyncio.ensure_future(self._budget.acquire(group, flight.priority))
            raised = asyncio.ensure_future(flight.raised.wait())
            try:
                await asyncio.wait((acquiring, raised), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                acquiring.cancel()
                raise
            finally:
                raised.cancel()
            if acquiring.done():
                acquiring.result()
                return
            acquiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquiring
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # we were cancelled meanwhile, not just raised
            if not acquiring.cancelled():
                acquiring.result()  # granted before the cancel landed: use that slot
                return

    async def _fetch(self, path: str, params: Params, flight: _Flight) -> bytes:
        """One request with retries; raises the last error once the retries are used up."""
        if self._http is None:
            raise InvalidRequestError("the Client is not open: use `async with Client(...)`")
        group = group_of(path)
        policy = self._retry
        failures = rate_limited = bans = 0
        error: RetryLaterError | None = None
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1:
                self._retries += 1
            try:
                self._breaker.before_call()
            except UpstreamError:
                self._failed += 1
                raise
            try:
                await self._acquire(group, flight)
                sent_at = self._clock()
                self._sent[group] += 1
                response = await self._send(path, params)
            except UpstreamError as exc:
                self._breaker.record_failure()
                failures += 1
                exc.add_note(f"attempt {attempt} of {policy.attempts}")
                error = exc
                if attempt < policy.attempts:
                    await self._sleep(policy.backoff(failures, self._rng()))
                continue
            except BaseException:
                self._breaker.record_abandoned()
                raise
            self._learn_from_reply(group, response, sent_at)
            status = response.status_code
            if status >= 500:
                self._breaker.record_failure()
                failures += 1
                error = UpstreamError(
                    f"GET {path} failed: upstream answered {status} "
                    f"(attempt {attempt} of {policy.attempts})",
                    retry_after=None,
                )
                if attempt < policy.attempts:
                    await self._sleep(policy.backoff(failures, self._rng()))
                continue
            self._breaker.record_success()  # upstream answered: it is up
            if status == 200:
                return response.content
            if status == 429:
                self._rate_limited += 1
                rate_limited += 1
                pause = min(policy.max_delay, policy.rate_limited_delay * 2 ** (rate_limited - 1))
                # The budget holds the whole group back; the retry waits in acquire().
                self._budget.penalize(group, pause)
                error = RateLimitedError(
                    f"GET {path}: upstream answered 429 Too Many Requests for group {group!r} "
                    f"(attempt {attempt} of {policy.attempts}); retry after {pause:g} s",
                    retry_after=pause,
                )
                continue
            if status == 418:
                self._banned += 1
                bans += 1
                told = _block_seconds(response)
                block = told if told is not None else policy.default_ban * 2 ** (bans - 1)
                error = BannedError(
                    f"GET {path}: upstream answered 418, this IP is blocked for {block:.0f} s "
                    "after too many 429s",
                    retry_after=block,
                )
                if block > policy.max_ban_wait:
                    self._failed += 1
                    raise error
                log.warning(
                    "Upbit blocked this IP (418) for %.0f s%s; waiting it out before retrying "
                    "GET %s",
                    block,
                    "" if told is not None else " (no block time given: backing off)",
                    path,
                )
                for name in GROUPS:  # the block covers the IP, every group
                    self._budget.penalize(name, block)
                continue
            self._failed += 1
            raise self._status_error(path, params, response)
        self._failed += 1
        assert error is not None  # at least one attempt ran and failed
        raise error

    async def _send(self, path: str, params: Params) -> httpx.Response:
        """Send one GET; transport failures and timeouts become UpstreamError."""
        assert self._http is not None
        try:
            # Also bounds transports that ignore httpx timeouts (ASGI apps in tests).
            async with asyncio.timeout(self._timeout):
                return await self._http.get(path, params=params)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise UpstreamError(
                f"GET {path} timed out after {self._timeout:g} s", retry_after=None
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"GET {path} failed: {type(exc).__name__}: {exc}", retry_after=None
            ) from exc

    @staticmethod
    def _status_error(path: str, params: Params, response: httpx.Response) -> MarketspineError:
        """The error for a 4xx answer other than 429/418."""
        message = _upbit_message(response)
        status = response.status_code
        if status == 404 and message == _NOT_FOUND:
            values = dict(params)
            markets = (
                values.get("market") or values.get("markets") or values.get("quote_currencies", "?")
            )
            return UnknownMarketError(
                markets,
                f"unknown market {markets!r}: Upbit answered 404 {_NOT_FOUND} (not listed, "
                "delisted, or a quote currency that does not exist)",
            )
        if status == 404:
            return InvalidRequestError(f"GET {path}: no such Upbit path (404 {message})")
        return InvalidRequestError(f"GET {path} rejected by Upbit ({status}): {message}")

    def _learn_from_reply(self, group: str, response: httpx.Response, sent_at: float) -> None:
        header = response.headers.get("remaining-req")
        if header is not None and (match := _REMAINING_REQ.search(header)):
            name = match.group(1)
            self._budget.observe(
                name if name in GROUPS else group, int(match.group(2)), sent_at=sent_at
            )
        date = response.headers.get("date")
        if date is not None:
            try:
                date_ms = email.utils.parsedate_to_datetime(date).timestamp() * 1000
            except (TypeError, ValueError):
                return
            self._clock_heard = True
            wall = self._wall_ms()
            # Date is upstream's clock floored to the second, read while the reply was made.
            rtt_ms = (self._clock() - sent_at) * 1000
            self._bound_offset(low=date_ms - wall, high=date_ms + 1000 - (wall - rtt_ms))

    def _saw_upstream_time(self, upstream_ms: int) -> None:
        self._bound_offset(low=upstream_ms - self._wall_ms(), high=None)

    def _bound_offset(self, *, low: float, high: float | None) -> None:
        if self._offset_high is not None and low > self._offset_high + 1000:
            # The bounds contradict each other: a clock jumped; start over from now.
            self._offset_low = self._offset_high = None
        if self._offset_low is None or low > self._offset_low:
            self._offset_low = low
        if high is not None and (self._offset_high is None or high < self._offset_high):
            self._offset_high = high


# How far the local clock may run ahead of upstream's before ranges that end in the past
# could still reach the forming candle.
_CLOCK_SLACK_MS = 3_600_000


# -- helpers ------------------------------------------------------------------------------------


def _check_market(market: str) -> None:
    if not isinstance(market, str) or not market or "," in market:
        raise InvalidRequestError(f"invalid market {market!r}: expected one code such as KRW-BTC")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(f"invalid {name} {value!r}: expected an integer {low}..{high}")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _level_text(level: float) -> str:
    # Upbit wants integer strings for levels >= 1 and plain decimals below.
    if level >= 1 and float(level).is_integer():
        return str(int(level))
    return f"{level:.10f}".rstrip("0").rstrip(".") or "0"


class _ErrorBody(msgspec.Struct):
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


def _upbit_message(response: httpx.Response) -> str:
    try:
        return msgspec.json.decode(response.content, type=_ErrorEnvelope).error.message
    except msgspec.DecodeError:
        return response.text.strip()[:200]


def _block_seconds(response: httpx.Response) -> float | None:
    """The block length a 418 announces: ``Retry-After`` (seconds or a date), else a number
    of seconds in the body; None when neither says."""
    retry_after = response.headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after).timestamp()
            except (TypeError, ValueError):
                pass
            else:
                return max(0.0, when - time.time())
    match = _BLOCK_SECONDS.search(_upbit_message(response))
    return float(match.group(1)) if match else None
