"""Backfill planning (pure, no I/O): requested range minus coverage → gaps → pages.

Upbit's ``count=200`` returns the 200 most recent *existing* candles before the exclusive
``to``; windows without trades have no candle, so a page may reach far below the window
range we wanted. Pages therefore walk backwards: the next ``to`` is the oldest start received,
never ``to - 200 windows``. A page answers for ``[oldest start received, to)``; a page with
fewer candles than asked proves that nothing older exists at all, so it answers down to the
gap start (and, outside seconds candles, reveals the listing).

``GapCursor`` is a feed-events-in, read-requests-out state machine in the manner of h11:
the collector does the I/O and writes each ``PageOutcome`` to the store in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._coverage import Coverage, Range
from ._errors import InvalidRequestError
from ._records import Candle
from ._timeframes import Timeframe

__all__ = ["MAX_PAGE", "GapCursor", "PageOutcome", "PageRequest", "ceil_window", "plan_gaps"]

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


class GapCursor:
    """Pages backwards through one gap ``[start, end)`` of window starts.

    ``next_request()`` gives the next page to fetch (None once the gap is done);
    ``feed(candles)`` takes that page's answer (any order) and returns what to store.
    """

    def __init__(self, timeframe: Timeframe, gap: Range, *, page_size: int = MAX_PAGE) -> None:
        self.timeframe = timeframe
        self.start_ms, self.end_ms = gap
        self.position_ms = self.end_ms  # everything in [position_ms, end_ms) is done
        self._page_size = page_size
        self._pending: PageRequest | None = None
        # Seconds candles stop at Upbit's ~3-month horizon, which looks exactly like a
        # listing but moves every second; so a short seconds page proves nothing about listing.
        self._learns_listing = timeframe.unit != "second"

    @property
    def done(self) -> bool:
        return self.position_ms <= self.start_ms

    def next_request(self) -> PageRequest | None:
        """The next page to ask for, or None when the gap is complete."""
        if self.done:
            return None
        windows_left = self.timeframe.count_windows(self.start_ms, self.position_ms)
        # Asking for no more than the windows left makes a dense market's last page exact.
        self._pending = PageRequest(self.position_ms, max(1, min(self._page_size, windows_left)))
        return self._pending

    def feed(self, candles: Sequence[Candle]) -> PageOutcome:
        """Account for the answer to the last ``next_request()``.

        Returns the candles inside the gap (ascending) and the range the page proved complete.
        Raises InvalidRequestError when no request is pending.
        """
        request = self._pending
        if request is None:
            raise InvalidRequestError("GapCursor.feed() called without a pending next_request()")
        self._pending = None
        # Upbit never returns starts at or after `to`; dropping any keeps coverage exact anyway.
        before_to = sorted(
            {c.start_ms: c for c in candles if c.start_ms < request.to_ms}.values(),
            key=lambda c: c.start_ms,
        )
        oldest = before_to[0].start_ms if before_to else request.to_ms
        exhausted = len(before_to) < request.count  # nothing older exists upstream
        low = self.start_ms if exhausted or oldest <= self.start_ms else oldest
        listing = oldest if exhausted and self._learns_listing else None
        kept = [c for c in before_to if c.start_ms >= low]
        self.position_ms = low
        return PageOutcome(kept, (low, request.to_ms), listing, self.done)
