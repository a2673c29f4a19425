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
import enum
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ._args import (
    Moment,
    count_arg,
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
from ._candle_feed import CandleFollower, ClosedCandle, follow_candles
from ._candles import MAX_COUNT, CandleReader, Trace
from ._catalog import Catalog, WarmupReport, catalog_path, warm_up
from ._client import Client, RetryPolicy
from ._errors import (
    ClosedError,
    InvalidRequestError,
    RetryLaterError,
    UnknownMarketError,
    UpstreamError,
)
from ._live import LiveState
from ._memory import CandleMemory
from ._ratebudget import Priority, RateBudget
from ._records import Candle, Instrument, MarketInfo, Orderbook, Ticker, Trade
from ._result import CandleResult, ResultMeta
from ._store import CandleStore, SQLiteStore
from ._stream import Event, Stream
from ._subscriptions import BOOK_DEPTHS
from ._ticks import tick_size as table_tick_size
from ._time import now_ms
from ._timeframes import Timeframe, parse_timeframe

__all__ = ["DEFAULT_UPSTREAM", "Channel", "Spine", "SpineStatistics", "default_db_path"]

DEFAULT_UPSTREAM = "https://api.upbit.com"
logger = logging.getLogger("marketspine")
_LATENCY_SAMPLES = 2048
_Quote = TypeVar("_Quote", Ticker, Orderbook)


_HOT_SETTLE_MS = 200


@dataclass
class _HotWindow:
    """A preloaded window: how many closed candles to hold, and the start of the candle that
    was forming when it was last fetched (a close after that makes it due)."""

    tf: Timeframe
    count: int
    forming_ms: int


class Channel(enum.Enum):
    """Where live answers may come from. AUTO prefers the WebSocket-fed state and falls back
    to REST (and the other way round when REST is failing)."""

    AUTO = "auto"
    REST_ONLY = "rest"
    WEBSOCKET_ONLY = "websocket"


def default_db_path() -> Path:
    """``marketspine.db`` in the user data directory."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("marketspine")) / "marketspine.db"


@dataclass(frozen=True, slots=True)
class SpineStatistics:
    """Hit counts per layer, upstream calls made and saved, latency percentiles (ms)."""

    requests: dict[str, int]  # per method
    answered_by: dict[str, int]  # memory / database / upstream / live / mixed
    upstream_calls: int
    upstream_calls_saved: int
    latency_ms: dict[str, dict[str, float]]  # method -> {"p50", "p99", "max"}
    memory_candles: int
    memory_series: int


class Spine:
    """Market data for bots, charts, screeners and backtests, from the cheapest layer that
    has it. ``upstream`` is Upbit's REST base URL (or a simulator's); ``db`` the SQLite file
    (default: ``default_db_path()``); ``transport`` an httpx transport for in-process tests;
    ``ws_url`` the WebSocket URL (derived from ``upstream`` by default); ``wall_ms`` the
    local clock (UTC epoch ms) behind the estimate of upstream's clock."""

    def __init__(
        self,
        upstream: str = DEFAULT_UPSTREAM,
        db: str | Path | CandleStore | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        ws_url: str | None = None,
        budget: RateBudget | None = None,
        memory: CandleMemory | None = None,
        ticker_max_age_s: float = 1.0,
        exchanges: Mapping[str, str] | None = None,
        warmup_every_s: float = 6 * 3600,
        wall_ms: Callable[[], int] = now_ms,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._upstream = upstream.rstrip("/")
        self._db = db
        self._transport = transport
        self._ws_url = ws_url or _ws_url_for(self._upstream)
        self._budget = budget
        self._memory = memory or CandleMemory()
        self._ticker_max_age_s = ticker_max_age_s
        self._exchanges = dict(exchanges) if exchanges else {"upbit": self._upstream}
        self._warmup_every_s = warmup_every_s
        self._wall_ms = wall_ms
        self._retry = retry or RetryPolicy()
        self._catalog = Catalog()
        self._catalog_path: Path | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._last_warmup: WarmupReport | None = None
        self._hot: dict[tuple[str, str], _HotWindow] = {}  # (market, timeframe name) -> window
        self._hot_changed = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._stack: AsyncExitStack | None = None
        self._closed = False  # aclose() was called: this Spine is done for good
        self._client: Client | None = None
        self._store: CandleStore | None = None
        self._stream: Stream | None = None
        self._stream_lock = asyncio.Lock()
        self._live = LiveState(clock=time.monotonic)
        self._pump: asyncio.Task[None] | None = None
        self._reader: CandleReader | None = None
        self._markets: dict[str, MarketInfo] | None = None
        self._markets_lock = asyncio.Lock()
        self._rest_cache: dict[tuple[str, str], tuple[Any, float]] = {}
        self._watched: set[tuple[str, str]] = set()
        # statistics
        self._requests: Counter[str] = Counter()
        self._answered_by: Counter[str] = Counter()
        self._calls_made = 0
        self._calls_saved = 0
        self._latency: dict[str, deque[float]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._closed:
            raise ClosedError("this Spine is closed and cannot be reopened: make a new Spine")
        stack = AsyncExitStack()
        try:
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
        for task in (self._pump, self._refresher, self._keeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._pump = self._refresher = self._keeper = None
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

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
        markets, RetryLaterError subclasses when upstream is needed but failing.
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
        live = flag_arg(live, "live")
        priority = enum_arg(priority, Priority, "priority")
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
        held: dict[str, dict[str, int]] = {}
        for (code, tf, count), result in zip(wanted, results, strict=True):
            key = (code, tf.name)
            known = self._hot.get(key)
            self._hot[key] = _HotWindow(
                tf, max(count, known.count if known else 0), forming[tf.name]
            )
            held.setdefault(code, {})[tf.name] = len(result)
        if live:
            for code, tf, _ in wanted:
                await self.watch([f"candle.{tf.name}"], [code])
        self._hot_changed.set()
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_hot())
        return held

    async def _keep_hot(self) -> None:
        """Refresh every hot window once a candle has closed (upstream clock) since it was
        last fetched. Due-ness is judged from what each window holds, not from when the
        keeper last woke, so a clock jump or a stalled loop cannot skip a close."""
        while True:
            self._hot_changed.clear()
            # A little after the close, so the closed candle is final upstream.
            settled = self.client.upstream_now_ms() - _HOT_SETTLE_MS
            due = [
                (market, window)
                for (market, _), window in self._hot.items()
                if window.tf.floor(settled) > window.forming_ms
            ]
            if due and await self._refresh_hot(due):
                continue
            next_due = min(w.tf.next_start(w.forming_ms) for w in self._hot.values())
            # At most a second at a time, so a clock that jumps or runs fast is noticed; a
            # failed refresh is retried no sooner than that.
            wait_s = 1.0 if due else min(max(0.0, (next_due - settled) / 1000), 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hot_changed.wait(), timeout=wait_s)

    async def _refresh_hot(self, due: list[tuple[str, _HotWindow]]) -> bool:
        """Fetch the due windows; True when all of them succeeded."""
        now = self.client.upstream_now_ms()
        results = await asyncio.gather(
            *(
                self.candles(m, w.tf, count=w.count, priority=Priority.HIGH, closed_only=True)
                for m, w in due
            ),
            return_exceptions=True,
        )
        ok = True
        for (market, window), result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                # Keep the others hot; this one is tried again after a pause.
                logger.error(
                    "refreshing hot window %s %s failed: %s", market, window.tf.name, result
                )
                ok = False
            elif result.meta.stale:  # served from the store while upstream is down
                ok = False
            else:
                window.forming_ms = window.tf.floor(now)
        return ok

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
    ) -> list[Ticker]:
        """Tickers of ``markets`` in the order asked, or of every market quoted in ``quote``
        (e.g. ``"KRW"``) — one REST call for a whole quote market."""
        started = time.perf_counter()
        channel, priority = (
            enum_arg(channel, Channel, "channel"),
            enum_arg(priority, Priority, "priority"),
        )
        max_age_s = optional_seconds_arg(max_age_s, "max_age_s")
        if quote is not None:
            if markets is not None:
                raise InvalidRequestError("give markets or quote, not both")
            currency = quote_arg(quote)
        else:
            codes = markets_arg(markets)
        self._check_open()
        age = self._ticker_max_age_s if max_age_s is None else max_age_s
        trace = Trace()
        if quote is not None:
            result = await self._rest_cached(
                ("tickers_by_quote", currency),
                age,
                lambda: self.client.tickers_by_quote([currency], priority=priority),
                trace,
            )
            self._account("tickers", trace.meta(started))
            return list(result)
        tickers = await self._live_or_rest(
            "ticker",
            codes,
            channel,
            age,
            self._live.ticker,
            lambda missing: self.client.tickers(missing, priority=priority),
            trace,
        )
        self._account("tickers", trace.meta(started))
        return tickers

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
    ) -> list[Orderbook]:
        """Orderbooks (full books) of ``markets`` in the order asked, live while watched,
        else REST (cached for ``max_age_s``)."""
        started = time.perf_counter()
        codes = markets_arg(markets)
        channel, priority = (
            enum_arg(channel, Channel, "channel"),
            enum_arg(priority, Priority, "priority"),
        )
        max_age_s = optional_seconds_arg(max_age_s, "max_age_s")
        self._check_open()
        age = self._ticker_max_age_s if max_age_s is None else max_age_s
        trace = Trace()
        books = await self._live_or_rest(
            "orderbook",
            codes,
            channel,
            age,
            self._live.orderbook,
            lambda missing: self.client.orderbooks(missing, priority=priority),
            trace,
        )
        self._account("orderbooks", trace.meta(started))
        return books

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
        if missing and channel is Channel.WEBSOCKET_ONLY:
            await self.watch([kind], missing)
            for code in missing:
                answers[code] = await self._wait_live(partial(read_live, code, None), code)
            trace.used("live")
            missing = []
        if missing:
            try:
                fetched = await self._rest_cached(
                    (kind, ",".join(missing)), max_age_s, lambda: fetch(missing), trace
                )
            except RetryLaterError:
                held = [read_live(c, None) for c in missing]
                if channel is Channel.REST_ONLY or any(h is None for h in held):
                    raise
                fetched = [h for h in held if h is not None]
                trace.used("live")
                trace.stale = True
            answers.update((item.market, item) for item in fetched)
        unknown = [c for c in codes if c not in answers]
        if unknown:
            raise UnknownMarketError(unknown[0])
        return [answers[c] for c in codes]

    async def trades(
        self, market: str, count: int = 100, *, priority: Priority = Priority.HIGH
    ) -> list[Trade]:
        """The ``count`` most recent trades, newest first: from the live state when it holds
        that many, else REST (Upbit serves up to 500 per call; more are paged by cursor)."""
        started = time.perf_counter()
        code = market_arg(market)
        count = count_arg(count, "count", 1, 10_000)
        priority = enum_arg(priority, Priority, "priority")
        self._check_open()
        trace = Trace()
        if ("trade", code) in self._watched and self._live.trade_count(code) >= count:
            trace.used("live")
            rows = self._live.trades(code, count)
        else:
            rows = []
            cursor: int | None = None
            while len(rows) < count:
                page = await self.client.trades(
                    code, count=min(500, count - len(rows)), cursor=cursor, priority=priority
                )
                trace.calls += 1
                trace.used("upstream")
                rows.extend(page)
                if len(page) < min(500, count - len(rows) + len(page)):
                    break
                cursor = page[-1].seq
        self._account("trades", trace.meta(started))
        return rows

    async def _rest_cached(
        self, key: tuple[str, str], max_age_s: float, fetch: Any, trace: Trace
    ) -> Any:
        held = self._rest_cache.get(key)
        if held is not None and time.monotonic() - held[1] <= max_age_s:
            trace.used("memory")
            return held[0]
        value = await fetch()
        trace.calls += 1
        trace.used("upstream")
        self._rest_cache[key] = (value, time.monotonic())
        if len(self._rest_cache) > 4096:
            # Old answers are worthless anyway; drop the oldest half.
            for stale in sorted(self._rest_cache, key=lambda k: self._rest_cache[k][1])[:2048]:
                del self._rest_cache[stale]
        return value

    async def _wait_live(self, read: Any, market: str, timeout_s: float = 10.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (value := read()) is None:
            if loop.time() > deadline:
                raise UpstreamError(f"no live data for {market} within {timeout_s:g} s")
            await asyncio.sleep(0.01)
        return value

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
        if depth is not None:
            accepted = f"one of {', '.join(map(str, BOOK_DEPTHS))}, or None for 30"
            if count_arg(depth, "depth", 1, 30) not in BOOK_DEPTHS:
                raise InvalidRequestError(f"invalid depth {depth}: expected {accepted}")
            if "orderbook" not in kinds:
                raise InvalidRequestError(
                    "depth applies to the orderbook kind, which is not watched"
                )
        self._check_open()
        stream = await self._ensure_stream()
        for kind in kinds:
            if kind.startswith("candle."):
                tf = parse_timeframe(kind.removeprefix("candle."))
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
        frames = [parse_timeframe(k.removeprefix("candle.")) for k in kinds if "." in k]
        plain = {k for k in kinds if "." not in k}
        # Candle kinds follow the trade stream; the listener opens first so no trade
        # between upstream's forming candle and the first event is missed.
        listened = plain | ({"trade"} if frames else set())
        async with stream.listen(listened, set(codes), maxsize=maxsize) as events:
            await self.watch(kinds, codes)
            if frames:
                source = follow_candles(
                    events,
                    await self._candle_followers(codes, frames),
                    pass_trades="trade" in plain,
                    upstream_now_ms=self.client.upstream_now_ms,
                    read_closed=self._read_closed,
                )
                async for item in source:
                    yield item
            else:
                async for event in events:
                    yield event
        self._check_open()  # the listener ends only when the stream (the Spine) closes

    async def _candle_followers(
        self, codes: list[str], frames: list[Timeframe]
    ) -> list[CandleFollower]:
        now = self.client.upstream_now_ms()
        followers = []
        for code in codes:
            for tf in frames:
                seed = await self._candle_reader().forming(code, tf, now, Priority.HIGH, Trace())
                followers.append(CandleFollower(code, tf, seed, now))
        return followers

    async def _read_closed(self, follower: CandleFollower, lo: int, hi: int) -> list[Candle]:
        """The closed candles of ``follower``'s windows starting in ``[lo, hi)``."""
        result = await self.candles(
            follower.market, follower.timeframe, start=lo, end=hi, priority=Priority.HIGH
        )
        if result.meta.stale:  # served from the store while upstream is down: maybe partial
            raise UpstreamError(f"closed {follower.market} candles not final yet")
        return list(result)

    async def _ensure_stream(self) -> Stream:
        async with self._stream_lock:
            if self._stream is None:
                self._check_open()
                assert self._stack is not None
                stream = Stream(self._ws_url, client=self.client)
                await self._stack.enter_async_context(stream)
                self._stream = stream
                self._pump = asyncio.create_task(self._feed_live(stream))
            return self._stream

    async def _feed_live(self, stream: Stream) -> None:
        async with stream.listen(None, None, maxsize=100_000) as events:
            async for event in events:
                self._live.apply(event)

    # -- markets ------------------------------------------------------------------------------

    async def markets(self, *, refresh: bool = False) -> list[MarketInfo]:
        """Every listed market with its warning flags (fetched once, then cached)."""
        refresh = flag_arg(refresh, "refresh")
        self._check_open()
        async with self._markets_lock:
            if self._markets is None or refresh:
                rows = await self.client.markets(details=True)
                self._markets = {m.market: m for m in rows}
                self._calls_made += 1
            return list(self._markets.values())

    async def warmup(self) -> dict[str, Any]:
        """Fetch the market list (with details) and instruments of every configured
        exchange, each distinct URL once; keep them across restarts; refresh them every
        ``warmup_every_s`` from now on. Returns ``{"success", "refreshed_exchanges",
        "total_markets", "execution_time", "exchange_details"}``; a failing exchange reports
        its error text and never stops the others.

        Raises ClosedError outside ``async with``."""
        self._check_open()
        report = await warm_up(self._exchanges, self._fetch_catalog, self._catalog, wall_ms=now_ms)
        self._last_warmup = report
        self._adopt_catalog()
        if self._catalog_path is not None:
            await asyncio.to_thread(self._catalog.save, self._catalog_path)
        if self._refresher is None and self._warmup_every_s > 0:
            self._refresher = asyncio.create_task(self._refresh_catalog())
        return report.as_dict()

    def _adopt_catalog(self) -> None:
        """Answer ``markets()`` from the catalog of the main upstream, if there is one."""
        for entry in self._catalog.exchanges.values():
            if entry.url.rstrip("/") == self._upstream:
                self._markets = {m.market: m for m in entry.markets}

    async def _refresh_catalog(self) -> None:
        while True:
            await asyncio.sleep(self._warmup_every_s)
            try:
                await self.warmup()
            except Exception:  # the next round tries again; details are in the report
                logger.exception("scheduled warmup failed")

    async def _fetch_catalog(self, url: str) -> tuple[list[MarketInfo], list[Instrument]]:
        if url.rstrip("/") == self._upstream:
            return await _markets_and_instruments(self.client)
        async with Client(url, budget=self._budget) as client:
            return await _markets_and_instruments(client)

    def tick_size(self, market: str, price: float) -> float:
        """The price tick of ``market`` at ``price`` (Upbit's tables per quote currency);
        works open or closed."""
        quote = market_arg(market).partition("-")[0]
        return table_tick_size(quote, number_arg(price, "price"))

    # -- statistics ---------------------------------------------------------------------------

    def _account(self, method: str, meta: ResultMeta) -> None:
        self._requests[method] += 1
        self._answered_by[meta.source] += 1
        self._calls_made += meta.upstream_calls
        if meta.upstream_calls == 0:
            self._calls_saved += 1
        samples = self._latency.setdefault(method, deque(maxlen=_LATENCY_SAMPLES))
        samples.append(meta.elapsed_ms)

    def statistics(self) -> SpineStatistics:
        """Counters since start: per-layer answers, upstream calls made and saved, latency."""
        latency: dict[str, dict[str, float]] = {}
        for method, samples in self._latency.items():
            ordered = sorted(samples)
            latency[method] = {
                "p50": ordered[len(ordered) // 2],
                "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                "max": ordered[-1],
            }
        memory = self._memory.statistics()
        return SpineStatistics(
            requests=dict(self._requests),
            answered_by=dict(self._answered_by),
            upstream_calls=self._calls_made,
            upstream_calls_saved=self._calls_saved,
            latency_ms=latency,
            memory_candles=memory.candles,
            memory_series=memory.series,
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
