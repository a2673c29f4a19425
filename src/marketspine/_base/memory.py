"""Bounded memory (pure): one budget in bytes, and the candle windows that live in it.

``MemoryBudget`` is the one byte budget shared by everything Spine keeps in memory — the
candle windows here and the live state (``_live.py``). Each holder charges it per entry
(a series' window, a market's live data) and is called back to drop an entry when the budget
evicts it: least recently used first, across every market and every holder.

Sizes are estimates from ``sys.getsizeof`` of a record and its fields, close to what the
objects really take (within 10%, measured with tracemalloc for windows read from the store
and for live trades). They must be close for every holder alike: when one holder's charge
runs high, handing its share to another raises RSS while the budget's total stays put.

``CandleMemory`` keeps one window per (market, timeframe): a contiguous range ``[lo, hi)`` of
closed windows known complete, with the candles inside it. A single series never holds more
than ``per_series`` candles (the oldest are dropped first).
"""

from __future__ import annotations

import bisect
import operator
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from ..errors import InvalidRequestError
from ..records import Candle

__all__ = [
    "DEFAULT_MEMORY_MB",
    "HELD_SHARE",
    "CandleMemory",
    "MemoryBudget",
    "MemoryBudgetStatistics",
    "MemoryStatistics",
    "record_bytes",
]

SeriesKey = tuple[str, str]  # (market, Timeframe.key)
DEFAULT_MEMORY_MB = 100.0
# Of memory_mb, for what is held. The rest is the working room of requests in flight and
# what the allocators keep around freed objects: about 20 MiB at a 68 MiB hold (`python -m
# bench memory`), so 0.7 keeps the peak under memory_mb above the baseline.
HELD_SHARE = 0.7
_POINTER = 8  # one slot of a list, tuple or dict
_INT = sys.getsizeof(1 << 40)  # a millisecond timestamp
_record_sizes: dict[object, int] = {}
_tuple_fields: dict[type, tuple[str, ...]] = {}


def record_bytes(record: object) -> int:
    """About how many bytes one record holds: the object and its fields, one level deep,
    and the items of its tuple fields (an orderbook's levels). Measured once per record
    type and depth: records of one type share their shape."""
    kind = type(record)
    fields: tuple[str, ...] = getattr(record, "__struct_fields__", ())
    tuples = _tuple_fields.get(kind)
    if tuples is None:
        tuples = _tuple_fields[kind] = tuple(
            name for name in fields if isinstance(getattr(record, name), tuple)
        )
    shape: object = (kind, *(len(getattr(record, name)) for name in tuples)) if tuples else kind
    size = _record_sizes.get(shape)
    if size is not None:
        return size
    size = sys.getsizeof(record)
    for name in fields:
        value = getattr(record, name)
        size += sys.getsizeof(value)
        if isinstance(value, tuple):
            size += sum(record_bytes(item) for item in value)
    if len(_record_sizes) < 4096:  # shapes are few; never let the cache itself grow
        _record_sizes[shape] = size
    return size


@dataclass(frozen=True, slots=True)
class MemoryBudgetStatistics:  # not the rate budget's BudgetStatistics: both are public
    limit_bytes: int
    used_bytes: int
    entries: int
    evictions: int


class MemoryBudget:
    """One byte budget over every in-memory holder, evicting least-recently-used entries
    across all of them. Not thread-safe: one event loop owns it.

    A holder ``register``s an eviction callback under its name, ``charge``s an entry's
    current size whenever it changes (which also marks it most recently used), ``touch``es
    it on a read, and ``release``s it when it drops the entry itself.
    """

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes <= 0:
            raise InvalidRequestError(f"memory budget must be > 0 bytes, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._entries: OrderedDict[tuple[str, Hashable], int] = OrderedDict()
        self._evictors: dict[str, Callable[[Hashable], None]] = {}
        self._used = 0
        self._evictions = 0

    @classmethod
    def megabytes(cls, mb: float) -> MemoryBudget:
        """The budget for a process that may use ``mb`` MiB above its baseline: held data
        gets ``HELD_SHARE`` of it, the rest is the working room of requests in flight
        (decoded pages, merges, buffers). Raises InvalidRequestError unless ``mb`` > 0."""
        if not mb > 0:
            raise InvalidRequestError(f"memory_mb must be > 0, got {mb}")
        return cls(int(mb * 2**20 * HELD_SHARE))

    @property
    def used_bytes(self) -> int:
        return self._used

    def register(self, holder: str, evict: Callable[[Hashable], None]) -> None:
        self._evictors[holder] = evict

    def charge(self, holder: str, key: Hashable, nbytes: int) -> None:
        """Set the size of ``holder``'s entry ``key``, mark it most recently used, and evict
        the least recently used entries (never this one) until the total fits."""
        entry = (holder, key)
        self._used += nbytes - self._entries.get(entry, 0)
        self._entries[entry] = nbytes
        self._entries.move_to_end(entry)
        while self._used > self.limit_bytes and len(self._entries) > 1:
            (victim_holder, victim_key), size = self._entries.popitem(last=False)
            if (victim_holder, victim_key) == entry:  # cannot happen: it is the newest
                self._entries[entry] = size
                break
            self._used -= size
            self._evictions += 1
            self._evictors[victim_holder](victim_key)

    def touch(self, holder: str, key: Hashable) -> None:
        """Mark an entry most recently used (a read)."""
        entry = (holder, key)
        if entry in self._entries:
            self._entries.move_to_end(entry)

    def release(self, holder: str, key: Hashable) -> None:
        """Forget an entry its holder dropped."""
        self._used -= self._entries.pop((holder, key), 0)

    def statistics(self) -> MemoryBudgetStatistics:
        return MemoryBudgetStatistics(
            self.limit_bytes, self._used, len(self._entries), self._evictions
        )


@dataclass(slots=True)
class _Window:
    lo: int
    hi: int
    candles: list[Candle]  # ascending by start_ms
    # Starts of windows put as provisional (built from the trade stream, not upstream's
    # own candle): answers by count may use them, reads of a range take them as a miss.
    provisional: tuple[int, ...] = ()  # ascending


_start = operator.attrgetter("start_ms")  # the bisect key of a window's candles


@dataclass(frozen=True, slots=True)
class MemoryStatistics:
    series: int
    candles: int
    hits: int
    misses: int
    evictions: int
    bytes: int = 0


def _window_bytes(candles: Sequence[Candle]) -> int:
    if not candles:
        return sys.getsizeof([])
    # Each candle: the record and a pointer to it in the window's list, and each distinct
    # market and timeframe string once: candles share them (interned), and counting them
    # per candle made evicting a window free less than it was charged (30% less, measured),
    # so RSS climbed while the budget's total stayed put.
    first = candles[0]
    market, timeframe = sys.getsizeof(first.market), sys.getsizeof(first.timeframe)
    per = record_bytes(first) - market - timeframe + _POINTER
    markets = len({id(c.market) for c in candles})
    timeframes = len({id(c.timeframe) for c in candles})
    return len(candles) * per + markets * market + timeframes * timeframe + sys.getsizeof([])


def _any_within(starts: tuple[int, ...], lo: int, hi: int) -> bool:
    """Whether any of ``starts`` (ascending) lies in ``[lo, hi)``."""
    at = bisect.bisect_left(starts, lo)
    return at < len(starts) and starts[at] < hi


class CandleMemory:
    """Candle windows in a byte budget (default ``DEFAULT_MEMORY_MB``, or the budget shared
    with the live state), least recently used series evicted first; ``max_candles`` adds
    a bound on the candle count. Not thread-safe: one event loop owns it."""

    _HOLDER = "candles"

    def __init__(
        self,
        *,
        budget: MemoryBudget | None = None,
        max_candles: int | None = None,
        per_series: int = 20_000,
    ) -> None:
        self.budget = budget or MemoryBudget.megabytes(DEFAULT_MEMORY_MB)
        self.budget.register(self._HOLDER, self._evicted)
        self._max_candles = max_candles
        self._per_series = per_series
        self._windows: OrderedDict[SeriesKey, _Window] = OrderedDict()
        self._bytes: dict[SeriesKey, int] = {}
        self._total = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Candle] | None:
        """Candles with ``start_ms <= start < end_ms`` if memory covers that whole range
        with upstream's own candles, else None (a miss)."""
        window = self._windows.get(key)
        if (
            window is None
            or start_ms < window.lo
            or end_ms > window.hi
            or _any_within(window.provisional, start_ms, end_ms)
        ):
            self._misses += 1
            return None
        self._windows.move_to_end(key)
        self.budget.touch(self._HOLDER, key)
        self._hits += 1
        left = bisect.bisect_left(window.candles, start_ms, key=_start)
        right = bisect.bisect_left(window.candles, end_ms, key=_start)
        return window.candles[left:right]

    def latest(self, key: SeriesKey, count: int, end_ms: int) -> list[Candle] | None:
        """The ``count`` newest candles starting before ``end_ms`` if memory holds that many
        inside its complete range and the range reaches ``end_ms``, else None."""
        window = self._windows.get(key)
        if window is None or window.hi < end_ms:
            self._misses += 1
            return None
        right = bisect.bisect_left(window.candles, end_ms, key=_start)
        if right < count:
            self._misses += 1
            return None
        self._windows.move_to_end(key)
        self.budget.touch(self._HOLDER, key)
        self._hits += 1
        return window.candles[right - count : right]

    def provisional(self, key: SeriesKey, start_ms: int, end_ms: int) -> int:
        """How many provisional candles the series holds starting in ``[start_ms, end_ms)``."""
        window = self._windows.get(key)
        if window is None:
            return 0
        marks = window.provisional
        return bisect.bisect_left(marks, end_ms) - bisect.bisect_left(marks, start_ms)

    def covered(self, key: SeriesKey) -> tuple[int, int] | None:
        window = self._windows.get(key)
        return None if window is None else (window.lo, window.hi)

    def put(
        self,
        key: SeriesKey,
        lo: int,
        hi: int,
        candles: Sequence[Candle],
        *,
        provisional: bool = False,
    ) -> None:
        """Remember that ``[lo, hi)`` is complete with ``candles`` (ascending): what was
        held in that range is replaced. Joins the existing window when the ranges touch or
        overlap, replaces it otherwise. ``provisional`` candles are not upstream's own (see
        ``get``); a later put of their range replaces them."""
        if hi <= lo:
            return
        window = self._windows.get(key)
        marked: set[int] = {c.start_ms for c in candles} if provisional else set()
        if window is not None and lo <= window.hi and window.lo <= hi:
            merged = {c.start_ms: c for c in window.candles if not lo <= c.start_ms < hi}
            merged.update((c.start_ms, c) for c in candles)
            marked |= {s for s in window.provisional if not lo <= s < hi}
            lo, hi = min(lo, window.lo), max(hi, window.hi)
            rows = sorted(merged.values(), key=_start)
        else:
            rows = list(candles)
        if window is not None:
            self._drop(key)
        # A single series never takes more than half the budget, so it cannot evict all else.
        empty = _window_bytes([])
        per_candle = max(1, _window_bytes(rows[:1]) - empty)
        cap = min(self._per_series, max(0, self.budget.limit_bytes // 2 - empty) // per_candle)
        if len(rows) > cap:
            # Keep the newest: charts and bots ask for recent candles far more often.
            rows = rows[-cap:] if cap > 0 else []
            if not rows:
                return
            lo = rows[0].start_ms
        marks = tuple(sorted(s for s in marked if s >= lo))
        self._windows[key] = _Window(lo, hi, rows, marks)
        self._windows.move_to_end(key)
        self._total += len(rows)
        marks_bytes = sys.getsizeof(marks) + len(marks) * _INT if marks else 0
        self._bytes[key] = _window_bytes(rows) + marks_bytes
        self.budget.charge(self._HOLDER, key, self._bytes[key])
        while (
            self._max_candles is not None
            and self._total > self._max_candles
            and len(self._windows) > 1
        ):
            oldest = next(iter(self._windows))
            self._drop(oldest)
            self._evictions += 1

    def drop_provisional(self, key: SeriesKey, start_ms: int) -> bool:
        """Forget the series' window when it holds a provisional candle starting at
        ``start_ms`` (it may be wrong); returns whether it did."""
        window = self._windows.get(key)
        if window is None or not _any_within(window.provisional, start_ms, start_ms + 1):
            return False
        self._drop(key)
        return True

    def _drop(self, key: SeriesKey) -> None:
        window = self._windows.pop(key, None)
        if window is not None:
            self._total -= len(window.candles)
        self._bytes.pop(key, None)
        self.budget.release(self._HOLDER, key)

    def _evicted(self, key: Hashable) -> None:
        """The budget dropped this series' window (it already forgot its size)."""
        window = self._windows.pop(key, None)  # type: ignore[call-overload]
        if window is not None:
            self._total -= len(window.candles)
            self._evictions += 1
        self._bytes.pop(key, None)  # type: ignore[call-overload]

    def clear(self) -> None:
        """Forget every window (hit and miss counts stay)."""
        for key in list(self._windows):
            self._drop(key)

    def statistics(self) -> MemoryStatistics:
        return MemoryStatistics(
            len(self._windows),
            self._total,
            self._hits,
            self._misses,
            self._evictions,
            sum(self._bytes.values()),
        )
