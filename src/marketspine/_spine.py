"""``Spine``: the one entry point every client asks.

A request for candles is answered from the bounded memory windows, then the store (stored
candles, or candles derived from stored 1m), then upstream for exactly the missing pages,
merged. Tickers, orderbooks and recent trades come from the WebSocket-fed live state while
markets are watched, otherwise from REST with a freshness bound the caller sets.

``Spine`` owns its client, store, stream and background tasks; use it as ``async with``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from ._accounting import Accounting, SpineStatistics
from ._args import (
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
    optional_seconds_arg,
    quote_arg,
    time_arg,
    timeframe_arg,
)
from ._candle_feed import ClosedCandle, candle_events
from ._candles import MAX_COUNT, CandleReader
from ._catalog import Catalog, WarmupReport, catalog_path, warm_up
from ._client import Client
from ._errors import ClosedError, InvalidRequestError, UpstreamError
from ._hot import HotWindows
from ._listener import Event
from ._live import LiveState
from ._memory import DEFAULT_MEMORY_MB, CandleMemory, MemoryBudget
from ._quotes import Channel, QuoteReader
from ._ratebudget import Priority, RateBudget
from ._records import Candle, Instrument, MarketInfo, Orderbook, Ticker, Trade
from ._result import CandleResult, ListResult, ResultMeta, Trace
from ._retry import RetryPolicy
from ._store import CandleStore, SQLiteStore
from ._stream import Stream
from ._subscriptions import BOOK_DEPTHS
from ._ticks import tick_size as table_tick_size
from ._time import now_ms
from ._timeframes import Timeframe, timeframe_of_kind

__all__ = ["DEFAULT_UPSTREAM", "Spine", "default_db_path"]

DEFAULT_UPSTREAM = "https://api.upbit.com"
logger = logging.getLogger("marketspine")


def default_db_path() -> Path:
    """``marketspine.db`` in the user data directory."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("marketspine")) / "marketspine.db"


class Spine:
    """Market data for bots, charts, screeners and backtests, from the cheapest layer that
    has it. ``upstream`` is Upbit's REST base URL (or a simulator's); ``db`` the SQLite file
    (default: ``default_db_path()``); ``transport`` an httpx transport for in-process tests;
    ``ws_url`` the WebSocket URL (derived from ``upstream`` by default); ``wall_ms`` the
    local clock (UTC epoch ms) behind the estimate of upstream's clock; ``memory_mb`` the
    one memory budget (MiB) that candle windows and live state share, least recently used
    market evicted first.

    Use it as ``async with Spine(...) as spine``. Before that and after ``aclose()`` every
    data method (and ``client``/``store``) raises ``ClosedError``; ``statistics``,
    ``tick_size``, ``clear_memory`` and ``aclose`` keep working; a closed Spine cannot be
    reopened. Arguments are checked first: a wrong type or value raises
    InvalidRequestError naming the argument, the value and what is accepted."""

    def __init__(
        self,
        upstream: str = DEFAULT_UPSTREAM,
        db: str | Path | CandleStore | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        ws_url: str | None = None,
        budget: RateBudget | None = None,
        memory: CandleMemory | None = None,
        memory_mb: float = DEFAULT_MEMORY_MB,
        ticker_max_age_s: float = 1.0,
        exchanges: Mapping[str, str] | None = None,
        warmup_every_s: float = 6 * 3600,
        wall_ms: Callable[[], int] = now_ms,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._db = db
        self._transport = transport
        self._ws_url = ws_url or _ws_url_for(self._upstream)
        self._budget = budget
        # One byte budget over candle windows and live state (a given CandleMemory brings its own).
        self._memory = memory or CandleMemory(budget=MemoryBudget.megabytes(memory_mb))
        self._ticker_max_age_s = ticker_max_age_s
        self._exchanges = dict(exchanges) if exchanges else {"upbit": self._upstream}
        # Configured exchanges are warmed up at start-up and every warmup_every_s after.
        self._warmup_at_start = bool(exchanges)
        self._warmup_every_s = warmup_every_s
        self._sleep = sleep  # the warmup schedule's clock (hand-driven in tests)
        self._warmups = 0
        self._warmup_done = asyncio.Condition()
        self._wall_ms = wall_ms
        self._retry = retry or RetryPolicy()
        self._catalog = Catalog()
        self._catalog_path: Path | None = None
        self._last_warmup: WarmupReport | None = None
        self._hot: HotWindows | None = None
        # Every background task (live pump, catalog refresher, hot keeper) runs here.
        self._tasks: asyncio.TaskGroup | None = None
        self._started: dict[str, asyncio.Task[None]] = {}
        self._stack: AsyncExitStack | None = None
        self._closed = False  # aclose() was called: this Spine is done for good
        self._client: Client | None = None
        self._store: CandleStore | None = None
        self._stream: Stream | None = None
        self._stream_lock = asyncio.Lock()
        self._live = LiveState(clock=time.monotonic, budget=self._memory.budget)
        self._reader: CandleReader | None = None
        self._quote_reader: QuoteReader | None = None
        self._markets: dict[str, MarketInfo] | None = None
        self._markets_lock = asyncio.Lock()
        self._watched: set[tuple[str, str]] = set()
        # statistics
        self._accounting = Accounting()
        self._other_calls = 0  # requests of warmup's clients for other exchanges

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._closed:
            raise ClosedError("this Spine is closed and cannot be reopened: make a new Spine")
        stack = AsyncExitStack()
        try:
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            if self._db is None or isinstance(self._db, str | Path):
                path = Path(self._db) if self._db is not None else default_db_path()
                path.expanduser().parent.mkdir(parents=True, exist_ok=True)
                self._store = await stack.enter_async_context(SQLiteStore(path.expanduser()))
                self._catalog_path = catalog_path(path.expanduser())
                self._catalog = await asyncio.to_thread(Catalog.load, self._catalog_path)
                self._adopt_catalog()
            else:
                self._store = self._db
            self._client = await stack.enter_async_context(
                Client(
                    self._upstream,
                    transport=self._transport,
                    budget=self._budget,
                    wall_ms=self._wall_ms,
                    retry=self._retry,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        if self._warmup_at_start:
            self._start("catalog refresher", self._refresh_catalog(first_now=True))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and background tasks, close the client and the store. From now
        on every data method raises ClosedError (idempotent)."""
        self._closed = True
        for task in self._started.values():
            task.cancel()
        self._started.clear()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def _start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as the background task ``name`` in Spine's task group, once."""
        if name in self._started:
            coro.close()
            return
        if self._tasks is None:
            coro.close()
            raise ClosedError("this Spine is not open: use it as `async with Spine(...) as spine`")
        self._started[name] = self._tasks.create_task(coro, name=f"marketspine {name}")

    def _check_open(self) -> None:
        """Raises ClosedError unless inside ``async with`` and not closed."""
        if self._closed:
            raise ClosedError("this Spine is closed (aclose() was called): make a new Spine")
        if self._stack is None:
            raise ClosedError("this Spine is not open: use it as `async with Spine(...) as spine`")

    @property
    def client(self) -> Client:
        """The upstream client. Raises ClosedError outside ``async with``."""
        self._check_open()
        assert self._client is not None
        return self._client

    @property
    def store(self) -> CandleStore:
        """The candle store. Raises ClosedError outside ``async with``."""
        self._check_open()
        assert self._store is not None
        return self._store

    # -- candles ---------------------------------------------------------------------------

    async def candles(
        self,
        market: str,
        timeframe: Timeframe | str,
        count: int | None = None,
        start: Moment | None = None,
        end: Moment | None = None,
        priority: Priority = Priority.NORMAL,
        *,
        closed_only: bool = False,
        fill: bool = False,
    ) -> CandleResult:
        """Candles of ``market``, ascending. Either ``count`` (the most recent existing
        candles, the forming one last unless ``closed_only``) or ``start``/``end`` (window
        starts in ``[start, end)``: a datetime (naive means UTC), a date (00:00 UTC), ISO
        8601 or epoch milliseconds; ``end`` defaults to now). With
        neither, the last 200. ``fill`` adds flat zero-volume candles for windows without
        trades. Closed candles are fetched upstream at most once, ever.

        Raises InvalidRequestError for bad arguments, UnknownMarketError for unlisted
        markets, RetryLaterError subclasses when upstream is needed but failing, ClosedError
        outside ``async with``.
        """
        code, tf = market_arg(market), timeframe_arg(timeframe)
        count = None if count is None else count_arg(count, "count", 1, MAX_COUNT)
        start_ms, end_ms = time_arg(start, "start"), time_arg(end, "end")
        priority = enum_arg(priority, Priority, "priority")
        closed_only, fill = flag_arg(closed_only, "closed_only"), flag_arg(fill, "fill")
        self._check_open()
        result = await self._candle_reader().read(
            code, tf, count, start_ms, end_ms, priority, closed_only=closed_only, fill=fill
        )
        result.meta = replace(result.meta, priority=priority)
        self._account("candles", result.meta)
        return result

    def _candle_reader(self) -> CandleReader:
        if self._reader is None:
            self._reader = CandleReader(
                self.client, self.store, self._memory, self._live, self.markets
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
        self._check_open()
        if not wanted:
            return {}
        # Upstream's clock, not the local one, says which candle is forming now.
        now = await self.client.synced_now_ms(wanted[0][0], priority=priority)
        forming = {tf.name: tf.floor(now) for _, tf, _ in wanted}
        results = await asyncio.gather(
            *(
                self.candles(code, tf, count=count, priority=priority, closed_only=True)
                for code, tf, count in wanted
            )
        )
        hot = self._hot_windows()
        held: dict[str, dict[str, int]] = {}
        for (code, tf, count), result in zip(wanted, results, strict=True):
            hot.hold(code, tf, count, forming[tf.name])
            held.setdefault(code, {})[tf.name] = len(result)
        if live:
            for code, tf, _ in wanted:
                await self.watch([f"candle.{tf.name}"], [code])
        hot.changed()
        self._start("hot keeper", hot.keep())
        return held

    def _hot_windows(self) -> HotWindows:
        if self._hot is None:
            client = self.client

            async def read_closed(market: str, tf: Timeframe, count: int) -> CandleResult:
                return await self.candles(
                    market, tf, count=count, priority=Priority.HIGH, closed_only=True
                )

            self._hot = HotWindows(client.upstream_now_ms, read_closed)
        return self._hot

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
        within ``max_age_s``), else from REST (cached for ``max_age_s``)."""
        (ticker,) = await self.tickers(
            [market_arg(market)], channel=channel, max_age_s=max_age_s, priority=priority
        )
        return ticker

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
        started = time.perf_counter()
        if quote is not None:
            quote = quote_arg(quote)
        if markets is not None or quote is None:
            markets = markets_arg(markets)
        channel, priority, age = self._quote_args(channel, priority, max_age_s)
        trace = Trace()
        tickers = await self._quotes().tickers(markets, quote, channel, age, priority, trace)
        meta = trace.meta(started, priority=priority)
        self._account("tickers", meta)
        return ListResult(tickers, meta)

    async def orderbook(
        self,
        market: str,
        *,
        channel: Channel = Channel.AUTO,
        max_age_s: float | None = None,
        priority: Priority = Priority.HIGH,
    ) -> Orderbook:
        """The current orderbook (full book), live while watched, else REST."""
        (book,) = await self.orderbooks(
            [market_arg(market)], channel=channel, max_age_s=max_age_s, priority=priority
        )
        return book

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
        started = time.perf_counter()
        markets = markets_arg(markets)
        channel, priority, age = self._quote_args(channel, priority, max_age_s)
        trace = Trace()
        books = await self._quotes().orderbooks(markets, channel, age, priority, trace)
        meta = trace.meta(started, priority=priority)
        self._account("orderbooks", meta)
        return ListResult(books, meta)

    async def trades(
        self, market: str, count: int = 100, *, priority: Priority = Priority.HIGH
    ) -> ListResult[Trade]:
        """The ``count`` most recent trades, newest first: from the live state when it holds
        that many, else REST (Upbit serves up to 500 per call; more are paged by cursor)."""
        started = time.perf_counter()
        market, count = market_arg(market), count_arg(count, "count", 1, 10_000)
        priority = enum_arg(priority, Priority, "priority")
        self._check_open()
        trace = Trace()
        rows = await self._quotes().trades(market, count, priority, trace)
        meta = trace.meta(started, priority=priority)
        self._account("trades", meta)
        return ListResult(rows, meta)

    def _quote_args(
        self, channel: object, priority: object, max_age_s: object
    ) -> tuple[Channel, Priority, float]:
        """The checked channel, priority and freshness bound of a quote request; raises
        ClosedError outside ``async with``."""
        checked = enum_arg(channel, Channel, "channel"), enum_arg(priority, Priority, "priority")
        age = optional_seconds_arg(max_age_s, "max_age_s")
        self._check_open()
        return *checked, self._ticker_max_age_s if age is None else age

    def _quotes(self) -> QuoteReader:
        if self._quote_reader is None:
            self._quote_reader = QuoteReader(
                self.client, self._live, watch=self.watch, watched=self._watched
            )
        return self._quote_reader

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
        self._check_open()
        stream = await self._ensure_stream()
        for kind in kinds:
            if kind.startswith("candle."):
                tf = timeframe_of_kind(kind)
                await stream.subscribe("trade", codes)
                self._watched.update(("trade", c) for c in codes)
                for code in codes:
                    if self._live.tracking(code, tf.name):
                        continue
                    now = await self.client.synced_now_ms(code, priority=Priority.HIGH)
                    seed = await self._candle_reader().forming(
                        code, tf, now, Priority.HIGH, Trace()
                    )
                    self._live.track(code, tf, seed)
                continue
            await stream.subscribe(kind, codes, depth=depth if kind == "orderbook" else None)
            self._watched.update((kind, c) for c in codes)

    async def unwatch(self, kinds: Iterable[str], markets: Iterable[str]) -> None:
        """Stop keeping ``kinds`` of ``markets`` live (the reverse of ``watch``): answers
        come from REST again. A market's trades stay streamed while a forming candle of it
        is still built from them.

        Raises InvalidRequestError for an unknown kind or market; ClosedError outside
        ``async with``."""
        kinds, codes = kinds_arg(kinds), markets_arg(markets)
        self._check_open()
        if self._stream is None:
            return
        for kind in kinds:
            if kind.startswith("candle."):
                tf = timeframe_of_kind(kind)
                idle = [c for c in codes if self._live.untrack(c, tf.name) == 0]
                kind, codes_now = "trade", idle
            else:
                codes_now = [c for c in codes if kind != "trade" or not self._live.tracked_count(c)]
            await self._stream.unsubscribe(kind, codes_now)
            self._watched.difference_update((kind, c) for c in codes_now)

    async def stream(
        self, types: Iterable[str], markets: Iterable[str], *, maxsize: int = 1000
    ) -> AsyncIterator[Event | ClosedCandle]:
        """An async iterator of typed events (Ticker, Trade, Orderbook, and the stream's
        Gap/Health/Overflow) for ``types`` of ``markets`` (a plain string is one item).
        A candle kind (``candle.<timeframe>``, every timeframe) yields the forming
        ``Candle`` each time a trade changes it and a ``ClosedCandle`` once its window has
        closed on upstream's clock, equal to the REST candle of that window (read like any
        closed candle, so stored too).

        Raises InvalidRequestError for an unknown kind or market (before connecting);
        ClosedError outside ``async with``, and when the Spine is closed while iterating."""
        kinds, codes = kinds_arg(types, "types"), markets_arg(markets)
        maxsize = count_arg(maxsize, "maxsize", 1, 10_000_000)
        self._check_open()
        stream = await self._ensure_stream()
        frames = [timeframe_of_kind(k) for k in kinds if "." in k]
        plain = {k for k in kinds if "." not in k}
        # Candle kinds follow the trade stream; the listener opens first so no trade
        # between upstream's forming candle and the first event is missed.
        listened = plain | ({"trade"} if frames else set())
        async with stream.listen(listened, set(codes), maxsize=maxsize) as events:
            await self.watch(kinds, codes)
            source: AsyncIterator[Event | Candle | ClosedCandle] = events
            if frames:
                reader = self._candle_reader()
                source = candle_events(
                    events,
                    codes,
                    frames,
                    pass_trades="trade" in plain,
                    upstream_now_ms=self.client.upstream_now_ms,
                    forming=lambda code, tf, now: reader.forming(
                        code, tf, now, Priority.HIGH, Trace()
                    ),
                    read_closed=self._read_closed,
                )
            async for item in source:
                yield item
        self._check_open()  # the listener ends only when the stream (the Spine) closes

    async def _read_closed(self, market: str, tf: Timeframe, lo: int, hi: int) -> list[Candle]:
        """The closed candles of ``market`` starting in ``[lo, hi)``, stored on the way."""
        result = await self.candles(market, tf, start=lo, end=hi, priority=Priority.HIGH)
        if result.meta.stale:  # served from the store while upstream is down: maybe partial
            raise UpstreamError(f"closed {market} candles not final yet")
        return list(result)

    async def _ensure_stream(self) -> Stream:
        async with self._stream_lock:
            if self._stream is None:
                self._check_open()
                assert self._stack is not None
                stream = Stream(self._ws_url, client=self.client)
                await self._stack.enter_async_context(stream)
                self._stream = stream
                self._start("live pump", self._feed_live(stream))
            return self._stream

    async def _feed_live(self, stream: Stream) -> None:
        async with stream.listen(None, None, maxsize=100_000) as events:
            async for event in events:
                self._live.apply(event)

    # -- markets ------------------------------------------------------------------------------

    async def markets(
        self, *, refresh: bool = False, include_delisted: bool = False
    ) -> list[MarketInfo]:
        """Every listed market with its warning flags (fetched once, then cached). With
        ``include_delisted``, also every market the store holds candles of that upstream
        no longer lists (``delisted=True``; its history stays readable with ``candles``)."""
        refresh = flag_arg(refresh, "refresh")
        include_delisted = flag_arg(include_delisted, "include_delisted")
        self._check_open()
        async with self._markets_lock:
            if self._markets is None or refresh:
                rows = await self.client.markets(details=True)
                self._markets = {m.market: m for m in rows}
                self._accounting.call_made()
            listed = dict(self._markets)
        if not include_delisted:
            return list(listed.values())
        held = {s.market for s in await self.store.summary()}
        gone = sorted(held - listed.keys())
        return [*listed.values(), *(MarketInfo(m, None, m, False, {}, True) for m in gone)]

    async def warmup(self) -> dict[str, Any]:
        """Fetch the market list (with details) and instruments of every configured
        exchange, each distinct URL once; keep them across restarts; refresh them every
        ``warmup_every_s`` from now on. Returns ``{"success", "refreshed_exchanges",
        "total_markets", "execution_time", "exchange_details"}``; a failing exchange reports
        its error text and never stops the others.

        Raises ClosedError outside ``async with``."""
        self._check_open()
        report = await self._warm_up()
        if self._warmup_every_s > 0:
            self._start("catalog refresher", self._refresh_catalog(first_now=False))
        return report.as_dict()

    async def warmed(self, count: int = 1) -> dict[str, Any]:
        """The latest warmup report, once at least ``count`` warmups have finished since
        start-up (the start-up warmup of configured ``exchanges``, scheduled and manual
        ones all count)."""
        async with self._warmup_done:
            await self._warmup_done.wait_for(lambda: self._warmups >= count)
        assert self._last_warmup is not None
        return self._last_warmup.as_dict()

    async def _warm_up(self) -> WarmupReport:
        report = await warm_up(self._exchanges, self._fetch_catalog, self._catalog, wall_ms=now_ms)
        self._last_warmup = report
        self._adopt_catalog()
        if self._catalog_path is not None:
            await asyncio.to_thread(self._catalog.save, self._catalog_path)
        async with self._warmup_done:
            self._warmups += 1
            self._warmup_done.notify_all()
        return report

    def _adopt_catalog(self) -> None:
        """Answer ``markets()`` from the catalog of the main upstream, if there is one."""
        for entry in self._catalog.exchanges.values():
            if entry.url.rstrip("/") == self._upstream:
                self._markets = {m.market: m for m in entry.markets}

    async def _refresh_catalog(self, *, first_now: bool) -> None:
        if not first_now and self._warmup_every_s <= 0:
            return
        while True:
            if first_now:
                first_now = False
            else:
                await self._sleep(self._warmup_every_s)
            try:
                await self._warm_up()
            except Exception:  # the next round tries again; details are in the report
                logger.exception("scheduled warmup failed")
            if self._warmup_every_s <= 0:
                return

    async def _fetch_catalog(self, url: str) -> tuple[list[MarketInfo], list[Instrument]]:
        if url.rstrip("/") == self._upstream:
            return await _markets_and_instruments(self.client)
        async with Client(url, budget=self._budget, transport=self._transport) as client:
            try:
                return await _markets_and_instruments(client)
            finally:
                self._other_calls += sum(client.statistics().sent.values())

    def tick_size(self, market: str, price: float) -> float:
        """The price tick of ``market``: from the instruments the last warmup fetched, else
        (a market never warmed) Upbit's table for its quote currency at ``price``; works
        open or closed."""
        code = market_arg(market)
        checked = number_arg(price, "price")
        warmed = self._catalog.tick_size(code, self._upstream)
        if warmed is not None:  # what upstream said at the last warmup
            return warmed
        return table_tick_size(code.partition("-")[0], checked)

    # -- statistics ---------------------------------------------------------------------------

    def _account(self, method: str, meta: ResultMeta) -> None:
        self._accounting.account(method, meta)

    def statistics(self) -> SpineStatistics:
        """Counters since start: per-layer answers, upstream calls made and saved, latency."""
        memory = self._memory.statistics()
        budget = self._memory.budget.statistics()
        # Every request the client sent (the clock-sync ticker, market lists and retries
        # included), plus those of warmup's clients for other exchanges.
        sent = None
        if self._client is not None:
            sent = sum(self._client.statistics().sent.values()) + self._other_calls
        return self._accounting.snapshot(
            memory_candles=memory.candles,
            memory_series=memory.series,
            memory_bytes=budget.used_bytes,
            memory_limit_bytes=budget.limit_bytes,
            upstream_calls=sent,
        )


async def _markets_and_instruments(client: Client) -> tuple[list[MarketInfo], list[Instrument]]:
    markets = await client.markets(details=True, priority=Priority.HIGH)
    instruments = await client.instruments([m.market for m in markets], priority=Priority.HIGH)
    return markets, instruments


def _ws_url_for(upstream: str) -> str:
    if upstream.startswith("https://"):
        return "wss://" + upstream.removeprefix("https://") + "/websocket/v1"
    if upstream.startswith("http://"):
        return "ws://" + upstream.removeprefix("http://") + "/websocket/v1"
    raise InvalidRequestError(f"invalid upstream {upstream!r}: expected an http(s):// URL")
