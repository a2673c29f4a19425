"""Candle kinds of ``Spine.stream``: the forming candle as trades update it, and the closed
candle once its window has closed.

Upbit streams candles only for some timeframes, and its candle frames never say when a
candle is final. So a stream consumer follows the trade stream instead: a
``CandleFollower`` (pure) builds the forming candle from trades on top of upstream's forming
candle, and says which windows have closed since it last looked; those closed candles are
then read like any other closed candle (memory, store or one REST page), so a
``ClosedCandle`` always equals the REST candle of its window, volume included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .._base.timeframes import Timeframe
from ..errors import RetryLaterError
from ..records import Candle, Trade
from .state import LiveState

__all__ = [
    "CLOSE_SETTLE_MS",
    "CandleFollower",
    "ClosedCandle",
    "candle_events",
    "follow_candles",
]

# A window counts as closed this long after its end on upstream's clock, so that its
# candle is final upstream when it is read.
CLOSE_SETTLE_MS = 200
# A quiet market sends no trade to wake the loop: look at the clock at least this often.
_MAX_WAIT_S = 1.0

logger = logging.getLogger("marketspine")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class ClosedCandle:
    """The ``candle`` of a window that has closed: final, and equal to the REST candle of
    that window. (A plain ``Candle`` event from ``Spine.stream`` is a forming candle.)"""

    candle: Candle


class CandleFollower:
    """One market and timeframe of one stream consumer (pure: events in, candles out).

    ``seed`` is upstream's forming candle at ``now_ms`` (None when its window has no trade
    yet); windows that closed before ``now_ms`` are not reported. A window is reported
    closed when a trade in it was seen (however late it arrived), or, after trades were
    lost, whether or not one was seen.
    """

    def __init__(self, market: str, timeframe: Timeframe, seed: Candle | None, now_ms: int):
        self.market = market
        self.timeframe = timeframe
        self._state = LiveState(clock=lambda: 0.0)  # ages are never asked of this state
        self._state.track(market, timeframe, seed)
        self._start_ms = timeframe.floor(now_ms)  # the first window this consumer sees
        self._pending: set[int] = set()  # window starts seen trading, not yet reported
        if seed is not None and seed.start_ms >= self._start_ms:
            self._pending.add(seed.start_ms)
        self._reported_ms = self._start_ms - 1  # the newest window start reported
        self._lost_from: int | None = None  # trades lost: every window from here is due
        self._last: Candle | None = None

    def current(self) -> Candle | None:
        """The forming candle when it is new since last asked (None otherwise)."""
        candle = self._state.forming(self.market, self.timeframe.name)
        if candle is None or candle == self._last or candle.start_ms <= self._reported_ms:
            return None
        self._last = candle
        return candle

    def apply(self, event: object) -> Candle | None:
        """Take one stream event (trades and gaps of this market matter); returns the
        forming candle when the event changed it."""
        self._state.apply(event)
        if isinstance(event, Trade):
            start = self.timeframe.floor(event.ms)
            if start > self._reported_ms:  # a window already reported stays reported
                self._pending.add(start)
        lost = not self._state.tracking(self.market, self.timeframe.name)
        if lost and self._lost_from is None:
            self._lost_from = self._reported_ms + 1
        return self.current()

    def due(self, now_ms: int) -> tuple[int, int] | None:
        """``(lo, hi)`` to read when windows due for reporting have closed by ``now_ms``
        (pass what is read to ``done``), else None."""
        hi = self.timeframe.floor(now_ms)
        starts = [s for s in self._pending if s < hi]
        if self._lost_from is not None and self._lost_from < hi:
            starts.append(self._lost_from)
        return (min(starts), hi) if starts else None

    def done(self, hi: int, rows: Sequence[Candle]) -> list[Candle]:
        """Of ``rows`` (the closed candles read for ``due``'s range ending at ``hi``), the
        ones to report, ascending; the windows before ``hi`` are settled."""
        lost_from = self._lost_from
        wanted = [
            row
            for row in rows
            if row.start_ms > self._reported_ms
            and (
                row.start_ms in self._pending
                or (lost_from is not None and row.start_ms >= lost_from)
            )
        ]
        self._pending = {s for s in self._pending if s >= hi}
        if wanted:
            self._reported_ms = max(self._reported_ms, wanted[-1].start_ms)
        if lost_from is not None:
            tracking = self._state.tracking(self.market, self.timeframe.name)
            self._lost_from = None if tracking else max(hi, self._reported_ms + 1)
        return wanted

    def next_close_ms(self) -> int | None:
        """When (upstream clock, before the settle margin) the first window due for
        reporting closes; None while none is due."""
        starts = list(self._pending)
        if self._lost_from is not None:
            starts.append(self._lost_from)
        return self.timeframe.next_start(min(starts)) if starts else None


class EventSource(Protocol[T_co]):
    """What ``follow_candles`` needs of a stream listener."""

    def get_nowait(self) -> T_co | None: ...

    def __anext__(self) -> Awaitable[T_co]: ...


async def follow_candles(
    events: EventSource[T],
    followers: Sequence[CandleFollower],
    *,
    pass_trades: bool,
    upstream_now_ms: Callable[[], int],
    read_closed: Callable[[CandleFollower, int, int], Awaitable[Sequence[Candle]]],
) -> AsyncGenerator[T | Candle | ClosedCandle, None]:
    """The events of ``events`` (trades only with ``pass_trades``), each followed by the
    forming candles it changed, and ``ClosedCandle`` events as windows close on
    ``upstream_now_ms``. ``read_closed(follower, lo, hi)`` returns the candles of the
    closed windows starting in ``[lo, hi)``; when it raises RetryLaterError those windows
    are tried again a second later. Ends when ``events`` ends."""
    for follower in followers:
        candle = follower.current()
        if candle is not None:
            yield candle
    while True:
        now = upstream_now_ms() - CLOSE_SETTLE_MS
        retry = False
        for follower in followers:
            window = follower.due(now)
            if window is None:
                continue
            try:
                rows = await read_closed(follower, *window)
            except RetryLaterError as exc:
                logger.warning(
                    "closed %s %s candles not read yet: %s",
                    follower.market,
                    follower.timeframe.name,
                    exc,
                )
                retry = True
                continue
            for row in follower.done(window[1], rows):
                yield ClosedCandle(row)
        event = events.get_nowait()
        if event is None:
            closes = [ms for f in followers if (ms := f.next_close_ms()) is not None]
            wait_s = _MAX_WAIT_S
            if closes and not retry:
                wait_s = min(max(0.0, (min(closes) - now) / 1000), _MAX_WAIT_S)
            try:
                async with asyncio.timeout(wait_s):
                    event = await anext(events)
            except TimeoutError:
                continue
            except StopAsyncIteration:
                return
        if pass_trades or not isinstance(event, Trade):
            yield event
        market = getattr(event, "market", None)
        for follower in followers:
            if follower.market == market:
                candle = follower.apply(event)
                if candle is not None:
                    yield candle


async def candle_events(
    events: EventSource[T],
    codes: Sequence[str],
    frames: Sequence[Timeframe],
    *,
    pass_trades: bool,
    upstream_now_ms: Callable[[], int],
    forming: Callable[[str, Timeframe, int], Awaitable[Candle | None]],
    read_closed: Callable[[str, Timeframe, int, int], Awaitable[Sequence[Candle]]],
) -> AsyncGenerator[T | Candle | ClosedCandle, None]:
    """``follow_candles`` for every timeframe of ``frames`` of every market of ``codes``:
    ``forming(market, tf, now_ms)`` gives upstream's forming candle to start from and
    ``read_closed(market, tf, lo, hi)`` the closed candles starting in ``[lo, hi)``."""
    now = upstream_now_ms()
    followers = [
        CandleFollower(code, tf, await forming(code, tf, now), now)
        for code in codes
        for tf in frames
    ]

    async def read(follower: CandleFollower, lo: int, hi: int) -> Sequence[Candle]:
        return await read_closed(follower.market, follower.timeframe, lo, hi)

    followed = follow_candles(
        events,
        followers,
        pass_trades=pass_trades,
        upstream_now_ms=upstream_now_ms,
        read_closed=read,
    )
    async with aclosing(followed):
        async for item in followed:
            yield item
