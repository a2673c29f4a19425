"""The usage learner: which candle series clients poll, learned from their own reads.

A bot polls ``candles(market, timeframe, count=n)`` on a rhythm; once a series has been asked
``learn_after`` times at intervals no longer than ``max_interval_s``, it is *learned* and the
Spine keeps it hot (``HotWindows``) as if it had been preloaded: the candle that has just
closed is fetched right at the close, before the next poll lands. A series not asked for
``idle_factor`` times its usual interval (at least ``min_idle_s``) is forgotten and no longer
costs upstream calls. At most ``limit`` series are tracked; the one polled longest ago goes
first. Pure: the clock is passed in; the Spine does the holding and releasing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PollLearner", "PolledSeries", "UsageStatistics"]

_SMOOTHING = 0.3  # weight of the newest interval in the running average


@dataclass
class PolledSeries:
    """One (market, timeframe) clients read by count: how much and how often."""

    market: str
    timeframe: str
    count: int  # the largest count asked
    polls: int
    last_s: float  # clock time of the last poll
    interval_s: float | None  # running average of the time between polls
    learned: bool = False
    hits: int = 0  # polls of the learned series answered from memory alone
    misses: int = 0  # polls of the learned series that needed the store or upstream

    def as_dict(self) -> dict[str, Any]:
        """As ``/api/status`` and the admin page show it."""
        return {
            "market": self.market,
            "timeframe": self.timeframe,
            "count": self.count,
            "interval_s": None if self.interval_s is None else round(self.interval_s, 3),
            "learned": self.learned,
            "hits": self.hits,
            "misses": self.misses,
        }


@dataclass(frozen=True, slots=True)
class UsageStatistics:
    tracked: int
    learned: int
    hits: int
    misses: int
    forgotten: int


class PollLearner:
    """Learns polled series from ``note`` calls; ``clock`` is monotonic seconds."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        limit: int = 256,
        learn_after: int = 3,
        max_interval_s: float = 900.0,
        idle_factor: float = 3.0,
        min_idle_s: float = 30.0,
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._learn_after = learn_after
        self._max_interval_s = max_interval_s
        self._idle_factor = idle_factor
        self._min_idle_s = min_idle_s
        self._series: dict[tuple[str, str], PolledSeries] = {}  # oldest poll first
        self._hits = self._misses = self._forgotten = 0
        self._dropped: list[PolledSeries] = []  # learned, dropped for room, not yet released

    def note(self, market: str, timeframe: str, count: int, *, from_memory: bool) -> bool:
        """One read of ``count`` candles; returns True when it makes the series learned."""
        now = self._clock()
        key = (market, timeframe)
        held = self._series.pop(key, None)  # re-inserted last: the dict stays in poll order
        if held is None:
            held = PolledSeries(market, timeframe, count, 0, now, None)
        else:
            gap = now - held.last_s
            held.interval_s = (
                gap
                if held.interval_s is None
                else (1 - _SMOOTHING) * held.interval_s + _SMOOTHING * gap
            )
            held.count = max(held.count, count)
            held.last_s = now
            if held.learned:
                if from_memory:
                    held.hits += 1
                    self._hits += 1
                else:
                    held.misses += 1
                    self._misses += 1
        held.polls += 1
        self._series[key] = held
        while len(self._series) > self._limit:
            oldest = next(iter(self._series))
            self._drop(oldest)
        newly = (
            not held.learned
            and held.polls >= self._learn_after
            and held.interval_s is not None
            and held.interval_s <= self._max_interval_s
        )
        held.learned = held.learned or newly
        return newly

    def release(self) -> list[PolledSeries]:
        """The learned series to stop keeping hot: those clients stopped polling (forgotten
        now) and those dropped for room since the last call."""
        now = self._clock()
        for series in [
            s for s in self._series.values() if s.learned and now - s.last_s > self._idle_after(s)
        ]:
            self._drop((series.market, series.timeframe))
        gone, self._dropped = self._dropped, []
        return gone

    def _idle_after(self, series: PolledSeries) -> float:
        return max(self._min_idle_s, self._idle_factor * (series.interval_s or 0.0))

    def _drop(self, key: tuple[str, str]) -> None:
        series = self._series.pop(key)
        if series.learned:
            self._forgotten += 1
            self._dropped.append(series)

    def series(self) -> list[PolledSeries]:
        """Every tracked series, most recently polled last."""
        return list(self._series.values())

    def statistics(self) -> UsageStatistics:
        learned = sum(1 for s in self._series.values() if s.learned)
        return UsageStatistics(
            len(self._series), learned, self._hits, self._misses, self._forgotten
        )
