"""Building 3m…4h and 1d candles from stored 1m candles, with no upstream call.

Upbit's candles of every timeframe aggregate the trades of their window on the UTC grid, so a
bigger window's candle is the aggregate of its 1m candles: open of the first, close of the
last, the extremes, and the sums of volume and value (equal up to float rounding). A window
whose minutes hold no candle has no candle either. Only windows whose every minute is in the
1m coverage can be derived; anywhere else a missing 1m row might just be unfetched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .._base.coverage import Coverage, Range
from .._base.timeframes import Timeframe, parse_timeframe
from ..errors import InvalidRequestError
from ..records import Candle
from .planner import ceil_window
from .sqlite import CandleStore

__all__ = ["DERIVABLE", "Derived", "aggregate", "derivable_ranges", "derive_candles", "merged"]

DERIVABLE = ("3m", "5m", "10m", "15m", "30m", "1h", "4h", "1d")
_ONE_MINUTE = parse_timeframe("1m")


@dataclass(frozen=True, slots=True)
class Derived:
    """Derived candles (ascending) and the window-start ranges they answer for completely."""

    candles: list[Candle]
    covered: Coverage


def merged(under: Iterable[Candle], over: Iterable[Candle]) -> list[Candle]:
    """The candles of both, ascending by start; where both have a window, ``over``'s (stored
    ones over derived ones, a later fetch over what was stored)."""
    by_start = {c.start_ms: c for c in under}
    by_start.update((c.start_ms, c) for c in over)
    return [by_start[start] for start in sorted(by_start)]


def _check_target(target: Timeframe) -> Timeframe:
    if target.name not in DERIVABLE:
        raise InvalidRequestError(
            f"cannot derive {target.name} candles from 1m: derivable are {' '.join(DERIVABLE)}"
        )
    return target


def aggregate(minutes: Sequence[Candle], timeframe: Timeframe) -> list[Candle]:
    """The ``timeframe`` candles made of the ascending 1m candles ``minutes``.

    Returns one candle per window holding at least one 1m candle, ascending. Raises
    InvalidRequestError for a timeframe that is not derivable or input that is not 1m.
    """
    target = _check_target(timeframe)
    result: list[Candle] = []
    group: list[Candle] = []
    window = None
    for minute in minutes:
        if minute.timeframe != "1m":
            raise InvalidRequestError(f"aggregate() takes 1m candles, got {minute.timeframe}")
        start = target.floor(minute.start_ms)
        if start != window and group:
            result.append(_combine(group, target, window))
            group = []
        window = start
        group.append(minute)
    if group:
        result.append(_combine(group, target, window))
    return result


def _combine(group: list[Candle], target: Timeframe, start: int | None) -> Candle:
    assert start is not None
    first, last = group[0], group[-1]
    return Candle(
        first.market,
        target.name,
        start,
        first.open,
        max(c.high for c in group),
        min(c.low for c in group),
        last.close,
        sum(c.volume for c in group),
        sum(c.value for c in group),
        last.last_trade_ms,
    )


def derivable_ranges(
    minute_coverage: Coverage, timeframe: Timeframe, start_ms: int, end_ms: int
) -> list[Range]:
    """The ranges of ``timeframe`` window starts in ``[start_ms, end_ms)`` whose every minute
    lies in ``minute_coverage`` (listing included), ascending."""
    target = _check_target(timeframe)
    first, stop = ceil_window(target, start_ms), ceil_window(target, end_ms)
    spans = list(minute_coverage.ranges)
    if minute_coverage.listing_ms is not None:
        # before the listing every minute is known empty
        spans = [(min(first, minute_coverage.listing_ms), minute_coverage.listing_ms), *spans]
    ranges: list[Range] = []
    for low, high in Coverage.of(spans).ranges:
        # windows w with low <= w and w's end <= high
        lo = max(first, ceil_window(target, low))
        hi = min(stop, target.floor(high))
        if lo < hi:
            ranges.append((lo, hi))
    return ranges


async def derive_candles(
    store: CandleStore, market: str, timeframe: Timeframe, start_ms: int, end_ms: int
) -> Derived:
    """``timeframe`` candles of ``market`` starting in ``[start_ms, end_ms)``, built from the
    stored 1m candles wherever their coverage spans whole windows. ``covered`` says where the
    answer is complete; elsewhere the caller must ask upstream.

    Raises InvalidRequestError for a timeframe that is not derivable; StoreError from the store.
    """
    target = _check_target(timeframe)
    minute_coverage = await store.coverage(market, _ONE_MINUTE)
    candles: list[Candle] = []
    ranges = derivable_ranges(minute_coverage, target, start_ms, end_ms)
    for low, high in ranges:
        minutes = await store.read(market, _ONE_MINUTE, low, high)
        candles.extend(aggregate(minutes, target))
    return Derived(candles, Coverage.of(ranges))
