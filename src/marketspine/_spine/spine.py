"""``Spine``: the one entry point every client asks.

A request for candles is answered from the bounded memory windows, then the store (stored
candles, or candles derived from stored 1m), then upstream for exactly the missing pages,
merged. Tickers, orderbooks and recent trades come from the WebSocket-fed live state while
markets are watched, otherwise from REST with a freshness bound the caller sets.

``Spine`` owns its client, store, stream and background tasks; use it as ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any, Self

from .._base.args import (
    Moment,
    count_arg,
    depth_arg,
    enum_arg,
    flag_arg,
    kinds_arg,
    market_arg,
    markets_arg,
    needs_arg,
    number_arg,
    since_arg,
    time_arg,
    timeframe_arg,
)
from .._base.markets import market_code
from .._base.memory import DEFAULT_MEMORY_MB, CandleMemory, MemoryBudget
from .._base.time import format_utc, now_ms
from .._base.timeframes import Timeframe
from .._base.urls import check_upstream
from .._budget.process import ProcessBudget
from .._budget.rules import Priority, RateBudget
from .._client.client import Client
from .._client.connections import Transports
from .._client.retry import RetryPolicy
from .._live.candle_feed import ClosedCandle
from .._live.closes import CloseProof
from .._live.feed import LiveFeed, LiveStream, ws_url_for
from .._live.listener import Event
from .._live.state import LiveState
from .._live.stream import StreamStatistics
from .._live.subscriptions import BOOK_DEPTHS
from .._store.default_path import DEFAULT_UPSTREAM, default_db_path
from .._store.holding import HoldingStore
from .._store.recording_store import recording_for
from .._store.sqlite import CandleStore
from .._upbit.texts import NOT_FOUND
from .._upbit.unknown import unknown_markets_text, unknown_quote_text
from ..errors import InvalidRequestError, MarketspineError, UnknownMarketError, UpstreamError
from ..records import Candle, MarketInfo, Orderbook, Ticker, Trade
from .accounting import Accounting, SpineStatistics
from .answers import with_meta
from .backends import resolve_backends
from .candles import MAX_COUNT, CandleReader
from .hot import HotWindows
from .lifetime import Lifetime
from .market_list import MarketList
from .notify import (
    NotifyHandler,
    attach_notify,
    check_notify_urls,
    detach_notify,
    split_notify_urls,
)
from .quotes import Channel, QuoteReader
from .replay import ReplayEvent
from .result import Answer, CandleResult, ListResult, ResultMeta, Trace
from .trade_range import read_trade_range
from .usage import PolledSeries, PollLearner

__all__ = ["DEFAULT_UPSTREAM", "Spine", "default_db_path"]


class Spine:
    """Market data for bots, charts, screeners and backtests, from the cheapest layer that has
    it. ``upstream``: Upbit's REST base URL (or a simulator's); ``db``: SQLite file (default
    ``default_db_path()``) or ``postgresql://`` URL; ``redis``: a Redis URL whose rate budget,
    page fetches and catalog are shared (keys under ``redis_prefix``); ``budget``: the rate
    budget (default: with ``redis``, Redis's; else the one every Spine and Client of this
    program without one shares for ``upstream``, ``ProcessBudget``); ``transport``: httpx
    transport (tests), or a function making one per connection pool (as ``Client``);
    ``ws_url``: WebSocket URL (default from ``upstream``); ``wall_ms``:
    local UTC clock (ms); ``memory_mb``: the one memory budget (MiB) of candle windows and
    live state, least recently used market evicted first; ``notify``: apprise URLs (e.g.
    ``tgram://BOTTOKEN/CHATID``) alerted while open (bans, circuit, failed warmups). Use it as
    ``async with Spine(...) as spine``. Before that and after ``aclose()`` every data method
    (and ``client``/``store``) raises ``ClosedError``; ``statistics``, ``tick_size``,
    ``clear_memory`` and ``aclose`` keep working; a closed Spine cannot be reopened. A wrong
    argument type or value raises InvalidRequestError naming it and what is accepted."""

    def __init__(
        self,
        upstream: str = DEFAULT_UPSTREAM,
        db: str | Path | CandleStore | None = None,
        *,
        transport: Transports = None,
        ws_url: str | None = None,
        budget: RateBudget | None = None,
        redis: str | None = None,
        redis_prefix: str | None = None,
        memory: CandleMemory | None = None,
        memory_mb: float = DEFAULT_MEMORY_MB,
        ticker_max_age_s: float = 1.0,
        exchanges: Mapping[str, str] | None = None,
        warmup_every_s: float = 6 * 3600,
        wall_ms: Callable[[], int] = now_ms,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # the warmup schedule's
        notify: Sequence[str] = (),
    ) -> None:
        check_upstream(upstream)  # before anything is made from the other arguments
        # Alerts (bans, circuit, failed warmups, ...) to these apprise URLs while open.
        self._notify_urls = split_notify_urls([notify] if isinstance(notify, str) else notify)
        check_notify_urls(self._notify_urls)
        self._notifier: NotifyHandler | None = None
        db, budget, shared = resolve_backends(  # from URLs
            db, budget, redis, redis_prefix, upstream=upstream
        )
        self._upstream = upstream.rstrip("/")
        self._shared = shared  # Redis's shared budget, page leases and catalog
        # The one client, made on entering; the same settings every time.
        new_client = partial(
            Client,
            self._upstream,
            transport=transport,
            # A Spine answers its callers at any moment: its LOW work (backfills, trade
            # fills, verify) keeps the budget's reserve for their urgent requests.
            budget=ProcessBudget(upstream, expect_urgent=True) if budget is None else budget,
            wall_ms=wall_ms,
            retry=retry or RetryPolicy(),
        )
        # What it holds while open: store, client, and the task group every background task
        # (live pump, catalog refresher, hot keeper) runs in.
        self._life = Lifetime(self._upstream, db, shared, new_client)
        # One byte budget over candle windows and live state (a given CandleMemory brings its own).
        self._memory = memory or CandleMemory(budget=MemoryBudget.megabytes(memory_mb))
        self._warmup_every_s = warmup_every_s
        self._live = LiveState(clock=time.monotonic, budget=self._memory.budget)
        self._reader: CandleReader | None = None
        self._holding: HoldingStore | None = None  # the reader's view of the store
        self._accounting = Accounting()
        self._market_list = MarketList(
            self._upstream,
            exchanges,  # configured ones are warmed up at start-up too
            budget=budget,
            on_call=self._accounting.call_made,
            transport=transport,
            every_s=warmup_every_s,
            sleep=sleep,
            shared=shared.catalog if shared else None,
        )
        self._feed = LiveFeed(  # with redis, one process holds the upstream socket for all
            ws_url or ws_url_for(self._upstream), self._live, start=self._life.start,
            redis=redis, redis_prefix=redis_prefix,
        )  # fmt: skip
        self._quotes = QuoteReader(
            lambda: self.client,
            self._live,
            watch=self.watch,
            watched=self._feed.watched,
            default_max_age_s=ticker_max_age_s,
        )
        # Series clients poll by count are learned and kept hot like preloaded ones.
        self._usage = PollLearner(time.monotonic)
        self._hot = HotWindows(
            lambda: self.client.upstream_now_ms(),
            self._read_hot,
            each_round=self._release_idle,
            close_live=self._close_live,
        )
        self._live.closes.on_late = self._late_trade

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._notify_urls and self._notifier is None:
            self._notifier = attach_notify(self._notify_urls)
        await self._life.open(self._prepare)
        if self._market_list.warm_at_start:
            self._life.start(
                "catalog refresher", self._market_list.refresh(self.client, first_now=True)
            )
        return self

    async def _prepare(self, db_path: Path | None, client: Client) -> None:
        """Take the catalogs kept beside the database and in Redis; count the client's calls."""
        if db_path is not None:
            await self._market_list.load(db_path)
        await self._market_list.load_shared()
        self._accounting.count_sent(client, lambda: self._market_list.other_calls)

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and background tasks, close the client and the store. From now
        on every data method raises ClosedError (idempotent)."""
        await self._life.aclose()
        if self._notifier is not None:
            notifier, self._notifier = self._notifier, None
            await asyncio.to_thread(detach_notify, notifier)  # sends what it folded

    @property
    def client(self) -> Client:
        """The upstream client. Raises ClosedError outside ``async with``."""
        return self._life.client

    @property
    def store(self) -> CandleStore:
        """The candle store. Raises ClosedError outside ``async with``."""
        return self._life.store

    # -- candles ---------------------------------------------------------------------------

    async def candles(
        self,
        market: str,
        timeframe: Timeframe | str,
        *,
        count: int | None = None,
        start: Moment | None = None,
        end: Moment | None = None,
        priority: Priority = Priority.NORMAL,
        closed_only: bool = False,
        fill: bool = False,
    ) -> CandleResult:
        """Candles of ``market``, ascending. Either ``count`` (the most recent existing
        candles, the forming one last unless ``closed_only``; with ``end``, the most recent
        starting before it, as Upbit's ``count`` + ``to``) or ``start``/``end`` (window
        starts in ``[start, end)``: a datetime (naive means UTC), a date (00:00 UTC), ISO
        8601 or epoch milliseconds; ``end`` defaults to now). With
        neither, the last 200. ``fill`` adds flat zero-volume candles for windows without
        trades. Closed candles are fetched upstream at most once, ever.

        When upstream is needed but cannot answer (a failure, an open circuit, a ban), what
        is held is answered with ``meta.stale``; with nothing held, its error is raised:
        never an empty answer that would say there are no candles.

        Raises InvalidRequestError for bad arguments, UnknownMarketError for unlisted
        markets, RetryLaterError subclasses when upstream is needed but failing and nothing
        is held, ClosedError outside ``async with``.
        """
        code, tf = market_arg(market), timeframe_arg(timeframe)
        count = None if count is None else count_arg(count, "count", 1, MAX_COUNT)
        start_ms, end_ms = time_arg(start, "start"), time_arg(end, "end")
        priority = enum_arg(priority, Priority, "priority")
        closed_only, fill = flag_arg(closed_only, "closed_only"), flag_arg(fill, "fill")
        self._life.check_open()
        polled = count is not None and start_ms is None and end_ms is None
        started, waited = time.perf_counter(), False
        if polled and priority is not Priority.CRITICAL:
            # A poll landing between a close and the keeper putting it in memory waits for
            # it rather than asking upstream for the same candle; urgent ones never wait.
            now = self.client.upstream_now_ms()
            waited = await self._hot.wait_for_close(code, tf, now)
        async with self._unknown_explained():
            result = await self._candle_reader().read(
                code, tf, count, start_ms, end_ms, priority, closed_only=closed_only, fill=fill
            )
        if waited:  # the answer took the wait too
            elapsed_ms = (time.perf_counter() - started) * 1000
            result.meta = dataclasses.replace(result.meta, elapsed_ms=elapsed_ms)
        if count is not None and polled:
            self._learn(code, tf, count, result.meta)
        return self._account("candles", result)

    @contextlib.asynccontextmanager
    async def _unknown_explained(self, *, quote: bool = False) -> AsyncIterator[None]:
        """An UnknownMarketError raised inside, explained (``_explained``)."""
        try:
            yield
        except UnknownMarketError as exc:
            raise await self._explained(exc, quote=quote) from exc

    async def _explained(self, exc: UnknownMarketError, *, quote: bool) -> UnknownMarketError:
        """``exc`` naming which codes (or quote currencies) asked are not listed and the
        listed code each likely meant, from the market list (held, or fetched now); ``exc``
        itself when the list cannot be had or lists them all."""
        try:
            listed = {info.market for info in await self.markets()}
        except MarketspineError:
            return exc
        asked = exc.market
        text = (
            unknown_quote_text(asked, listed)
            if quote
            else unknown_markets_text(asked.split(","), listed)
        )
        if text is None:
            return exc
        return UnknownMarketError(asked, f"{text} (Upbit answered 404 {NOT_FOUND})")

    def _learn(self, market: str, tf: Timeframe, count: int, meta: ResultMeta) -> None:
        """Note a poll; a series polled on a rhythm is kept hot from now on."""
        # From memory: no stored page read and no upstream call but the forming candle's.
        hit = "database" not in meta.sources and meta.upstream_calls <= int(meta.forming)
        if self._usage.note(market, tf.name, count, from_memory=hit):
            forming_ms = tf.floor(self.client.upstream_now_ms())
            self._hot.hold(market, tf, count, forming_ms, learned=True)
            self._live.follow_closes(market, tf)  # closes proven by the trade stream
            self._hot.changed()
            self._life.start("hot keeper", self._hot.keep())
        self._release_idle()

    def _release_idle(self) -> None:
        for series in self._usage.release():
            if self._hot.release(series.market, series.timeframe):
                self._live.closes.unfollow(series.market, series.timeframe)

    async def _close_live(self, market: str, tf: Timeframe, start_ms: int) -> bool:
        """Put the candle of ``market``'s ``tf`` window starting at ``start_ms`` into memory
        from the trade stream, once the stream proves the window closed with every trade
        seen (see ``_live.closes``); False when it cannot, and the keeper asks upstream.

        Memory only, never the store: the candle is built from trades, and upstream's own
        differs where trades cannot tell. Its ``timestamp`` is when upstream stored the
        last tick (a few ms after the trade's time) and its volume and value are summed
        exactly, where the trades' floats sum with rounding (the simulator's differ in the
        last digits). So a range read (``ClosedCandle``, ``start``/``end``) takes it as a
        miss and reads upstream's candle, which the store then keeps and which replaces it
        in memory; reads by count, the polls that keep the series hot, are answered with it.
        """
        key = (market, tf.key)
        covered = self._memory.covered(key)
        if covered is None or covered[1] != start_ms:
            return False  # the window would not continue what memory holds

        closes = self._live.closes

        def proven() -> tuple[CloseProof, Candle | None] | None:
            answer = closes.close(market, tf.name, start_ms)
            return None if answer[0] is CloseProof.PENDING else answer

        answer = proven()
        if answer is None:
            # No trade since the close yet (a quiet market may have none for minutes): ask
            # the stream whether everything upstream sent until now has been applied.
            epoch = self._live.epoch()
            if await self._feed.delivered(market) and self._live.epoch() == epoch:
                answer = closes.close(market, tf.name, start_ms, flushed=True)
            else:
                answer = await self._live.wait_for(proven)  # a later trade proves it too
        proof, candle = answer
        covered = self._memory.covered(key)
        if proof is not CloseProof.PROVEN or covered is None or covered[1] != start_ms:
            return False
        rows = [] if candle is None else [candle]
        self._memory.put(key, start_ms, tf.next_start(start_ms), rows, provisional=True)
        return True

    def _late_trade(self, market: str, timeframe: str, start_ms: int) -> None:
        """A trade arrived after a later one: a close taken from the stream may lack it."""
        self._memory.drop_provisional((market, timeframe_arg(timeframe).key), start_ms)

    def polled(self) -> list[PolledSeries]:
        """The candle series clients poll by count, as learned (``learned`` ones are kept
        hot: each close is fetched as it happens), most recently polled last."""
        return self._usage.series()

    def _candle_reader(self) -> CandleReader:
        if self._reader is None:
            leases = self._shared.leases if self._shared else None
            # Pages fetched while the disk is full are held and answered from, not refused;
            # written before the store closes when there is room by then.
            self._holding = HoldingStore(self.store)
            self._life.stack.push_async_callback(self._holding.aclose)
            self._reader = CandleReader(
                self.client, self._holding, self._memory, self._live, self.markets, leases
            )
        return self._reader

    def clear_memory(self) -> None:
        """Forget every memory window (the store keeps everything; the next read is cold)."""
        self._memory.clear()

    # -- preloading --------------------------------------------------------------------------

    async def preload(
        self,
        needs: Mapping[str, Mapping[str, int]],
        *,
        live: bool = False,
        priority: Priority = Priority.HIGH,
    ) -> dict[str, dict[str, int]]:
        """Fetch what ``needs`` declares ({market: {timeframe: closed candles}}, a strategy's
        indicator periods) in one budgeted pass and keep those windows hot: each is refreshed
        as its candle closes, so later ``candles(..., count=n)`` calls are memory hits.
        With ``live`` the forming candles are kept current from the trade stream too.
        Returns {market: {timeframe: candles now held}}.

        Raises InvalidRequestError for a bad market, timeframe or count, UnknownMarketError.
        """
        wanted = [
            (code, tf, count)
            for code, frames in needs_arg(needs, MAX_COUNT).items()
            for tf, count in frames.items()
        ]
        live, priority = flag_arg(live, "live"), enum_arg(priority, Priority, "priority")
        self._life.check_open()
        if not wanted:
            return {}
        # Upstream's clock, not the local one, says which candle is forming now.
        now = await self.client.synced_now_ms(wanted[0][0], priority=priority)
        held = await self._hot.preload(wanted, now, priority)
        for code, tf, _ in wanted:
            self._live.follow_closes(code, tf)
        for code, tf, _ in wanted if live else ():
            await self.watch([f"candle.{tf.name}"], [code])
        self._life.start("hot keeper", self._hot.keep())
        return held

    async def _read_hot(self, market: str, tf: Timeframe, n: int, prio: Priority) -> CandleResult:
        # Not through ``candles``: the keeper's own reads are not polls to learn from.
        self._life.check_open()
        result = await self._candle_reader().read(
            market_code(market), tf, n, None, None, prio, closed_only=True, fill=False
        )
        return self._account("candles", result)

    # -- tickers, orderbooks, trades --------------------------------------------------------

    async def ticker(
        self,
        market: str,
        *,
        channel: Channel = Channel.AUTO,
        max_age_s: float | None = None,
        priority: Priority = Priority.HIGH,
    ) -> Ticker:
        """The current ticker: from the live state while ``market`` is watched (and fresh
        within ``max_age_s``), else from REST (cached for ``max_age_s``); a ``Ticker``
        carrying ``.meta``."""
        answer = await self.tickers(
            [market_arg(market)], channel=channel, max_age_s=max_age_s, priority=priority
        )
        return with_meta(answer[0], answer.meta)

    async def tickers(
        self,
        markets: Iterable[str] | None = None,
        *,
        quote: str | None = None,
        channel: Channel = Channel.AUTO,
        max_age_s: float | None = None,
        priority: Priority = Priority.HIGH,
    ) -> ListResult[Ticker]:
        """Tickers of ``markets`` in the order asked, or of every market quoted in ``quote``
        (e.g. ``"KRW"``) — one REST call for a whole quote market."""
        started, trace = time.perf_counter(), Trace()
        async with self._unknown_explained(quote=quote is not None):
            tickers = await self._quotes.tickers(
                markets, quote, channel, max_age_s, priority, trace
            )
        return self._account("tickers", ListResult(tickers, trace.meta(started, priority=priority)))

    async def orderbook(
        self,
        market: str,
        *,
        channel: Channel = Channel.AUTO,
        max_age_s: float | None = None,
        priority: Priority = Priority.HIGH,
    ) -> Orderbook:
        """The current orderbook (full book), live while watched, else REST; an
        ``Orderbook`` carrying ``.meta``."""
        answer = await self.orderbooks(
            [market_arg(market)], channel=channel, max_age_s=max_age_s, priority=priority
        )
        return with_meta(answer[0], answer.meta)

    async def orderbooks(
        self,
        markets: Iterable[str],
        *,
        channel: Channel = Channel.AUTO,
        max_age_s: float | None = None,
        priority: Priority = Priority.HIGH,
    ) -> ListResult[Orderbook]:
        """Orderbooks (full books) of ``markets`` in the order asked, live while watched,
        else REST (cached for ``max_age_s``)."""
        started, trace = time.perf_counter(), Trace()
        async with self._unknown_explained():
            rows = await self._quotes.orderbooks(markets, channel, max_age_s, priority, trace)
        return self._account("orderbooks", ListResult(rows, trace.meta(started, priority=priority)))

    async def trades(
        self,
        market: str,
        count: int = 100,
        *,
        start: Moment | None = None,
        end: Moment | None = None,
        priority: Priority = Priority.HIGH,
    ) -> ListResult[Trade]:
        """The ``count`` most recent trades, newest first: from the live state when it holds
        that many, else REST (Upbit serves up to 500 per call; more are paged by cursor).
        With ``start`` (and ``end``, default now): every trade at ``[start, end)``, ascending
        by sequential_id, gapless: recorded ones from the store (``marketspine record``),
        the rest from REST as far as it serves (seven days); ``meta.gaps`` names the known
        gaps left, ``meta.unserved_before_ms`` where unrecorded history REST cannot give
        begins."""
        started, trace = time.perf_counter(), Trace()
        if start is None and end is None:
            async with self._unknown_explained():
                rows = await self._quotes.trades(market, count, priority, trace)
            return self._account("trades", ListResult(rows, trace.meta(started, priority=priority)))
        code = market_arg(market)
        start_ms, end_ms = time_arg(start, "start"), time_arg(end, "end")
        priority = enum_arg(priority, Priority, "priority")
        self._life.check_open()
        if start_ms is None:
            raise InvalidRequestError("end needs a start: trades(market, start=..., end=...)")
        if end_ms is not None and end_ms <= start_ms:
            raise InvalidRequestError(
                f"start ({format_utc(start_ms)}Z) must be before end ({format_utc(end_ms)}Z)"
            )
        now = await self.client.synced_now_ms(code, priority=priority)
        end_ms = now + 1 if end_ms is None else end_ms
        found = await read_trade_range(
            self.client, recording_for(self.store), code, start_ms, end_ms, now, priority, trace
        )
        trace.gaps = found.gaps
        trace.unserved_before_ms = found.unserved_before_ms
        result = ListResult(found.trades, trace.meta(started, priority=priority))
        return self._account("trades", result)

    async def orderbooks_at(self, market: str, time: Moment) -> Orderbook | None:
        """The recorded book of ``market`` (``marketspine record``) at ``time`` or the last
        one before it, an ``Orderbook`` carrying ``.meta``; None when none that old is
        recorded. Upbit serves no past books: only a recording has them.

        Raises InvalidRequestError for a bad market or time; ClosedError outside
        ``async with``."""
        started, trace = perf_counter(), Trace()
        code, at_ms = market_arg(market), time_arg(time, "time")
        if at_ms is None:
            raise InvalidRequestError("time is required: orderbooks_at(market, time)")
        self._life.check_open()
        book = await recording_for(self.store).orderbook_at(code, at_ms)
        trace.used("database")
        meta = trace.meta(started)
        self._accounting.account("orderbooks_at", meta)
        return None if book is None else with_meta(book, meta)

    async def orderbooks_history(
        self, market: str, *, start: Moment, end: Moment | None = None
    ) -> ListResult[Orderbook]:
        """Every recorded book of ``market`` at ``[start, end)`` (``end``: now), ascending
        by time, with ``meta``. A long span of books is large (at the default one a second,
        86,400 a day and market): ``replay`` or ``export --kind orderbooks`` stream them.

        Raises InvalidRequestError for a bad market or time, no ``start`` or ``start`` not
        before ``end``; ClosedError outside ``async with``."""
        started, trace = perf_counter(), Trace()
        code = market_arg(market)
        start_ms, end_ms = time_arg(start, "start"), time_arg(end, "end")
        if start_ms is None:
            raise InvalidRequestError("start is required: orderbooks_history(market, start=...)")
        if end_ms is not None and end_ms <= start_ms:
            raise InvalidRequestError(
                f"start ({format_utc(start_ms)}Z) must be before end ({format_utc(end_ms)}Z)"
            )
        self._life.check_open()
        end_ms = now_ms() + 1 if end_ms is None else end_ms
        books = await recording_for(self.store).orderbooks(code, start_ms, end_ms)
        trace.used("database")
        return self._account("orderbooks_history", ListResult(books, trace.meta(started)))

    # -- live stream ------------------------------------------------------------------------

    async def watch(
        self, kinds: Iterable[str], markets: Iterable[str], *, depth: int | None = None
    ) -> None:
        """Keep ``kinds`` of ``markets`` live: ``ticker``, ``trade``, ``orderbook``, and
        ``candle.<timeframe>`` (any timeframe, e.g. ``candle.5m`` or ``candle.1d``): its
        forming candle is then built from the trade stream on top of upstream's forming
        candle, so it stays exact (the stream fills trade gaps after reconnects).
        ``depth`` (1, 5, 15 or 30) streams shallower orderbooks; live answers then hold
        that many levels.

        Raises InvalidRequestError for an unknown kind, market or depth; ClosedError
        outside ``async with``."""
        kinds, codes = kinds_arg(kinds), markets_arg(markets)
        depth = depth_arg(depth, kinds, BOOK_DEPTHS)
        self._life.check_open()
        await self._feed.watch(await self._ensure_stream(), kinds, codes, depth, self._seed)

    async def _seed(self, market: str, tf: Timeframe) -> Candle | None:
        """Upstream's forming ``tf`` candle of ``market``, judged on upstream's clock."""
        now = await self.client.synced_now_ms(market, priority=Priority.HIGH)
        return await self._candle_reader().forming(market, tf, now, Priority.HIGH, Trace())

    async def unwatch(self, kinds: Iterable[str], markets: Iterable[str]) -> None:
        """Stop keeping ``kinds`` of ``markets`` live (undoes ``watch``; trades stay streamed
        while a forming candle is built from them). Raises InvalidRequestError for an unknown
        kind or market; ClosedError outside ``async with``."""
        kinds, codes = kinds_arg(kinds), markets_arg(markets)
        self._life.check_open()
        await self._feed.unwatch(kinds, codes)

    async def stream(
        self, types: Iterable[str], markets: Iterable[str], *, maxsize: int = 1000,
        since: Mapping[str, Trade | int] | None = None,
    ) -> AsyncIterator[Event | ClosedCandle]:  # fmt: skip
        """Typed events (Ticker, Trade, Orderbook; Gap/Health/Overflow) of ``types`` of
        ``markets`` (a plain string is one item). A candle kind (``candle.<timeframe>``, any
        timeframe) yields the forming ``Candle`` as trades change it and a ``ClosedCandle``
        (equal to the REST candle, stored too) once its window closed on upstream's clock.
        ``since`` ({market: the last Trade you have, or its sequential_id}) starts its trades
        right after it, missing ones read from REST first (a ``Gap`` when not all could be).

        Raises InvalidRequestError before connecting; ClosedError outside ``async with``
        and once the Spine closes while iterating."""
        kinds, codes = kinds_arg(types, "types"), markets_arg(markets)
        maxsize, marks = count_arg(maxsize, "maxsize", 1, 10_000_000), since_arg(since, codes)
        self._life.check_open()
        reader = self._candle_reader()
        async for item in self._feed.events(
            await self._ensure_stream(),
            kinds,
            codes,
            maxsize,
            watch=self.watch,
            upstream_now_ms=self.client.upstream_now_ms,
            forming=lambda code, tf, now: reader.forming(code, tf, now, Priority.HIGH, Trace()),
            read_closed=self._read_closed,
            stopped=lambda: self._life.closed,  # nothing queued before aclose() comes after it
            since=marks,
        ):
            yield item
        self._life.check_open()  # the listener ends only when the stream (the Spine) closes

    async def replay(
        self,
        kinds: Iterable[str],
        markets: Iterable[str],
        *,
        start: Moment,
        end: Moment | None = None,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> AsyncIterator[ReplayEvent]:
        """The recording (``marketspine record``) of ``kinds`` of ``markets`` at ``[start,
        end)`` (``end``: the end of the recording) played back as ``stream`` yields it live
        (Trade, Orderbook, Ticker; forming Candle and ClosedCandle for ``candle.<timeframe>``,
        built from the recorded trades; a ``Gap`` with ``complete=False`` before the first
        trade after a known gap), in exchange time order across markets. ``speed``: 1 (the
        default) is real time, 10 ten times faster, 0 as fast as it is taken; ``clock``
        (monotonic seconds) and ``sleep`` pace it.

        Raises InvalidRequestError for an unknown kind, a market the recording does not
        hold, ``start`` not before ``end``, a range with nothing recorded of them or a bad
        speed; ClosedError outside ``async with``."""
        from .replay import Replay, check_replay

        self._life.check_open()
        recording = recording_for(self.store)
        plan = await check_replay(recording, kinds, markets, start, end, speed)
        async for event in Replay(recording, plan, clock=clock, sleep=sleep).events():
            yield event

    async def _read_closed(self, market: str, tf: Timeframe, lo: int, hi: int) -> list[Candle]:
        """The closed candles of ``market`` starting in ``[lo, hi)``, stored on the way."""
        result = await self.candles(market, tf, start=lo, end=hi, priority=Priority.HIGH)
        if result.meta.stale:  # served from the store while upstream is down: maybe partial
            raise UpstreamError(f"closed {market} candles not final yet")
        return list(result)

    async def _ensure_stream(self) -> LiveStream:
        return await self._feed.stream(self.client, self._life.stack)

    # -- markets ------------------------------------------------------------------------------

    async def markets(
        self, *, refresh: bool = False, include_delisted: bool = False
    ) -> ListResult[MarketInfo]:
        """Every listed market with its warning flags (fetched once, then cached). With
        ``include_delisted``, also every market the store holds candles of that upstream
        no longer lists (``delisted=True``; its history stays readable with ``candles``)."""
        refresh = flag_arg(refresh, "refresh")
        include_delisted = flag_arg(include_delisted, "include_delisted")
        self._life.check_open()
        held = self.store if include_delisted else None
        return await self._market_list.markets(self.client, refresh=refresh, held=held)

    async def warmup(self, *, max_age_s: float | None = None) -> dict[str, Any]:
        """Fetch the market list (with details) and instruments of every configured
        exchange, each distinct URL once; keep them across restarts; refresh them every
        ``warmup_every_s`` from now on. With ``redis``, one process fetches under a lease
        for all; a warmup another finished within ``max_age_s`` (default ``warmup_every_s``)
        is taken from Redis. Returns ``{"success", "refreshed_exchanges",
        "total_markets", "execution_time", "exchange_details"}``; a failing exchange reports
        its error text and never stops the others.

        Raises ClosedError outside ``async with``."""
        max_age_s = None if max_age_s is None else number_arg(max_age_s, "max_age_s")
        self._life.check_open()
        report = await self._market_list.warmup(self.client, max_age_s=max_age_s)
        if self._warmup_every_s > 0:
            self._life.start("catalog refresher", self._market_list.refresh(self.client))
        return report.as_dict()

    def tick_size(self, market: str, price: float) -> float:
        """The price tick of ``market``: the last warmup's instrument, else (never warmed)
        Upbit's table for its quote currency at ``price``; works open or closed."""
        return self._market_list.tick_size(market_arg(market), number_arg(price, "price"))

    # -- statistics ---------------------------------------------------------------------------

    def live_statistics(self) -> StreamStatistics | None:
        """The live stream's counters (frame ages of the kinds watched now); None before it
        opens, or when it is shared through Redis."""
        return self._feed.statistics()

    def _account(self, method: str, result: Answer) -> Answer:
        self._accounting.account(method, result.meta)
        return result

    def statistics(self) -> SpineStatistics:
        """Counters since start: per-layer answers, upstream calls made and saved, latency."""
        memory = self._memory.statistics()
        budget = self._memory.budget.statistics()
        usage = self._usage.statistics()
        counted = self._accounting.snapshot(
            memory_candles=memory.candles,
            memory_series=memory.series,
            memory_bytes=budget.used_bytes,
            memory_limit_bytes=budget.limit_bytes,
        )
        return dataclasses.replace(
            counted,
            polled_series=usage.tracked,
            learned_series=usage.learned,
            learned_hits=usage.hits,
            learned_misses=usage.misses,
            hot_closes_live=self._hot.closes_live,
            hot_closes_fetched=self._hot.closes_fetched,
            hot_reads_waited=self._hot.reads_waited,
            hot_reads_waited_in_vain=self._hot.reads_waited_in_vain,
            held_candles=self._holding.held_candles if self._holding else 0,
        )
