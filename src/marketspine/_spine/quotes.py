"""The quotes reader: tickers, orderbooks and recent trades, live or from REST.

Beside ``CandleReader``: answers come from the WebSocket-fed live state while markets are
watched and the stream proves them current (however quiet the market: Upbit sends nothing
when nothing changes), otherwise from REST, cached for the freshness bound the caller sets.
A REST answer for a watched market becomes live state: every change after it arrives over
the stream. When REST is failing, AUTO falls back to the stream's last answer, flagged stale.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, TypeVar

from .._base.args import (
    count_arg,
    enum_arg,
    market_arg,
    markets_arg,
    optional_seconds_arg,
    quote_arg,
)
from .._budget.rules import Priority
from .._client.client import Client
from .._live.state import LiveState
from ..errors import InvalidRequestError, RetryLaterError, UnknownMarketError, UpstreamError
from ..records import Orderbook, Ticker, Trade
from .result import Trace

__all__ = ["Channel", "QuoteReader"]

_Quote = TypeVar("_Quote", Ticker, Orderbook)
_T = TypeVar("_T")
# Old REST answers are worthless anyway: past this many, the oldest half is dropped.
_REST_CACHE_SIZE = 4096
# Seconds AUTO waits for REST while it holds the stream's last answer of every market asked
# (older than asked for): then that answer, flagged stale.
_REST_WAIT_WHILE_HELD_S = 2.0
# Seconds WEBSOCKET_ONLY waits for the stream's first answer of a market.
_LIVE_WAIT_S = 10.0


class Channel(enum.Enum):
    """Where live answers may come from. AUTO prefers the WebSocket-fed state and falls back
    to REST (and the other way round when REST is failing)."""

    AUTO = "auto"
    REST_ONLY = "rest"
    WEBSOCKET_ONLY = "websocket"


class QuoteReader:
    """Tickers, orderbooks and trades from ``live`` or ``client``. ``watch(kinds, markets)``
    subscribes the stream (WEBSOCKET_ONLY asks for it); ``watched`` holds the (kind, market)
    pairs the stream keeps live."""

    def __init__(
        self,
        client: Callable[[], Client],
        live: LiveState,
        *,
        watch: Callable[[list[str], list[str]], Awaitable[None]],
        watched: set[tuple[str, str]],
        default_max_age_s: float,
    ) -> None:
        self._client_of = client  # raises ClosedError while the owner is not open
        self._default_max_age_s = default_max_age_s
        self._live = live
        self._watch = watch
        self._watched = watched
        self._rest_cache: dict[tuple[str, str], tuple[Any, float]] = {}

    def _args(
        self, channel: object, priority: object, max_age_s: object
    ) -> tuple[Client, Channel, Priority, float]:
        """The client and the checked channel, priority and freshness bound of a request;
        raises ClosedError (after the arguments are checked) while the owner is not open."""
        checked = enum_arg(channel, Channel, "channel"), enum_arg(priority, Priority, "priority")
        age = optional_seconds_arg(max_age_s, "max_age_s")
        client = self._client_of()
        return client, *checked, self._default_max_age_s if age is None else age

    async def tickers(
        self,
        markets: Iterable[str] | None,
        quote: str | None,
        channel: object,
        max_age_s: object,
        priority: object,
        trace: Trace,
    ) -> list[Ticker]:
        """Tickers of ``markets`` in the order asked, or of every market quoted in ``quote``.

        Raises InvalidRequestError for bad arguments (ClosedError after them), as REST does."""
        if markets is None and quote is None:
            raise InvalidRequestError(
                "give markets (a code such as KRW-BTC, or a list of them) or quote (every "
                "market quoted in it, such as KRW)"
            )
        quote = None if quote is None else quote_arg(quote)
        codes = None if markets is None else markets_arg(markets)
        client, channel, priority, max_age_s = self._args(channel, priority, max_age_s)
        if quote is not None:
            if codes is not None:
                raise InvalidRequestError("give markets or quote, not both")
            code = quote.upper()
            result = await self._rest_cached(
                ("tickers_by_quote", code),
                max_age_s,
                lambda: client.tickers_by_quote([code], priority=priority),
                trace,
            )
            return list(result)
        return await self._live_or_rest(
            "ticker",
            codes or [],
            channel,
            max_age_s,
            self._live.live_ticker,
            lambda missing: client.tickers(missing, priority=priority),
            trace,
        )

    async def orderbooks(
        self,
        markets: Iterable[str],
        channel: object,
        max_age_s: object,
        priority: object,
        trace: Trace,
    ) -> list[Orderbook]:
        """Orderbooks of ``markets`` in the order asked (arguments checked as for tickers)."""
        codes = markets_arg(markets)
        client, channel, priority, max_age_s = self._args(channel, priority, max_age_s)
        return await self._live_or_rest(
            "orderbook",
            codes,
            channel,
            max_age_s,
            self._live.live_orderbook,
            lambda missing: client.orderbooks(missing, priority=priority),
            trace,
        )

    async def trades(self, market: str, count: int, priority: object, trace: Trace) -> list[Trade]:
        """The ``count`` most recent trades, newest first: from the live state when it holds
        that many, else REST (Upbit serves up to 500 per call; more are paged by cursor).

        Raises InvalidRequestError for a bad market or count."""
        code, count = market_arg(market), count_arg(count, "count", 1, 10_000)
        priority = enum_arg(priority, Priority, "priority")
        client = self._client_of()
        if ("trade", code) in self._watched and self._live.trade_count(code) >= count:
            trace.used("live")
            return self._live.trades(code, count)
        rows: list[Trade] = []
        cursor: int | None = None
        while len(rows) < count:
            page = await client.trades(
                code, count=min(500, count - len(rows)), cursor=cursor, priority=priority
            )
            trace.calls += 1
            trace.used("rest")
            rows.extend(page)
            if len(page) < min(500, count - len(rows) + len(page)):
                break
            cursor = page[-1].seq
        return rows

    async def _live_or_rest(
        self,
        kind: str,
        codes: list[str],
        channel: Channel,
        max_age_s: float,
        read_live: Callable[[str, float | None], _Quote | None],
        fetch: Callable[[list[str]], Awaitable[list[_Quote]]],
        trace: Trace,
    ) -> list[_Quote]:
        """One ``kind`` answer per code: fresh live state first (unless REST_ONLY), the
        stream alone for WEBSOCKET_ONLY, else REST; AUTO falls back to the stream's last
        answer, however old, when REST is failing (the result is then flagged stale)."""
        if not codes:
            raise InvalidRequestError("no market given: name at least one, such as KRW-BTC")
        answers: dict[str, _Quote] = {}
        if channel is not Channel.REST_ONLY:
            for code in codes:
                live = read_live(code, max_age_s)
                if live is not None:
                    answers[code] = live
            if answers:
                trace.used("live")
        missing = [c for c in codes if c not in answers]
        epoch = self._live.epoch()  # before asking REST: see LiveState.seed
        if missing and channel is Channel.WEBSOCKET_ONLY:
            await self._watch([kind], missing)
            for code in missing:
                answers[code] = await self._wait_live(partial(read_live, code, None), code)
            trace.used("live")
            missing = []
        if missing:
            calls = trace.calls
            held = [read_live(c, None) for c in missing]
            fallback = channel is Channel.AUTO and all(h is not None for h in held)
            # Holding an older answer for each, REST gets a short while: upstream failing
            # (retried with backoff) must not keep the caller from what is held.
            patience = _REST_WAIT_WHILE_HELD_S if fallback else None
            try:
                async with asyncio.timeout(patience):
                    fetched = await self._rest_cached(
                        (kind, ",".join(missing)), max_age_s, lambda: fetch(missing), trace
                    )
            except (RetryLaterError, TimeoutError):
                if not fallback:
                    raise
                fetched = [h for h in held if h is not None]
                trace.used("stale")
                trace.stale = True
            else:
                # Only what was asked just now: a cached answer may predate the epoch.
                watched = [item for item in fetched if (kind, item.market) in self._watched]
                if watched and trace.calls > calls:
                    self._live.seed(kind, watched, epoch)
            answers.update((item.market, item) for item in fetched)
        unknown = [c for c in codes if c not in answers]
        if unknown:
            raise UnknownMarketError(unknown[0])
        return [answers[c] for c in codes]

    async def _rest_cached(
        self, key: tuple[str, str], max_age_s: float, fetch: Any, trace: Trace
    ) -> Any:
        held = self._rest_cache.get(key)
        if held is not None and time.monotonic() - held[1] <= max_age_s:
            trace.used("memory")
            return held[0]
        value = await fetch()
        trace.calls += 1
        trace.used("rest")
        self._rest_cache[key] = (value, time.monotonic())
        if len(self._rest_cache) > _REST_CACHE_SIZE:
            oldest = sorted(self._rest_cache, key=lambda k: self._rest_cache[k][1])
            for stale in oldest[: _REST_CACHE_SIZE // 2]:
                del self._rest_cache[stale]
        return value

    async def _wait_live(self, read: Callable[[], _T | None], market: str) -> _T:
        """What ``read`` returns once the live state has it; raises UpstreamError when the
        stream brings nothing within ``_LIVE_WAIT_S``."""
        try:
            async with asyncio.timeout(_LIVE_WAIT_S):
                return await self._live.wait_for(read)
        except TimeoutError:
            raise UpstreamError(
                f"no live data for {market} within {_LIVE_WAIT_S:g} s", retry_after=None
            ) from None
