"""``collect``'s progress as plain lines, for a stderr that is no terminal: a pipe, a
supervisor's or a CI job's log. A long backfill runs for minutes at the rate-limit ceiling;
without these it would print nothing until the end there. One line at most every
``every_s`` seconds, no ANSI codes, nothing on stdout (``--json`` stays one line)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._store.backfill import ProgressEvent

__all__ = ["DEFAULT_EVERY_S", "ProgressLines"]

DEFAULT_EVERY_S = 10.0
_NAMED_UP_TO = 3  # more markets than this are counted, not named, so a line stays short


@dataclass(slots=True)
class _Market:
    done_ms: int = 0
    total_ms: int = 0
    pages: int = 0
    candles: int = 0
    finished: bool = False


class ProgressLines:
    """The ``progress`` callback for ``collect``: from the first page event ``every_s``
    seconds (by ``clock``) after it was made, and then at most every ``every_s`` seconds,
    ``write`` gets one line: share of the range covered, candles and pages so far, candles/s,
    markets done, elapsed and ETA. ``every_s`` <= 0 writes nothing. Lines come from page
    events, so a run that stores no page writes none."""

    def __init__(
        self,
        write: Callable[[str], None],
        markets: Sequence[str],
        timeframe: str,
        *,
        every_s: float = DEFAULT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._markets = list(dict.fromkeys(markets))  # collect dedupes them too
        self._timeframe = timeframe
        self._every_s = every_s
        self._clock = clock
        self._started = clock()
        self._next_at = self._started + every_s
        self._seen: dict[str, _Market] = {}

    def __call__(self, event: ProgressEvent) -> None:
        market = self._seen.setdefault(event.market, _Market())
        market.done_ms, market.total_ms = event.done_ms, event.total_ms
        market.pages, market.candles = event.pages, event.candles_written
        market.finished = event.finished
        if self._every_s <= 0:
            return
        now = self._clock()
        if now < self._next_at:
            return
        # From now, not from the last due time: a stall does not cause a burst of lines.
        self._next_at = now + self._every_s
        try:
            self._write(self.line(now))
        except OSError:  # the log went away (a closed pipe): the backfill goes on without it
            self._every_s = 0.0

    def line(self, now: float) -> str:
        """The progress line as of ``now`` (a ``clock`` reading)."""
        seen = self._seen.values()
        total_ms = sum(m.total_ms for m in seen)
        share = sum(m.done_ms for m in seen) / total_ms if total_ms else 1.0
        # Until every market has sent its first page, the share is of the known part only.
        share *= len(self._seen) / max(len(self._markets), 1)
        candles = sum(m.candles for m in seen)
        elapsed = max(now - self._started, 0.0)
        rate = candles / elapsed if elapsed > 0 else 0.0
        eta = _duration(elapsed * (1 - share) / share) if share > 0 else "unknown"
        names = (
            " ".join(self._markets)
            if len(self._markets) <= _NAMED_UP_TO
            else f"{len(self._markets)} markets"
        )
        finished = sum(m.finished for m in seen)
        return (
            f"marketspine: collect {self._timeframe} {names}: {share:.1%} of the range, "
            f"{candles:,} candles in {sum(m.pages for m in seen):,} pages, "
            f"{rate:,.0f} candles/s, {finished} of {len(self._markets)} markets done, "
            f"{_duration(elapsed)} elapsed, ETA {eta}"
        )


def _duration(seconds: float) -> str:
    """``45s``, ``8m 30s``, ``2h 05m``: what a log reader takes in at a glance."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
