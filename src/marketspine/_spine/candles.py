"""Answering candle requests: bounded memory windows, then the store (stored candles, or
candles derived from stored 1m), then upstream for exactly the missing pages, merged.

The forming candle is never stored: it comes from the trade stream while the market is
tracked in the live state, else from one upstream call.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from .._base.coverage import Coverage
from .._base.groups import first_leaf
from .._base.markets import MarketCode
from .._base.memory import CandleMemory
from .._base.range_lock import RangeLock
from .._base.reach_back import reach_windows, read_back
from .._base.time import format_utc, parse_time
from .._base.timeframes import Timeframe, parse_timeframe
from .._budget.rules import Priority
from .._client.client import Client
from .._client.upstream_clock import CLOCK_SLACK_MS
from .._live.state import LiveState
from .._store.backfill import PageLeases, collect, fetch_page
from .._store.derive import DERIVABLE, derivable_ranges, derive_candles, merged
from .._store.page_spread import spread_pages
from .._store.planner import MAX_PAGE, PageOutcome, PageRequest, page_outcome
from .._store.sqlite import CandleStore
from .._upbit.horizon import SECONDS_HORIZON_MS, served_since
from ..errors import InvalidRequestError, RetryLaterError, UnknownMarketError
from ..records import Candle, MarketInfo
from .result import CandleResult, Trace, fill_gaps

__all__ = ["MAX_COUNT", "CandleReader", "MarketsFromCache"]

_ONE_MINUTE = parse_timeframe("1m")
_FAR_FUTURE_MS = 1 << 62
# How far above a read's end a stored run is read to learn the density (five pages' worth
# on a dense market).
_DENSITY_WINDOWS = 5 * MAX_PAGE
MAX_COUNT = 100_000


class MarketsFromCache:
    """What ``collect`` needs of a client, with the market list answered by the caller's
    cache so a backfill of a known market costs only candle pages."""

    def __init__(
        self, client: Client, markets: Callable[[], Awaitable[Sequence[MarketInfo]]]
    ) -> None:
        self._client = client
        self._markets = markets

    async def candles(
        self,
        market: str,
        timeframe: Timeframe,
        *,
        count: int = 200,
        to_ms: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Candle]:
        return await self._client.candles(
            market, timeframe, count=count, to_ms=to_ms, priority=priority
        )

    async def markets(self) -> Sequence[MarketInfo]:
        return await self._markets()


class CandleReader:
    """Candles of any market and timeframe from the cheapest layer that has them. One per
    Spine; it shares the Spine's client, store, memory and live state. ``leases`` (processes
    sharing a Redis) make each upstream page fetched once among them."""

    def __init__(
        self,
        client: Client,
        store: CandleStore,
        memory: CandleMemory,
        live: LiveState,
        markets: Callable[[], Awaitable[Sequence[MarketInfo]]],
        leases: PageLeases | None = None,
    ) -> None:
        self._client = client
        self._leases = leases
        self._store = store
        self.memory = memory
        self._live = live
        self._markets = markets
        # Fetches of overlapping ranges of a series take turns; a lock exists only while
        # it is in use, and reads of what is stored never take it.
        self.series_locks = RangeLock()
        # Markets upstream answered 404 for while the store held their candles.
        self._delisted: set[str] = set()

    async def read(
        self,
        market: MarketCode,
        timeframe: Timeframe,
        count: int | None = None,
        start: str | int | None = None,
        end: str | int | None = None,
        priority: Priority = Priority.NORMAL,
        *,
        closed_only: bool = False,
        fill: bool = False,
    ) -> CandleResult:
        """The answer behind ``Spine.candles`` (see there); its meta is not yet counted.
        A market upstream no longer lists (404) whose candles the store holds is delisted:
        answered from the store alone from then on, ``meta.delisted`` set."""
        code = market
        result: CandleResult | None = None
        if code not in self._delisted:
            try:
                result = await self._read(
                    code, timeframe, count, start, end, priority, closed_only=closed_only, fill=fill
                )
            except UnknownMarketError:
                if not await self._holds(code, timeframe):
                    raise
                await self._learn_delisted(code)
        if result is None:
            result = await self._stored_only(code, timeframe, count, start, end, fill)
        result.meta = replace(result.meta, priority=priority)
        return result

    async def _learn_delisted(self, market: str) -> None:
        """Remember (here and in the store, for ``status``) that upstream delisted it."""
        if market not in self._delisted:
            self._delisted.add(market)
            await self._store.set_delisted(market, self._client.upstream_now_ms())

    async def _holds(self, market: str, tf: Timeframe) -> bool:
        """Whether the store holds candles of ``market`` for ``tf`` (or 1m to derive from)."""
        if (await self._store.coverage(market, tf)).ranges:
            return True
        return tf.name in DERIVABLE and bool(
            (await self._store.coverage(market, _ONE_MINUTE)).ranges
        )

    async def _stored_only(
        self,
        market: str,
        tf: Timeframe,
        count: int | None,
        start: str | int | None,
        end: str | int | None,
        fill: bool,
    ) -> CandleResult:
        """A delisted market's candles: what the store holds (or derives), nothing asked."""
        started = time.perf_counter()
        trace = Trace()
        trace.delisted = True
        trace.used("database")
        if count is None and start is None:
            count = 200
        if count is not None:
            before = None if end is None else tf.next_start(tf.floor(_to_ms(end, "end") - 1))
            rows = await self._stored_tail(market, tf, count, before)
            end_ms = rows[-1].start_ms + 1 if rows else 0
        else:
            assert start is not None
            first = _to_ms(start, "start")
            end_ms = _to_ms(end, "end") if end is not None else _FAR_FUTURE_MS
            rows = await self._read_known(market, tf, first, end_ms)
        if fill and rows:
            rows = fill_gaps(rows, tf, min(end_ms, tf.next_start(rows[-1].start_ms)))
            rows = rows[-count:] if count is not None else rows
        return CandleResult(market, tf, rows, trace.meta(started))

    async def _stored_tail(
        self, market: str, tf: Timeframe, count: int, before: int | None = None
    ) -> list[Candle]:
        """The newest ``count`` stored (or derivable) candles (starting before ``before``,
        if given), reading back in widening spans from the newest covered point."""
        ends = [(await self._store.coverage(market, tf)).ranges]
        if tf.name in DERIVABLE:
            ends.append((await self._store.coverage(market, _ONE_MINUTE)).ranges)
        spans = [r for ranges in ends for r in ranges]
        if not spans:
            return []
        oldest, hi = min(a for a, _ in spans), max(b for _, b in spans)
        if before is not None:
            hi = min(hi, before)
            if hi <= oldest:
                return []

        async def read(lo: int) -> list[Candle]:
            return await self._read_known(market, tf, lo, hi)

        rows = await read_back(tf, count, hi, read, oldest_ms=oldest)
        return rows[-count:]

    async def _read(
        self,
        market: MarketCode,
        timeframe: Timeframe,
        count: int | None = None,
        start: str | int | None = None,
        end: str | int | None = None,
        priority: Priority = Priority.NORMAL,
        *,
        closed_only: bool = False,
        fill: bool = False,
    ) -> CandleResult:
        started = time.perf_counter()
        tf = timeframe
        code = market
        if count is not None and start is not None:
            raise InvalidRequestError("give count (with an end, or not), or start/end, not both")
        if count is None and start is None and end is not None:
            raise InvalidRequestError("end needs a start or a count")
        if count is None and start is None:
            count = 200
        if count is not None and not 1 <= count <= MAX_COUNT:
            raise InvalidRequestError(f"count must be 1..{MAX_COUNT}, got {count}")
        if count is not None and end is not None:
            before = await self._count_before(
                code, tf, count, _to_ms(end, "end"), priority, closed_only=closed_only, fill=fill
            )
            if before is not None:
                return before
            # ``end`` lies past the forming window's start: the newest candles, as asked
            # without it.
        trace = Trace()
        early: list[Candle] | None = None
        if count is not None and not self._live.tracking(code, tf.name):
            # The forming-candle call comes first: its reply tells upstream's clock, so a
            # cold request needs no separate clock call (ceil(count/200) + 1 calls in all).
            # When the newest closed candles are not known either, it asks a whole page:
            # the forming candle, the newest closed page, upstream's clock and the density
            # the remaining pages are spread by, in one round trip.
            if not await self._top_known(code, tf, tf.floor(self._client.upstream_now_ms())):
                early = await self._head_page(code, tf, priority, trace)
            elif not closed_only:
                early = await self._forming_rows(code, tf, priority, trace)
        until_ms = _to_ms(end, "end") if count is None and end is not None else None
        try:
            now = await self._client.synced_now_ms(code, until_ms=until_ms, priority=priority)
        except RetryLaterError as exc:
            # Upstream cannot tell its clock now: our best estimate, and what is held.
            trace.failed(exc)
            now = self._client.upstream_now_ms()
        forming_start = tf.floor(now)
        if count is not None:
            if closed_only:
                forming = None
            elif early is not None:
                forming = early[0] if early and early[0].start_ms >= forming_start else None
            else:
                forming = await self.forming(code, tf, now, priority, trace)
            closed_wanted = count - (1 if forming is not None else 0)
            # Without an early call, its place in the bound is the clock call's.
            calls = _call_bound(count) - (1 if early is None else 0)
            rows = await self._latest_closed(
                code, tf, closed_wanted, now, priority, trace, calls=calls
            )
            first = rows[0].start_ms if rows else forming_start
            end_ms = forming_start
        else:
            assert start is not None  # checked above
            first = _to_ms(start, "start")
            end_ms = _to_ms(end, "end") if end is not None else now + 1
            if first >= end_ms:
                # Without an end the range ends now: say so, since no end was given.
                raise InvalidRequestError(
                    f"start ({format_utc(first)}Z) must be before end ({format_utc(end_ms)}Z)"
                    if end is not None
                    else f"start ({format_utc(first)}Z) lies in the future: upstream's now is "
                    f"{format_utc(now)}Z"
                )
            rows = await self._closed_range(
                code, tf, first, min(end_ms, forming_start), now, priority, trace
            )
            forming = None
            if not closed_only and end_ms > forming_start and first <= forming_start:
                forming = await self.forming(code, tf, now, priority, trace)
        candles = list(rows)
        if forming is not None:
            candles.append(forming)
        if fill:
            # Flat candles up to the requested end, never past the current window.
            candles = fill_gaps(candles, tf, min(end_ms, forming_start + 1))
            candles = [c for c in candles if c.start_ms >= first]
            if count is not None:
                candles = candles[-count:]
        trace.check_answered(candles)
        return CandleResult(code, tf, candles, trace.meta(started, forming=forming is not None))

    async def _count_before(
        self,
        market: str,
        tf: Timeframe,
        count: int,
        end_ms: int,
        priority: Priority,
        *,
        closed_only: bool,
        fill: bool,
    ) -> CandleResult | None:
        """The ``count`` most recent candles starting before ``end_ms`` (Upbit's ``count`` +
        ``to``), read like a cold ``count`` read but from ``end_ms`` down: what is stored,
        then the first page at ``end_ms`` (which tells the density) and the remaining
        pages spread together (``page_spread``), whatever a spread misses walked.
        None when ``end_ms`` lies past the forming window's start: that is a plain
        ``count`` read (the forming candle included unless ``closed_only``)."""
        started = time.perf_counter()
        trace = Trace()
        # An end over an hour back cannot reach the forming candle: no clock call, and the
        # +1 of the call bound is the pages' (a margin for a nearly dense market).
        far = end_ms < self._client.upstream_now_ms() - CLOCK_SLACK_MS
        calls = _call_bound(count) - (0 if far else 1)
        try:
            now = await self._client.synced_now_ms(market, until_ms=end_ms, priority=priority)
        except RetryLaterError as exc:
            trace.failed(exc)
            now = self._client.upstream_now_ms()
        forming_start = tf.floor(now)
        # Windows starting before ``end_ms``: the one holding it counts.
        end = tf.next_start(tf.floor(end_ms - 1))
        if end > forming_start:
            return None
        rows = await self._latest_closed(
            market, tf, count, now, priority, trace, calls=calls, end=end
        )
        if fill and rows:
            rows = fill_gaps(rows, tf, end)[-count:]
        trace.check_answered(rows)
        return CandleResult(market, tf, rows, trace.meta(started, forming=False))

    async def forming(
        self, market: str, tf: Timeframe, now: int, priority: Priority, trace: Trace
    ) -> Candle | None:
        """The still-forming candle, or None when its window has no trade yet. Taken from
        the live candle stream while the market is watched, else one upstream call."""
        forming_start = tf.floor(now)
        if self._live.tracking(market, tf.name):
            live = self._live.forming(market, tf.name)
            trace.used("live")
            # The trade stream may already be in a later window than our estimate of now.
            return live if live is not None and live.start_ms >= forming_start else None
        rows = await self._forming_rows(market, tf, priority, trace)
        if rows and rows[0].start_ms >= forming_start:
            return rows[0]
        return None

    async def _forming_rows(
        self, market: str, tf: Timeframe, priority: Priority, trace: Trace
    ) -> list[Candle]:
        """Upstream's newest candle (forming or not), [] when upstream cannot answer now
        (circuit open, a ban, upstream down): the rest is answered from what is held."""
        try:
            rows = await self._client.candles(market, tf, count=1, priority=priority)
        except RetryLaterError as exc:
            trace.failed(exc)
            return []
        trace.used("upstream")
        trace.calls += 1
        trace.pages += 1
        return rows

    async def _top_known(self, market: str, tf: Timeframe, forming_start: int) -> bool:
        """Whether memory or the store knows the series up to ``forming_start`` (stored, or
        derivable from stored 1m): then the newest closed candles need no upstream page."""
        window = self.memory.covered((market, tf.key))
        if window is not None and window[1] >= forming_start:
            return True
        ranges = (await self._store.coverage(market, tf)).ranges
        if ranges and ranges[-1][1] >= forming_start:
            return True
        if tf.name in DERIVABLE:
            minutes = (await self._store.coverage(market, _ONE_MINUTE)).ranges
            return bool(minutes) and minutes[-1][1] >= forming_start
        return False

    async def _head_page(
        self, market: str, tf: Timeframe, priority: Priority, trace: Trace
    ) -> list[Candle]:
        """Upstream's newest page (the forming candle first, when its window has a trade),
        [] when the circuit is open. Its closed part is stored with the range it proves.

        Which candles were closed is judged by upstream's clock when the page was made:
        no later than now less the round trip. A window that closed while the page was on
        its way is left out (the walk asks for it again), never stored as closed while it
        may still have been forming."""
        sent = time.perf_counter()
        try:
            rows = await self._client.candles(market, tf, count=MAX_PAGE, priority=priority)
        except RetryLaterError as exc:  # upstream cannot answer now: nothing from it, stale
            trace.failed(exc)
            return []
        trace.used("upstream")
        trace.calls += 1
        trace.pages += 1
        took_ms = math.ceil((time.perf_counter() - sent) * 1000)
        closed_before = tf.floor(self._client.upstream_now_ms() - took_ms)
        closed = [c for c in rows if c.start_ms < closed_before]
        # The closed part answers "the newest (200 - the others) candles before the cut".
        request = PageRequest(closed_before, MAX_PAGE - (len(rows) - len(closed)))
        if request.count > 0:
            outcome = page_outcome(tf, request, closed, None)
            await self._store.write_page(
                market, tf, outcome.candles, outcome.covered, listing_ms=outcome.listing_ms
            )
        return rows

    async def _latest_closed(
        self,
        market: str,
        tf: Timeframe,
        count: int,
        now: int,
        priority: Priority,
        trace: Trace,
        *,
        calls: int,
        end: int | None = None,
    ) -> list[Candle]:
        """The ``count`` most recent closed candles before ``end`` (a window start, by
        default the forming window's; fewer only before the listing or the 1s horizon):
        memory, else the store, else upstream for the pages still missing. ``calls``
        bounds the upstream calls of the whole request when spreading pages."""
        if count <= 0:
            return []
        end = tf.floor(now) if end is None else end
        key = (market, tf.key)
        cached = self.memory.latest(key, count, end)
        if cached is not None:
            trace.used("memory")
            if cached:
                trace.provisional += self.memory.provisional(key, cached[0].start_ms, end)
            return cached
        rows, low = await self._walk_back(market, tf, count, end, now, priority, trace, calls)
        if not trace.stale:
            self.memory.put(key, low, end, rows)
        return rows[-count:]

    async def _walk_back(
        self,
        market: str,
        tf: Timeframe,
        count: int,
        end: int,
        now: int,
        priority: Priority,
        trace: Trace,
        calls: int,
    ) -> tuple[list[Candle], int]:
        """Every closed candle in ``[low, end)`` for the highest ``low`` that holds at least
        ``count`` of them (or reaches the listing / horizon); returns ``(candles, low)``.

        Reads the stored runs from ``end`` backwards without waiting for anyone: the series
        lock is taken only to fetch what the store lacks (``_fetch_below``), which lands in
        the store with the range it proves and is read from there like any stored run."""
        store = self._store
        position = end  # everything in [position, end) is known and gathered
        gathered: list[list[Candle]] = []  # newest chunk first
        held = 0
        attempt = 0  # reads of stored runs so far: each spans 4× the windows of the last
        nothing_below: int | None = None  # a short page proved nothing older exists here
        while True:
            coverage = await store.coverage(market, tf)
            covered_from = await self._covered_run(market, tf, coverage, position)
            # Read no more than needed from a long stored run (months of 1m for a backtest):
            # about the windows still wanted, widening on sparse markets.
            reach = reach_windows(count - held, attempt)
            run_start = max(covered_from, tf.shift(position, -reach))
            attempt += 1
            if run_start < position:
                chunk = await self._read_known(market, tf, run_start, position)
                trace.used("database")
                gathered.append(chunk)
                held += len(chunk)
                position = run_start
            if held >= count:
                break
            if covered_from < position:
                continue  # the store holds more below this capped span: read on, not upstream
            if trace.stale:  # upstream cannot answer now: what is stored is the answer
                break
            if coverage.listing_ms is not None and coverage.listing_ms >= position:
                break
            if nothing_below is not None and nothing_below >= position:
                if tf.unit == "second":  # beyond the horizon: unknown, not empty
                    trace.unserved_before_ms = now - SECONDS_HORIZON_MS
                break
            if tf.unit == "second" and position <= now - SECONDS_HORIZON_MS:
                trace.unserved_before_ms = now - SECONDS_HORIZON_MS
                break
            found, known = held, tf.count_windows(position, end)
            if held == 0:
                # Nothing known below ``end`` yet: a stored run just above it (the newer
                # page of a chart paging back) tells the density, so the first round
                # spreads already instead of asking one page alone to learn it.
                found, known = await self._density_above(market, tf, end, coverage)
            lowest = await self._fetch_below(
                market, tf, position, count - held, found, known, now, priority, trace, calls
            )
            if lowest is not None:
                nothing_below = lowest if nothing_below is None else max(nothing_below, lowest)
        return [c for chunk in reversed(gathered) for c in chunk], position

    async def _density_above(
        self, market: str, tf: Timeframe, end: int, coverage: Coverage
    ) -> tuple[int, int]:
        """``(candles, windows)`` of the stored run that starts at or spans ``end``, over at
        most ``_DENSITY_WINDOWS`` windows from ``end`` up; ``(0, 0)`` when none does."""
        for lo, hi in coverage.ranges:
            if lo <= end < hi:
                top = min(hi, tf.shift(end, _DENSITY_WINDOWS))
                rows = await self._store.read(market, tf, end, top)
                return len(rows), tf.count_windows(end, top)
        return 0, 0

    async def _fetch_below(
        self,
        market: str,
        tf: Timeframe,
        position: int,
        want: int,
        held: int,
        known_windows: int,
        now: int,
        priority: Priority,
        trace: Trace,
        calls: int,
    ) -> int | None:
        """Fetch and store the pages below ``position`` that the ``want`` missing candles
        need: the next page of the walk and, for more than a page, the others at once, spread
        by the density of the ``held`` candles over ``known_windows`` windows above. Under
        the series lock for the range they should reach, so concurrent requests fetch each
        page once (one that waited finds ``position`` covered and fetches nothing), while a
        fetch elsewhere in the series (a backfill months back) holds no one up. Returns the
        highest point below which a short page proved nothing exists (the listing, or the 1s
        horizon), if any."""
        store = self._store
        # The range these pages should reach, about: overlapping fetches take turns.
        per_candle = known_windows / held if held > 0 else 1.0
        reach = tf.shift(position, -max(1, math.ceil(want * per_candle)))
        async with self.series_locks.hold((market, tf.key), reach, position):
            coverage = await store.coverage(market, tf)
            if await self._covered_run(market, tf, coverage, position) < position:
                return None  # fetched while we waited
            stop = [b for _, b in coverage.ranges if b < position]
            if coverage.listing_ms is not None:
                stop.append(coverage.listing_ms)
            if tf.unit == "second":
                stop.append(now - SECONDS_HORIZON_MS)
            requests = spread_pages(
                tf,
                position,
                want,
                held=held,
                windows=known_windows,
                calls_left=calls - trace.calls,
                stop_ms=max(stop, default=None),
            )
            outcomes = await self._fetch_pages(market, tf, requests, priority, trace)
        exhausted = [o.covered[0] for o in outcomes if o.done]
        return max(exhausted, default=None)

    async def _fetch_pages(
        self,
        market: str,
        tf: Timeframe,
        requests: list[PageRequest],
        priority: Priority,
        trace: Trace,
    ) -> list[PageOutcome]:
        """Fetch ``requests`` together, storing each page with its coverage as it arrives.
        An open circuit marks the answer stale (what arrived is kept)."""
        outcomes: list[PageOutcome] = []

        async def one(request: PageRequest) -> None:
            try:
                page, fetched = await fetch_page(
                    self._client, self._leases, market, tf, request, priority
                )
            except RetryLaterError as exc:  # what is held, flagged stale
                trace.failed(exc)
                return
            trace.used("upstream")
            trace.calls += fetched  # a page another process fetched cost no call here
            trace.pages += 1
            outcome = page_outcome(tf, request, page, None)
            # An empty page at a guessed ``to`` proves nothing starts before it, but not
            # where the first candle is: the listing is learned by the walk, not guessed.
            guessed = request is not requests[0]
            listing = None if guessed and not outcome.candles else outcome.listing_ms
            await self._store.write_page(
                market, tf, outcome.candles, outcome.covered, listing_ms=listing
            )
            outcomes.append(outcome)

        if len(requests) == 1:
            await one(requests[0])
            return outcomes
        try:
            async with asyncio.TaskGroup() as group:
                for request in requests:
                    group.create_task(one(request))
        except BaseExceptionGroup as failures:
            raise first_leaf(failures) from None
        return outcomes

    async def _covered_run(
        self, market: str, tf: Timeframe, coverage: Coverage, position: int
    ) -> int:
        """The start of the known range that ends at ``position`` (``position`` itself when
        the window before it is unknown): stored coverage, or whole windows derivable from
        stored 1m candles."""
        run = position
        for lo, hi in reversed(coverage.ranges):
            if lo < run <= hi:
                run = lo
                break
        if tf.name in DERIVABLE and run == position:
            minutes = await self._store.coverage(market, _ONE_MINUTE)
            if minutes.ranges:
                spans = derivable_ranges(minutes, tf, minutes.ranges[0][0], position)
                if spans and spans[-1][1] == position:
                    run = spans[-1][0]
        return run

    async def _read_known(self, market: str, tf: Timeframe, lo: int, hi: int) -> list[Candle]:
        """Stored candles in ``[lo, hi)``, with those derivable from stored 1m merged in."""
        rows = await self._store.read(market, tf, lo, hi)
        if tf.name not in DERIVABLE:
            return rows
        result = await derive_candles(self._store, market, tf, lo, hi)
        if not result.candles:
            return rows
        return merged((c for c in result.candles if lo <= c.start_ms < hi), rows)

    async def _closed_range(
        self,
        market: str,
        tf: Timeframe,
        lo: int,
        hi: int,
        now: int,
        priority: Priority,
        trace: Trace,
    ) -> list[Candle]:
        """Closed candles starting in ``[lo, hi)``: memory, else store (stored or derived
        from 1m), else upstream for exactly the uncovered pages."""
        if hi <= lo:
            return []
        served_from = served_since(tf, now)
        if served_from is not None and lo < served_from:
            # collect() leaves that part out: unknown, and said so, never taken for empty
            trace.unserved_before_ms = served_from
        key = (market, tf.key)
        cached = self.memory.get(key, lo, hi)
        if cached is not None:
            trace.used("memory")
            return cached
        store = self._store
        missing, derived = await self._missing(market, tf, lo, hi, served_from)
        if missing and not trace.stale:  # upstream failed in this read: not again
            # Overlapping fetches of a series take turns: a second caller waits, then finds
            # the pages stored, so concurrent requests make one upstream call per missing
            # page. What is stored is read without the lock: no reader waits behind
            # another's fetch, nor a fetch behind one elsewhere in the series.
            span = (min(a for a, _ in missing), max(b for _, b in missing))
            async with self.series_locks.hold(key, *span):
                missing, derived = await self._missing(market, tf, lo, hi, served_from)
                if missing:
                    await self._collect(market, tf, missing, now, priority, trace)
        rows = await store.read(market, tf, lo, hi)
        trace.used("database")
        if derived:
            rows = merged(derived, rows)
        if not trace.stale:
            self.memory.put(key, lo, hi, rows)
        return rows

    async def _missing(
        self, market: str, tf: Timeframe, lo: int, hi: int, served_from: int | None
    ) -> tuple[list[tuple[int, int]], list[Candle]]:
        """The parts of ``[lo, hi)`` neither stored nor derivable from stored 1m, and the
        candles derived for the rest. Before ``served_from`` (1s: upstream's horizon)
        nothing can be fetched, so nothing there counts as missing."""
        coverage = await self._store.coverage(market, tf)
        derived: list[Candle] = []
        missing = coverage.gaps(max(lo, served_from or lo), hi)
        if missing and tf.name in DERIVABLE:
            result = await derive_candles(self._store, market, tf, lo, hi)
            if result.candles or result.covered.ranges:
                derived = [c for c in result.candles if lo <= c.start_ms < hi]
                missing = _subtract(missing, result.covered)
        return missing, derived

    async def _collect(
        self,
        market: str,
        tf: Timeframe,
        missing: list[tuple[int, int]],
        now: int,
        priority: Priority,
        trace: Trace,
    ) -> None:
        """Backfill ``missing`` into the store (the series lock held)."""
        try:
            summary = await collect(
                MarketsFromCache(self._client, self._markets),
                self._store,
                [market],
                tf,
                since_ms=min(a for a, _ in missing),
                until_ms=max(b for _, b in missing),
                now_ms=now,
                priority=priority,
                leases=self._leases,
            )
        except RetryLaterError as exc:  # upstream cannot answer now: what is stored, stale
            trace.failed(exc)
        else:
            trace.calls += summary.upstream_calls
            trace.pages += summary.upstream_calls
            if summary.upstream_calls:
                trace.used("upstream")
            if summary.delisted:
                trace.delisted = True
                await self._learn_delisted(market)


def _to_ms(value: str | int, name: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return parse_time(value)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{name}: {exc}") from None


def _subtract(ranges: list[tuple[int, int]], covered: Coverage) -> list[tuple[int, int]]:
    left: list[tuple[int, int]] = []
    for a, b in ranges:
        left.extend(covered.gaps(a, b))
    return left


def _call_bound(count: int) -> int:
    """The upstream calls a cold ``count`` read may make: a page per 200, and one more for
    the forming candle (or upstream's clock)."""
    return math.ceil(count / MAX_PAGE) + 1
