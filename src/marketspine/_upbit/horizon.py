"""How far back Upbit serves candles (pure): 1-second candles for about the last three
months only (API.md §1.2); every other timeframe back to the listing.

What lies beyond is *unserved*, which is not the same as empty: no trade is proven absent
there, so it is never recorded as coverage and never reported as "no trades".
"""

from __future__ import annotations

from .._base.coverage import Range
from .._base.time import DAY_MS, HOUR_MS
from .._base.timeframes import Timeframe

__all__ = ["SECONDS_HORIZON_MS", "served_since", "split_unserved"]

SECONDS_HORIZON_MS = 90 * DAY_MS
# Upbit's horizon is "about" three months and moves on while a backfill runs: an hour inside
# it, a short page surely means "nothing older was traded", never "beyond the horizon".
_SAFE_MS = HOUR_MS


def served_since(timeframe: Timeframe, now_ms: int) -> int | None:
    """The oldest window start upstream surely serves at ``now_ms`` (upstream's clock), or
    None when it serves everything back to the listing."""
    if timeframe.unit != "second":
        return None
    horizon = now_ms - SECONDS_HORIZON_MS + _SAFE_MS
    start = timeframe.floor(horizon)
    # The first whole window inside the horizon: a window half beyond it is not served whole.
    return start if start == horizon else timeframe.next_start(start)


def split_unserved(
    timeframe: Timeframe, since_ms: int, until_ms: int, now_ms: int
) -> tuple[Range | None, int]:
    """``(unserved, served_from)``: the part of ``[since_ms, until_ms)`` older than what
    upstream serves (None if none of it is), and where the servable part starts (``until_ms``
    or later when nothing of the range is servable)."""
    oldest = served_since(timeframe, now_ms)
    if oldest is None or since_ms >= oldest:
        return None, since_ms
    return (since_ms, min(until_ms, oldest)), max(since_ms, oldest)
