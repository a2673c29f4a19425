"""Bounded in-memory candle windows (pure).

One window per (market, timeframe): a contiguous range ``[lo, hi)`` of closed windows known
complete, with the candles inside it. Windows are evicted least-recently-used across every
series once the total number of candles exceeds the bound, and a single series never holds
more than ``per_series`` candles (the oldest are dropped first).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from ._records import Candle

__all__ = ["CandleMemory", "MemoryStatistics"]

SeriesKey = tuple[str, str]  # (market, Timeframe.key)


@dataclass(slots=True)
class _Window:
    lo: int
    hi: int
    candles: list[Candle]
    starts: list[int]


@dataclass(frozen=True, slots=True)
class MemoryStatistics:
    series: int
    candles: int
    hits: int
    misses: int
    evictions: int


class CandleMemory:
    """LRU-bounded candle windows. Not thread-safe: one event loop owns it."""

    def __init__(self, *, max_candles: int = 500_000, per_series: int = 20_000) -> None:
        self._max_candles = max_candles
        self._per_series = per_series
        self._windows: OrderedDict[SeriesKey, _Window] = OrderedDict()
        self._total = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Candle] | None:
        """Candles with ``start_ms <= start < end_ms`` if memory covers that whole range,
        else None (a miss)."""
        window = self._windows.get(key)
        if window is None or start_ms < window.lo or end_ms > window.hi:
            self._misses += 1
            return None
        self._windows.move_to_end(key)
        self._hits += 1
        left = bisect.bisect_left(window.starts, start_ms)
        right = bisect.bisect_left(window.starts, end_ms)
        return window.candles[left:right]

    def latest(self, key: SeriesKey, count: int, end_ms: int) -> list[Candle] | None:
        """The ``count`` newest candles starting before ``end_ms`` if memory holds that many
        inside its complete range and the range reaches ``end_ms``, else None."""
        window = self._windows.get(key)
        if window is None or window.hi < end_ms:
            self._misses += 1
            return None
        right = bisect.bisect_left(window.starts, end_ms)
        if right < count:
            self._misses += 1
            return None
        self._windows.move_to_end(key)
        self._hits += 1
        return window.candles[right - count : right]

    def covered(self, key: SeriesKey) -> tuple[int, int] | None:
        window = self._windows.get(key)
        return None if window is None else (window.lo, window.hi)

    def put(self, key: SeriesKey, lo: int, hi: int, candles: Sequence[Candle]) -> None:
        """Remember that ``[lo, hi)`` is complete with ``candles`` (ascending). Joins the
        existing window when the ranges touch or overlap, replaces it otherwise."""
        if hi <= lo:
            return
        window = self._windows.get(key)
        if window is not None and lo <= window.hi and window.lo <= hi:
            merged = {c.start_ms: c for c in window.candles}
            merged.update((c.start_ms, c) for c in candles)
            lo, hi = min(lo, window.lo), max(hi, window.hi)
            rows = [merged[s] for s in sorted(merged)]
        else:
            rows = list(candles)
        if window is not None:
            self._total -= len(window.candles)
        if len(rows) > self._per_series:
            # Keep the newest: charts and bots ask for recent candles far more often.
            rows = rows[-self._per_series :]
            lo = rows[0].start_ms
        self._windows[key] = _Window(lo, hi, rows, [c.start_ms for c in rows])
        self._windows.move_to_end(key)
        self._total += len(rows)
        self._evict()

    def _evict(self) -> None:
        while self._total > self._max_candles and len(self._windows) > 1:
            _, window = self._windows.popitem(last=False)
            self._total -= len(window.candles)
            self._evictions += 1

    def clear(self) -> None:
        """Forget every window (hit and miss counts stay)."""
        self._windows.clear()
        self._total = 0

    def statistics(self) -> MemoryStatistics:
        return MemoryStatistics(
            len(self._windows), self._total, self._hits, self._misses, self._evictions
        )
