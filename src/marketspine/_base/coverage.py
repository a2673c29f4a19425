"""Coverage: which candle-start ranges of one series are known complete (pure).

"No row in the database" means nothing by itself on Upbit, because a window without trades
has no candle. So the store records which ``[start, end)`` ranges of candle **start** times
were fetched, including ranges that turned out to hold no candle at all, plus the point
before which the market has no candles at all (its listing, once a backfill reached it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Coverage", "Range"]

Range = tuple[int, int]  # [start_ms, end_ms) of candle start times


def _normalize(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted, disjoint, non-touching ranges; empty ones dropped."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass(frozen=True, slots=True)
class Coverage:
    """An immutable set of half-open ``[start, end)`` ranges of candle start times known to be
    complete, and ``listing_ms``: no candle starts before it (None while unknown).

    Build one with ``Coverage.of(ranges)``; every operation returns a new Coverage.
    """

    ranges: tuple[Range, ...] = ()
    listing_ms: int | None = None

    @classmethod
    def of(cls, ranges: Iterable[Range], listing_ms: int | None = None) -> Coverage:
        """A Coverage of ``ranges`` in any order, overlapping or touching ones merged."""
        return cls(_normalize(ranges), listing_ms)

    def add(self, start_ms: int, end_ms: int) -> Coverage:
        """This coverage plus ``[start_ms, end_ms)``."""
        return Coverage(_normalize((*self.ranges, (start_ms, end_ms))), self.listing_ms)

    def union(self, other: Coverage) -> Coverage:
        """Both coverages together; the later listing wins (both statements hold)."""
        return Coverage(
            _normalize((*self.ranges, *other.ranges)),
            _later(self.listing_ms, other.listing_ms),
        )

    def with_listing(self, listing_ms: int) -> Coverage:
        """This coverage knowing that no candle starts before ``listing_ms``."""
        return Coverage(self.ranges, _later(self.listing_ms, listing_ms))

    def subtract(self, start_ms: int, end_ms: int) -> Coverage:
        """This coverage without ``[start_ms, end_ms)`` (the listing is kept)."""
        if start_ms >= end_ms:
            return self
        kept: list[Range] = []
        for start, end in self.ranges:
            if end <= start_ms or start >= end_ms:
                kept.append((start, end))
                continue
            if start < start_ms:
                kept.append((start, start_ms))
            if end > end_ms:
                kept.append((end_ms, end))
        return Coverage(tuple(kept), self.listing_ms)

    def gaps(self, start_ms: int, end_ms: int) -> list[Range]:
        """The parts of ``[start_ms, end_ms)`` not covered, ascending. Everything before the
        listing counts as covered."""
        if self.listing_ms is not None:
            start_ms = max(start_ms, self.listing_ms)
        found: list[Range] = []
        cursor = start_ms
        for start, end in self.ranges:
            if end <= cursor:
                continue
            if start >= end_ms:
                break
            if start > cursor:
                found.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < end_ms:
            found.append((cursor, end_ms))
        return found

    def contains(self, start_ms: int, end_ms: int) -> bool:
        """True when every part of ``[start_ms, end_ms)`` is covered (an empty range is)."""
        return not self.gaps(start_ms, end_ms)

    @property
    def total_ms(self) -> int:
        """Total length of the covered ranges (the listing's open-ended past not counted)."""
        return sum(end - start for start, end in self.ranges)


def _later(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
