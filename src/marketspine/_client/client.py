"""The Upbit REST client: typed records out, the rate budget respected, errors typed.

One ``Client`` owns one ``httpx.AsyncClient``; use it as ``async with Client(...) as client``.
Every request goes through the same pipeline:

    identical GET already in flight? ──yes──▶ share its result (or its error)
        │ no
    circuit breaker ─▶ rate budget (priority) ─▶ send ─▶ reconcile Remaining-Req / Date
        │
    200 → bytes · 4xx → InvalidRequestError/UnknownMarketError · 429/418/5xx/timeout → retry
    the same request (bounded), then RateLimitedError/BannedError/UpstreamError

The client decides what to ask and shares identical requests in flight; the rest of the
pipeline, one GET from the breaker to its status, is ``_request_chain.RequestChain``. HTTP
failures are translated into marketspine errors in exactly one place (``_replies.send_get``
and ``_replies.status_error``), always with ``raise ... from``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Self, TypeVar

from .._base.args import Moment, enum_arg, ms_arg, timeframe_arg
from .._base.markets import MarketCode, market_code
from .._base.time import format_utc
from .._base.time import now_ms as wall_now_ms
from .._base.timeframes import Timeframe
from .._base.urls import check_upstream
from .._budget.local import GROUPS, LocalRateBudget
from .._budget.process import ProcessBudget
from .._budget.rules import BudgetStatistics, Priority, RateBudget
from .._upbit.limits import MAX_BOOK_LEVELS, MAX_CANDLES, MAX_TRADES
from .._upbit.params import MAX_SEQUENTIAL_ID
from .._upbit.rest import (
    decode_candles,
    decode_instruments,
    decode_markets,
    decode_orderbooks,
    decode_tickers,
    decode_trades,
)
from ..errors import InvalidRequestError
from ..records import Candle, Instrument, MarketInfo, Orderbook, Ticker, Trade
from .args import (
    MARKETS_PER_REQUEST,
    check_range,
    check_time_of_day,
    level_text,
    market_chunks,
    unique,
)
from .chain import Params, RequestChain
from .circuit import BreakerStatistics, CircuitBreaker
from .connections import Transports
from .flight import Flights, fetch_concurrently
from .latency import LatencyTimeout
from .retry import DEFAULT_RETRY, RetryPolicy
from .upstream_clock import UpstreamClock

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIMEOUT_FLOOR",
    "MARKETS_PER_REQUEST",
    "Client",
    "ClientStatistics",
]

DEFAULT_BASE_URL = "https://api.upbit.com"
DEFAULT_TIMEOUT = 10.0
# A hung request is given up after 10 x the recent p99 round trip, but never sooner than
# this: at 30 ms latency a hang then costs ~1.5 s plus a short backoff, not 10 s.
DEFAULT_TIMEOUT_FLOOR = 1.5


R = TypeVar("R")


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
    timed_out: int  # attempts given up on (hung or too slow)
    timeout_s: float  # what the next attempt may take
    # HTTP/2 connections left for a new one after a request on them was given up on.
    connections_retired: int = 0


class Client:
    """An Upbit quotation REST client. Methods return typed records in Upbit's order and
    raise errors from ``marketspine.errors``; they never return None or skip a page.

    ``transport`` is the test seam (``httpx.ASGITransport(app=...)``), or a function making
    a transport for each connection pool (one is replaced after a request given up on over
    HTTP/2; see ``_client/connections.py``); ``budget`` may be
    shared between clients (default: the process's for this upstream, ``ProcessBudget``,
    shared by every Client and Spine without one; a new one on an injected ``clock``/``sleep``);
    ``timeout`` bounds each attempt in seconds; once replies have been seen, an attempt
    waits ten times their recent p99, at least ``timeout_floor`` (so a hung request costs
    about that, not ``timeout``), and before that 3 s, doubled after each attempt given up
    on (see ``_client/latency.py``); ``breaker`` guards this upstream;
    ``clock``/``sleep``/``rng`` make time and jitter injectable; ``wall_ms`` is the local
    wall clock behind ``upstream_now_ms``.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: Transports = None,
        budget: RateBudget | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        timeout_floor: float = DEFAULT_TIMEOUT_FLOOR,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        wall_ms: Callable[[], int] = wall_now_ms,
    ) -> None:
        if timeout <= 0:
            raise InvalidRequestError(f"timeout must be > 0 s, got {timeout}")
        check_upstream(base_url, "base_url")  # before any request and its retries
        self._base_url = base_url.rstrip("/")
        self._timeouts = LatencyTimeout(ceiling=timeout, floor=min(timeout_floor, timeout))
        if budget is None and clock is time.monotonic and sleep is asyncio.sleep:
            budget = ProcessBudget(self._base_url)  # Upbit limits the IP: one per process
        self._budget: RateBudget = budget or LocalRateBudget(clock=clock, sleep=sleep)
        self._breaker = breaker or CircuitBreaker(name=self._base_url, clock=clock)
        self._flights = Flights()
        self._upstream_clock = UpstreamClock(wall_ms)
        self._chain = RequestChain(
            self._base_url,
            transport=transport,
            timeout=timeout,
            timeouts=self._timeouts,
            retry=retry,
            budget=self._budget,
            breaker=self._breaker,
            upstream_clock=self._upstream_clock,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._chain.open()
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
        await self._chain.aclose()

    # -- quotation endpoints -----------------------------------------------------------------

    async def candles(
        self,
        market: str,
        timeframe: Timeframe | str,
        *,
        count: int = MAX_CANDLES,
        to_ms: Moment | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Candle]:
        """Up to ``count`` (1..200) existing candles starting before ``to_ms`` (exclusive;
        epoch ms or any time ``Spine.candles`` takes; default now), newest first; without
        ``to_ms`` the first is the forming candle.
        Windows without trades have no candle, so the result may span more windows.

        Raises InvalidRequestError for bad arguments, UnknownMarketError for unlisted
        markets, RetryLaterError subclasses when upstream stays unavailable.
        """
        tf, code = timeframe_arg(timeframe), market_code(market)
        check_range("count", count, 1, MAX_CANDLES)
        to_ms = ms_arg(to_ms, "to_ms")
        params: list[tuple[str, str]] = [("market", code), ("count", str(count))]
        if to_ms is not None:
            # Candles start on whole seconds: "start < to_ms" is "start < to_ms rounded up".
            params.append(("to", format_utc(-(-to_ms // 1000) * 1000) + "Z"))
        body = await self._get(tf.rest_path, tuple(params), priority)
        candles = decode_candles(body, tf)
        self._upstream_clock.saw_ticks(c.last_trade_ms for c in candles)
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
        code = market_code(market)
        check_range("count", count, 1, MAX_TRADES)
        params: list[tuple[str, str]] = [("market", code), ("count", str(count))]
        if cursor is not None:
            check_range("cursor", cursor, 0, MAX_SEQUENTIAL_ID)  # a sequential_id or nothing
            params.append(("cursor", str(cursor)))
        if to is not None:
            params.append(("to", check_time_of_day(to)))
        if days_ago is not None:
            check_range("days_ago", days_ago, 1, 7)
            params.append(("days_ago", str(days_ago)))
        trades = decode_trades(await self._get("/v1/trades/ticks", tuple(params), priority))
        self._upstream_clock.saw_ticks(t.ms for t in trades)
        return trades

    async def tickers(
        self, markets: Sequence[str], *, priority: Priority = Priority.NORMAL
    ) -> list[Ticker]:
        """Tickers of ``markets`` (long lists are split into several requests).

        Raises UnknownMarketError if any market is not listed, InvalidRequestError,
        RetryLaterError subclasses.
        """
        tickers = await self._per_market_chunks("/v1/ticker", markets, (), priority, decode_tickers)
        self._upstream_clock.saw_ticks(t.ms for t in tickers)
        return tickers

    async def tickers_by_quote(
        self, quotes: Sequence[str], *, priority: Priority = Priority.NORMAL
    ) -> list[Ticker]:
        """Tickers of every market quoted in ``quotes`` (``KRW``, ``BTC``, ``USDT``...).

        Raises UnknownMarketError for unknown quotes, RetryLaterError subclasses.
        """
        wanted = unique(q.strip().upper() for q in quotes)
        if not wanted:
            return []
        params = (("quote_currencies", ",".join(wanted)),)
        tickers = decode_tickers(await self._get("/v1/ticker/all", params, priority))
        self._upstream_clock.saw_ticks(t.ms for t in tickers)
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
        check_range("count", count, 1, MAX_BOOK_LEVELS)
        extra: list[tuple[str, str]] = [("count", str(count))]
        if level is not None:
            if not math.isfinite(level) or level < 0:
                raise InvalidRequestError(f"invalid orderbook level {level!r}: expected >= 0")
            extra.append(("level", level_text(level)))
        books = await self._per_market_chunks(
            "/v1/orderbook", markets, tuple(extra), priority, decode_orderbooks
        )
        self._upstream_clock.saw_ticks(b.ms for b in books)
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
        return self._upstream_clock.now_ms()

    async def synced_now_ms(
        self, market: str, *, until_ms: int | None = None, priority: Priority = Priority.NORMAL
    ) -> int:
        """Upstream's clock, first asked of upstream (one ticker request for ``market``)
        unless a reply has told it already: a local clock running ahead would otherwise take
        the forming candle for closed and store it. A range ending (``until_ms``) over an
        hour before the local clock cannot reach the forming candle, so it asks nothing.
        Raises as ``tickers`` does."""
        ask = partial(self.tickers, [market], priority=priority)
        return await self._upstream_clock.synced(ask, until_ms)

    def statistics(self) -> ClientStatistics:
        """A snapshot of the client's counters, breaker and budget."""
        chain = self._chain
        return ClientStatistics(
            sent={group: chain.sent[group] for group in GROUPS},
            retries=chain.retries,
            rate_limited=chain.rate_limited,
            banned=chain.banned,
            coalesced=self._flights.coalesced,
            failed=chain.failed,
            breaker=self._breaker.statistics(),
            budget=self._budget.statistics(),
            timed_out=chain.timed_out,
            timeout_s=self._timeouts.seconds,
            connections_retired=chain.connections_retired,
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
        async def fetch(chunk: list[MarketCode]) -> list[R]:
            params = (("markets", ",".join(chunk)), *extra)
            return decode(await self._get(path, params, priority))

        return await fetch_concurrently(market_chunks(markets), fetch)

    async def _get(self, path: str, params: Params, priority: Priority) -> bytes:
        """The body of a successful GET, shared with identical GETs already in flight."""
        priority = enum_arg(priority, Priority, "priority")  # every method's one funnel
        return await self._flights.share(
            (path, params), priority, lambda flight: self._chain.fetch(path, params, flight)
        )
