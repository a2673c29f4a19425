"""Backfill planning (pure, no I/O): requested range minus coverage → gaps → pages.

Upbit's ``count=200`` returns the 200 most recent *existing* candles before the exclusive
``to``; windows without trades have no candle, so a page may reach far below the window
range we wanted. Pages therefore walk backwards: the next ``to`` is the oldest start received,
never ``to - 200 windows``. A page answers for ``[oldest start received, to)``; a page with
fewer candles than asked proves that nothing older exists at all, so it answers down to the
gap start (and, outside seconds candles, reveals the listing).

A call costs the same for 1 candle or 200, so every page asks for a full 200 and everything
it returns is kept, even below the gap: the range it proves is stored with it, and the
neighbouring requests that follow cost nothing.

``GapCursor`` is a feed-events-in, read-requests-out state machine in the manner of h11,
walking one gap one page at a time. ``collect`` keeps several pages in flight instead
(``pipeline.MarketPipeline``, built on ``page_outcome``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._base.coverage import Coverage, Range
from .._base.timeframes import Timeframe
from ..errors import InvalidRequestError
from ..records import Candle

__all__ = [
    "MAX_PAGE",
    "GapCursor",
    "PageOutcome",
    "PageRequest",
    "ceil_window",
    "page_outcome",
    "plan_gaps",
]

MAX_PAGE = 200  # Upbit clamps larger counts to 200


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Ask upstream for the ``count`` newest candles starting strictly before ``to_ms``."""

    to_ms: int
    count: int


@dataclass(frozen=True, slots=True)
class PageOutcome:
    """What one page proved. ``candles`` (ascending) are exactly the candles of ``covered``;
    ``listing_ms`` is set when the page showed that no candle starts before it."""

    candles: list[Candle]
    covered: Range
    listing_ms: int | None
    done: bool


def ceil_window(timeframe: Timeframe, ms: int) -> int:
    """The first window start at or after ``ms``."""
    start = timeframe.floor(ms)
    return start if start == ms else timeframe.next_start(start)


def plan_gaps(
    coverage: Coverage, timeframe: Timeframe, since_ms: int, until_ms: int, now_ms: int
) -> list[Range]:
    """The uncovered parts of the candles starting in ``[since_ms, until_ms)``, ascending,
    aligned to window starts. The end is clamped to the start of the window forming at
    ``now_ms`` (upstream clock), so the forming candle is never asked for as closed.

    Raises InvalidRequestError when ``since_ms`` is not before ``until_ms``.
    """
    if since_ms >= until_ms:
        raise InvalidRequestError(
            f"empty time range: since ({since_ms}) must be before until ({until_ms})"
        )
    start = ceil_window(timeframe, since_ms)
    end = min(ceil_window(timeframe, until_ms), timeframe.floor(now_ms))
    if start >= end:
        return []
    return coverage.gaps(start, end)


def page_outcome(
    timeframe: Timeframe, request: PageRequest, candles: Sequence[Candle], floor_ms: int | None
) -> PageOutcome:
    """What the answer ``candles`` (any order) to ``request`` proves, every candle kept.

    A full page proves ``[oldest start received, to)``. A short page proves that nothing
    older exists upstream: it answers down to ``floor_ms`` (when given and lower) and, outside
    seconds candles, reveals the listing. ``done`` is set once the proof reaches ``floor_ms``
    or nothing older exists.
    """
    # Upbit never returns starts at or after `to`; dropping any keeps coverage exact anyway.
    before_to = sorted(
        {c.start_ms: c for c in candles if c.start_ms < request.to_ms}.values(),
        key=lambda c: c.start_ms,
    )
    oldest = before_to[0].start_ms if before_to else request.to_ms
    exhausted = len(before_to) < request.count  # nothing older exists upstream
    low = oldest if floor_ms is None or not exhausted else min(floor_ms, oldest)
    # Seconds candles stop at Upbit's ~3-month horizon, which looks exactly like a listing
    # but moves every second; so a short seconds page proves nothing about listing.
    listing = oldest if exhausted and timeframe.unit != "second" else None
    done = exhausted or (floor_ms is not None and low <= floor_ms)
    return PageOutcome(before_to, (low, request.to_ms), listing, done)


class GapCursor:
    """Pages backwards through one gap ``[start, end)`` of window starts.

    ``next_request()`` gives the next page to fetch (None once the gap is done);
    ``feed(candles)`` takes that page's answer (any order) and returns what to store:
    the whole page, which may reach below the gap.
    """

    def __init__(self, timeframe: Timeframe, gap: Range, *, page_size: int = MAX_PAGE) -> None:
        self.timeframe = timeframe
        self.start_ms, self.end_ms = gap
        self.position_ms = self.end_ms  # everything in [position_ms, end_ms) is done
        self._page_size = page_size
        self._pending: PageRequest | None = None

    @property
    def done(self) -> bool:
        return self.position_ms <= self.start_ms

    def next_request(self) -> PageRequest | None:
        """The next page to ask for, or None when the gap is complete."""
        if self.done:
            return None
        # Always a full page: it costs the same as one candle, and what lies below the gap
        # is stored too, so the next request nearby is free.
        self._pending = PageRequest(self.position_ms, self._page_size)
        return self._pending

    def feed(self, candles: Sequence[Candle]) -> PageOutcome:
        """Account for the answer to the last ``next_request()``.

        Returns every candle of the page (ascending) and the range the page proved complete.
        Raises InvalidRequestError when no request is pending.
        """
        request = self._pending
        if request is None:
            raise InvalidRequestError("GapCursor.feed() called without a pending next_request()")
        self._pending = None
        outcome = page_outcome(self.timeframe, request, candles, self.start_ms)
        self.position_ms = self.start_ms if outcome.done else outcome.covered[0]
        return PageOutcome(outcome.candles, outcome.covered, outcome.listing_ms, self.done)
