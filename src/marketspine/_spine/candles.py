"""Answering candle requests: bounded memory windows, then the store (stored candles, or
candles derived from stored 1m), then upstream for exactly the missing pages, merged.

The forming candle is never stored: it comes from the trade stream while the market is
tracked in the live state, else from one upstream call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from .._base.coverage import Coverage
from .._base.keyed_lock import KeyedLock
from .._base.markets import MarketCode
from .._base.memory import CandleMemory
from .._base.reach_back import reach_windows, read_back
from .._base.time import format_utc, parse_time
from .._base.timeframes import Timeframe, parse_timeframe
from .._budget.rules import Priority
from .._client.client import Client
from .._live.state import LiveState
from .._store.backfill import PageLeases, collect, fetch_page
from .._store.derive import DERIVABLE, derivable_ranges, derive_candles
from .._store.planner import MAX_PAGE, PageRequest, page_outcome
from .._store.sqlite import CandleStore
from .._upbit.horizon import SECONDS_HORIZON_MS, served_since
from ..errors import InvalidRequestError, RetryLaterError, UnknownMarketError
from ..records import Candle, MarketInfo
from .result import CandleResult, Trace, fill_gaps

__all__ = ["MAX_COUNT", "CandleReader", "MarketsFromCache"]

_ONE_MINUTE = parse_timeframe("1m")
_FAR_FUTURE_MS = 1 << 62
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
        # One fetch per series at a time; a series' lock exists only while it is in use.
        self.series_locks = KeyedLock()
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
            rows = await self._stored_tail(market, tf, count)
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

    async def _stored_tail(self, market: str, tf: Timeframe, count: int) -> list[Candle]:
        """The newest ``count`` stored (or derivable) candles, reading back in widening
        spans from the newest covered point."""
        ends = [(await self._store.coverage(market, tf)).ranges]
        if tf.name in DERIVABLE:
            ends.append((await self._store.coverage(market, _ONE_MINUTE)).ranges)
        spans = [r for ranges in ends for r in ranges]
        if not spans:
            return []
        oldest, hi = min(a for a, _ in spans), max(b for _, b in spans)

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
        if count is not None and (start is not None or end is not None):
            raise InvalidRequestError("give count, or start/end, not both")
        if start is None and end is not None:
            raise InvalidRequestError("end needs a start (or ask for a count of candles)")
        if count is None and start is None:
            count = 200
        if count is not None and not 1 <= count <= MAX_COUNT:
            raise InvalidRequestError(f"count must be 1..{MAX_COUNT}, got {count}")
        trace = Trace()
        early: list[Candle] | None = None
        if count is not None and not closed_only and not self._live.tracking(code, tf.name):
            # The forming-candle call comes first: its reply tells upstream's clock, so a
            # cold request needs no separate clock call (ceil(count/200) + 1 calls in all).
            early = await self._forming_rows(code, tf, priority, trace)
        until_ms = _to_ms(end, "end") if count is None and end is not None else None
        try:
            now = await self._client.synced_now_ms(code, until_ms=until_ms, priority=priority)
        except RetryLaterError:
            # Upstream cannot tell its clock now: our best estimate, and what is held.
            trace.stale = True
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
            rows = await self._latest_closed(code, tf, closed_wanted, now, priority, trace)
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
        return CandleResult(code, tf, candles, trace.meta(started, forming=forming is not None))

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
        except RetryLaterError:
            trace.stale = True
            return []
        trace.used("upstream")
        trace.calls += 1
        trace.pages += 1
        return rows

    async def _latest_closed(
        self, market: str, tf: Timeframe, count: int, now: int, priority: Priority, trace: Trace
    ) -> list[Candle]:
        """The ``count`` most recent closed candles (fewer only before the listing or the
        1s horizon). Pages backwards the way Upbit does: full pages of 200 with ``to`` = the
        oldest start seen, each page's span the coverage it proves; whatever the store
        already covers on the way is read instead of fetched."""
        if count <= 0:
            return []
        end = tf.floor(now)
        key = (market, tf.key)
        cached = self.memory.latest(key, count, end)
        if cached is not None:
            trace.used("memory")
            return cached
        async with self.series_locks.hold(key):
            rows, low = await self._walk_back(market, tf, count, end, now, priority, trace)
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
    ) -> tuple[list[Candle], int]:
        """Every closed candle in ``[low, end)`` for the highest ``low`` that holds at least
        ``count`` of them (or reaches the listing / horizon); returns ``(candles, low)``."""
        store = self._store
        position = end  # everything in [position, end) is known and gathered
        gathered: list[list[Candle]] = []  # newest chunk first
        held = 0
        attempt = 0  # reads of stored runs so far: each spans 4× the windows of the last
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
            if tf.unit == "second" and position <= now - SECONDS_HORIZON_MS:
                trace.unserved_before_ms = now - SECONDS_HORIZON_MS
                break
            request = PageRequest(position, MAX_PAGE)
            try:
                page, fetched = await fetch_page(
                    self._client, self._leases, market, tf, request, priority
                )
            except RetryLaterError:  # upstream cannot answer now: what is held, flagged stale
                trace.stale = True
                break
            trace.used("upstream")
            trace.calls += fetched  # a page another process fetched cost no call here
            trace.pages += 1
            outcome = page_outcome(tf, request, page, None)
            await store.write_page(
                market, tf, outcome.candles, outcome.covered, listing_ms=outcome.listing_ms
            )
            gathered.append(outcome.candles)
            held += len(outcome.candles)
            position = outcome.covered[0]
            if outcome.done:  # nothing older exists upstream
                if tf.unit == "second":  # or it is beyond the horizon: unknown, not empty
                    trace.unserved_before_ms = now - SECONDS_HORIZON_MS
                break
        return [c for chunk in reversed(gathered) for c in chunk], position

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
        by_start = {c.start_ms: c for c in result.candles if lo <= c.start_ms < hi}
        by_start.update((c.start_ms, c) for c in rows)
        return [by_start[s] for s in sorted(by_start)]

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
        # One fetch per series at a time: a second caller waits and then finds the pages
        # stored, so concurrent requests make one upstream call per missing page.
        async with self.series_locks.hold(key):
            store = self._store
            coverage = await store.coverage(market, tf)
            derived: list[Candle] = []
            missing = coverage.gaps(lo, hi)
            if missing and tf.name in DERIVABLE:
                result = await derive_candles(store, market, tf, lo, hi)
                if result.candles or result.covered.ranges:
                    derived = [c for c in result.candles if lo <= c.start_ms < hi]
                    missing = _subtract(missing, result.covered)
            if missing and not trace.stale:  # upstream failed in this read: not again
                try:
                    summary = await collect(
                        MarketsFromCache(self._client, self._markets),
                        store,
                        [market],
                        tf,
                        since_ms=min(a for a, _ in missing),
                        until_ms=max(b for _, b in missing),
                        now_ms=now,
                        priority=priority,
                        leases=self._leases,
                    )
                except RetryLaterError:  # upstream cannot answer now: what is stored, stale
                    trace.stale = True
                else:
                    trace.calls += summary.upstream_calls
                    trace.pages += summary.upstream_calls
                    if summary.upstream_calls:
                        trace.used("upstream")
                    if summary.delisted:
                        trace.delisted = True
                        await self._learn_delisted(market)
            rows = await store.read(market, tf, lo, hi)
            trace.used("database")
            if derived:
                by_start = {c.start_ms: c for c in derived}
                by_start.update((c.start_ms, c) for c in rows)
                rows = [by_start[s] for s in sorted(by_start)]
            if not trace.stale:
                self.memory.put(key, lo, hi, rows)
            return rows


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
