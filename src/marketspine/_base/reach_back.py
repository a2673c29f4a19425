"""The N most recent candles before a time T, read back in spans that widen on sparse markets.

Windows without trades have no candle, so N windows before T may hold fewer than N
candles. The span read starts at N windows and grows ×4 after each read that found too
few (N, 4N, 16N, ...): a busy market is answered by its first read, a sparse one by a few,
never by reading back to its listing one window at a time.

The schedule is pure (``reach_windows``, ``span_start``); ``read_back`` runs it with the
read passed in as a callable, so every caller shares the loop and its stop conditions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sized
from typing import TypeVar

from .timeframes import Timeframe

__all__ = ["MAX_READS", "WIDEN", "reach_windows", "read_back", "span_start"]

WIDEN = 4  # each read that found too few reads 4× as many windows next
# A bound that is never the reason to stop in practice: 4**24 one-second windows are
# about 9 billion years. It only guarantees the loop ends whatever the callables say.
MAX_READS = 24

R = TypeVar("R", bound=Sized)


def reach_windows(wanted: int, attempt: int) -> int:
    """How many windows read number ``attempt`` (0, 1, ...) spans to find ``wanted``
    candles: ``wanted`` (at least 1), ×4 per earlier read."""
    return max(1, wanted) * int(WIDEN**attempt)


def span_start(tf: Timeframe, end_ms: int, windows: int) -> int:
    """The start of the ``windows`` windows of ``tf`` that start before ``end_ms``."""
    return tf.shift(tf.floor(end_ms - 1), -(windows - 1))


async def read_back(
    tf: Timeframe,
    count: int,
    end_ms: int,
    read: Callable[[int], Awaitable[R]],
    *,
    oldest_ms: int,
    exhausted: Callable[[R, int], Awaitable[bool]] | None = None,
    max_reads: int = MAX_READS,
) -> R:
    """``read(lo)`` (what starts in ``[lo, end_ms)``) for the narrowest span of the
    schedule that holds ``count`` items, or the last span read when it stops first: the
    span reached ``oldest_ms`` (nothing starts earlier: the listing, the first stored
    candle), ``exhausted(result, lo)`` says nothing more can be found further back, or
    ``max_reads`` reads were made. The caller keeps the newest ``count`` of the answer.
    """
    attempt = 0
    while True:
        lo = span_start(tf, end_ms, reach_windows(count, attempt))
        result = await read(lo)
        attempt += 1
        if len(result) >= count or lo <= oldest_ms or attempt >= max_reads:
            return result
        if exhausted is not None and await exhausted(result, lo):
            return result
