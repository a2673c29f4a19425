"""Upstream's clock, estimated from what its replies say (pure: evidence in, time out).

Two kinds of evidence bound the offset between upstream's clock and the local wall clock:
a tick time (a trade, book or candle tick cannot be from upstream's future) bounds it from
below, and a ``Date`` header (upstream's clock floored to the second, read while the reply
was made) bounds it from both sides, widened by the round trip.
"""

from __future__ import annotations

import email.utils
from collections.abc import Awaitable, Callable, Iterable

__all__ = ["CLOCK_SLACK_MS", "UpstreamClock"]

# How far the local clock may run ahead of upstream's before ranges that end in the past
# could still reach the forming candle.
CLOCK_SLACK_MS = 3_600_000


class UpstreamClock:
    """Bounds on (upstream clock - local wall clock) in ms, and the estimate they give.
    ``wall_ms`` is the local wall clock (UTC epoch ms)."""

    def __init__(self, wall_ms: Callable[[], int]) -> None:
        self._wall_ms = wall_ms
        self._offset_low: float | None = None
        self._offset_high: float | None = None
        self.heard = False  # whether upstream told its time (a Date header) yet

    def now_ms(self) -> int:
        """Best estimate of upstream's clock in UTC epoch ms: the local wall clock, moved
        only as far as the evidence demands — up to the newest tick seen, down to the latest
        ``Date`` header plus one second. Without evidence, the local wall clock."""
        offset = 0.0
        if self._offset_low is not None:
            offset = max(offset, self._offset_low)
        if self._offset_high is not None:
            offset = min(offset, self._offset_high)
        return int(self._wall_ms() + offset)

    async def synced(self, ask: Callable[[], Awaitable[object]], until_ms: int | None) -> int:
        """``now_ms()``, after ``ask()`` (one request whose reply tells upstream's time)
        unless a reply told it already or the range ending at ``until_ms`` lies over an
        hour back, where the forming candle cannot be reached; raises as ``ask`` does."""
        now = self.now_ms()
        if self.heard or (until_ms is not None and until_ms < now - CLOCK_SLACK_MS):
            return now
        await ask()
        self.heard = True  # even if the reply had no Date: ask once, not always
        return self.now_ms()

    def saw_date(self, header: str, rtt_s: float) -> None:
        """Learn from a reply's ``Date`` header that came back ``rtt_s`` after sending;
        a header that does not parse is ignored."""
        try:
            date_ms = email.utils.parsedate_to_datetime(header).timestamp() * 1000
        except (TypeError, ValueError):
            return
        self.heard = True
        wall = self._wall_ms()
        self._bound(low=date_ms - wall, high=date_ms + 1000 - (wall - rtt_s * 1000))

    def saw_ticks(self, upstream_ms: Iterable[int]) -> None:
        """Learn that upstream's clock has reached the newest of ``upstream_ms`` (the ticks
        of one answer; none teaches nothing)."""
        newest = max(upstream_ms, default=None)
        if newest is not None:
            self._bound(low=newest - self._wall_ms(), high=None)

    def _bound(self, *, low: float, high: float | None) -> None:
        if self._offset_high is not None and low > self._offset_high + 1000:
            # The bounds contradict each other: a clock jumped; start over from now.
            self._offset_low = self._offset_high = None
        if self._offset_low is None or low > self._offset_low:
            self._offset_low = low
        if high is not None and (self._offset_high is None or high < self._offset_high):
            self._offset_high = high
