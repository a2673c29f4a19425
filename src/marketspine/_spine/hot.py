"""Hot windows: the candle windows ``Spine.preload`` declared, and those the usage learner
found polled, kept fresh by a keeper that refetches each one once its candle has closed on
upstream's clock. A learned window is released when its polling stops; a declared one
stays.

Where the trade stream proves a close (the market is watched and every trade of the window
was seen, see ``_live.closes``), the keeper takes the candle from it and asks upstream
nothing for that series; the others are fetched, one page per market, as before.

A read of a kept-hot series that lands after a close but before the keeper has put it in
memory (about 0.2 s from the stream, 0.26 s fetched) waits for it (``wait_for_close``, at
most ``HOT_READ_WAIT_S``) instead of asking upstream for the same candle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._base.timeframes import Timeframe
from .._budget.rules import Priority
from ..errors import RetryLaterError
from .result import CandleResult

__all__ = ["HOT_READ_WAIT_S", "HOT_SETTLE_MS", "LIVE_CLOSE_WAIT_S", "HotWindow", "HotWindows"]

logger = logging.getLogger("marketspine")

# A little after the close, so the closed candle is final upstream.
HOT_SETTLE_MS = 200

# How long the keeper waits for the trade stream to prove a close (a trade after it to
# arrive) before asking upstream instead. A busy market proves it within milliseconds; a
# quiet one may not trade for minutes, and its close is fetched after this.
LIVE_CLOSE_WAIT_S = 1.0

# How long a read waits for a close the keeper is about to put in memory before asking
# upstream itself: past the settle margin and a stream proof or page's round trip.
HOT_READ_WAIT_S = 0.5

# Reads ``count`` closed candles of (market, timeframe) at a priority.
ReadClosed = Callable[[str, Timeframe, int, Priority], Awaitable[CandleResult]]
# Puts the closed candle of (market, timeframe) starting at ``start_ms`` into memory from the
# trade stream once it proves it (waiting as long as it takes); False when it cannot.
CloseLive = Callable[[str, Timeframe, int], Awaitable[bool]]


async def _never_live(market: str, tf: Timeframe, start_ms: int) -> bool:
    return False


@dataclass
class HotWindow:
    """A preloaded window: how many closed candles to hold, and the start of the candle that
    was forming when it was last fetched (a close after that makes it due)."""

    tf: Timeframe
    count: int
    forming_ms: int
    learned: bool = False  # held because clients poll it, not declared by preload
    failed: bool = False  # the keeper's last attempt at a close failed (retried later)


class HotWindows:
    """The hot windows by (market, timeframe name). ``upstream_now_ms`` is upstream's clock;
    ``read_closed`` refetches a window (through ``Spine.candles``, so it is accounted)."""

    def __init__(
        self,
        upstream_now_ms: Callable[[], int],
        read_closed: ReadClosed,
        *,
        each_round: Callable[[], None] = lambda: None,
        close_live: CloseLive = _never_live,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # bounds a read's wait
    ) -> None:
        self._now_ms = upstream_now_ms
        self._read_closed = read_closed
        self._close_live = close_live
        self._sleep = sleep
        self.closes_live = 0  # closes taken from the trade stream
        self.closes_fetched = 0  # closes read through ``read_closed`` (memory, store, REST)
        self.reads_waited = 0  # reads that waited for a close the keeper was about to put
        self.reads_waited_in_vain = 0  # ... and went on without it (bound, failure, release)
        self._each_round = each_round  # called as the keeper wakes (releasing idle windows)
        self._windows: dict[tuple[str, str], HotWindow] = {}
        self._changed = asyncio.Event()
        self._stopped = False  # the keeper ran and stopped (the Spine closed)
        self._news = asyncio.Event()  # set (and replaced) when a close landed or failed

    def hold(
        self, market: str, tf: Timeframe, count: int, forming_ms: int, *, learned: bool = False
    ) -> None:
        """Keep ``count`` closed candles of ``market`` hot (the larger count when held
        already); ``forming_ms`` starts the candle that was forming when they were read.
        A window both declared and learned counts as declared."""
        key = (market, tf.name)
        known = self._windows.get(key)
        count = max(count, known.count if known else 0)
        learned = learned and (known is None or known.learned)
        self._windows[key] = HotWindow(tf, count, forming_ms, learned)

    def release(self, market: str, timeframe: str) -> bool:
        """Stop keeping a learned window hot; returns whether one was released."""
        known = self._windows.get((market, timeframe))
        if known is None or not known.learned:
            return False
        del self._windows[(market, timeframe)]
        self._tell_waiters()
        return True

    def windows(self) -> dict[tuple[str, str], HotWindow]:
        """The windows kept hot, by (market, timeframe name)."""
        return dict(self._windows)

    async def preload(
        self, wanted: list[tuple[str, Timeframe, int]], now_ms: int, priority: Priority
    ) -> dict[str, dict[str, int]]:
        """Read each wanted (market, timeframe, closed candles) at ``priority`` and hold it
        hot; ``now_ms`` is upstream's clock. Returns {market: {timeframe: candles held}}."""
        reads = (self._read_closed(code, tf, count, priority) for code, tf, count in wanted)
        results = await asyncio.gather(*reads, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, RetryLaterError):
                raise result
        held: dict[str, dict[str, int]] = {}
        for (code, tf, count), result in zip(wanted, results, strict=True):
            # One upstream cannot answer now, nothing held: held hot all the same (none yet),
            # the keeper reads it once upstream answers.
            self.hold(code, tf, count, tf.floor(now_ms))
            count_held = 0 if isinstance(result, BaseException) else len(result)
            held.setdefault(code, {})[tf.name] = count_held
        self.changed()
        return held

    def changed(self) -> None:
        """Windows were added: the keeper looks at them at once."""
        self._changed.set()

    async def keep(self) -> None:
        """Refresh every hot window once a candle has closed (upstream clock) since it was
        last fetched; runs until cancelled. Due-ness is judged from what each window holds,
        not from when the keeper last woke, so a clock jump or a stalled loop cannot skip a
        close."""
        try:
            await self._keep()
        finally:
            self._stopped = True
            self._tell_waiters()

    async def _keep(self) -> None:
        while True:
            self._changed.clear()
            self._each_round()
            settled = self._now_ms() - HOT_SETTLE_MS
            due = [
                (market, window)
                for (market, _), window in self._windows.items()
                if window.tf.floor(settled) > window.forming_ms
            ]
            if due and await self._refresh(due):
                continue
            next_due = min(
                (w.tf.next_start(w.forming_ms) for w in self._windows.values()),
                default=settled + 1000,
            )
            # At most a second at a time, so a clock that jumps or runs fast is noticed; a
            # failed refresh is retried no sooner than that.
            wait_s = 1.0 if due else min(max(0.0, (next_due - settled) / 1000), 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._changed.wait()

    async def _refresh(self, due: list[tuple[str, HotWindow]]) -> bool:
        """Take the due windows' closes from the trade stream where it proves them, fetch
        the others; True when all of them succeeded."""
        now = self._now_ms()

        async def live_or_fetched(market: str, window: HotWindow) -> bool:
            # Only a window that is the one close since the last refresh: the stream keeps
            # the candle of the last closed window alone.
            single = window.tf.next_start(window.forming_ms) == window.tf.floor(now)
            held = (single and await self._take_live(market, window)) or await self._fetch(
                market, window, now
            )
            window.failed = not held  # reads do not wait for its retry
            self._tell_waiters()
            return held

        # Minutes first: the longer timeframes of the same market (3m to 4h, 1d) are then
        # built from the stored minutes, so a market polled in several timeframes costs one
        # page per close, not one per timeframe. Each wait for the stream runs beside the
        # fetches, so it delays none of the others.
        done: list[bool] = []
        for minutes in (True, False):
            batch = [(m, w) for m, w in due if (w.tf.name == "1m") == minutes]
            done += await asyncio.gather(*(live_or_fetched(m, w) for m, w in batch))
        return all(done)

    async def _take_live(self, market: str, window: HotWindow) -> bool:
        """Whether the trade stream proved ``window``'s close within ``LIVE_CLOSE_WAIT_S``
        (its candle now in memory)."""
        try:
            async with asyncio.timeout(LIVE_CLOSE_WAIT_S):
                taken = await self._close_live(market, window.tf, window.forming_ms)
        except TimeoutError:
            return False
        if taken:
            window.forming_ms = window.tf.next_start(window.forming_ms)
            self.closes_live += 1
        return taken

    async def _fetch(self, market: str, window: HotWindow, now: int) -> bool:
        """Read ``window``'s closed candles as of ``now``; True when that succeeded."""
        try:
            result = await self._read_closed(market, window.tf, window.count, Priority.HIGH)
        except RetryLaterError:  # upstream cannot answer now and nothing is held: as stale
            return False
        except Exception as exc:  # keep the others hot; this one is tried again after a pause
            logger.error("refreshing hot window %s %s failed: %s", market, window.tf.name, exc)
            return False
        if result.meta.stale:  # served from the store while upstream is down
            return False
        window.forming_ms = window.tf.floor(now)
        self.closes_fetched += 1
        return True

    def close_pending(self, market: str, tf: Timeframe, now_ms: int) -> bool:
        """Whether ``market``'s ``tf`` is kept hot and a window closed (as of upstream's
        ``now_ms``) that the keeper has not put in memory yet but is about to."""
        window = self._windows.get((market, tf.name))
        return (
            not self._stopped
            and window is not None
            and not window.failed
            and tf.floor(now_ms) > window.forming_ms
        )

    async def wait_for_close(self, market: str, tf: Timeframe, now_ms: int) -> bool:
        """Wait, at most ``HOT_READ_WAIT_S``, while ``close_pending``: until the close is in
        memory, the keeper's attempt failed, the window was released or the keeper stopped.
        Returns whether it waited."""
        if not self.close_pending(market, tf, now_ms):
            return False
        self.reads_waited += 1
        self.changed()  # the keeper looks at once, not at its next planned wake
        bound = asyncio.ensure_future(self._sleep(HOT_READ_WAIT_S))
        try:
            while self.close_pending(market, tf, now_ms) and not bound.done():
                news = asyncio.ensure_future(self._news.wait())
                try:
                    await asyncio.wait({news, bound}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    news.cancel()
        finally:
            bound.cancel()
        window = self._windows.get((market, tf.name))
        if window is None or tf.floor(now_ms) > window.forming_ms:  # the close is not in
            self.reads_waited_in_vain += 1
        return True

    def _tell_waiters(self) -> None:
        """Wake every waiting read to look again."""
        self._news.set()
        self._news = asyncio.Event()
