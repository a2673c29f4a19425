"""``marketspine verify``: candles built from recorded trades compared with upstream's candles,
window by window, a UTC day at a time.

Only windows the recording covers whole are compared: not the one holding its first trade nor
the one holding its last (they may have started or ended mid-window), nor any window a known
gap touches (those are listed apart: they cannot agree and say so already).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._base.time import DAY_MS
from .._base.timeframes import Timeframe
from .._base.trade_candles import WindowDifference, candles_from_trades, compare_candles
from .._budget.rules import Priority
from .._store.recording_store import recording_for
from ..errors import UpstreamError
from .spine import Spine

__all__ = ["VerifyReport", "verify_recording"]


@dataclass
class VerifyReport:
    """What ``verify_recording`` compared and found."""

    market: str
    timeframe: str
    start_ms: int  # the first window compared
    end_ms: int  # the end of the last
    windows: int = 0  # windows with a candle on either side, compared
    differences: list[WindowDifference] = field(default_factory=list)
    gap_windows: list[int] = field(default_factory=list)  # left out: a known gap touches them


async def verify_recording(
    spine: Spine,
    market: str,
    timeframe: Timeframe,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> VerifyReport | None:
    """Compare the recorded trades of ``market`` in ``[since_ms, until_ms)`` (default: all of
    the recording) as ``timeframe`` candles with upstream's; None when nothing is recorded."""
    recording = recording_for(spine.store)
    first, last = await recording.first_trade(market), await recording.last_trade(market)
    if first is None or last is None:
        return None
    tf = timeframe
    lo = tf.next_start(tf.floor(first.ms))
    # Not the window of the last trade, nor one upstream's clock (as far as this client
    # knows it) does not call closed yet: upstream has no final candle of it.
    hi = min(tf.floor(last.ms), tf.floor(spine.client.upstream_now_ms()))
    if since_ms is not None:
        lo = max(
            lo,
            tf.floor(since_ms)
            if tf.floor(since_ms) == since_ms
            else tf.next_start(tf.floor(since_ms)),
        )
    if until_ms is not None:
        hi = min(hi, tf.floor(until_ms))
    report = VerifyReport(market, tf.name, lo, max(lo, hi))
    if lo >= hi:
        return report
    gapped: set[int] = set()
    for gap in await recording.trade_gaps(market):
        cursor = tf.floor(gap.from_ms)
        while cursor <= gap.to_ms and cursor < hi:
            if cursor >= lo:
                gapped.add(cursor)
            cursor = tf.next_start(cursor)
    report.gap_windows = sorted(gapped)
    day = lo
    while day < hi:
        # A day at a time, cut at window starts, so memory holds one day of trades.
        cut = min(hi, tf.floor(day // DAY_MS * DAY_MS + DAY_MS))
        cut = cut if cut > day else min(hi, tf.next_start(day))
        trades = await recording.trades(market, day, cut)
        built = [c for c in candles_from_trades(trades, tf) if c.start_ms not in gapped]
        theirs = await spine.candles(market, tf, start=day, end=cut, priority=Priority.LOW)
        if theirs.meta.stale:  # what is held while upstream cannot answer: maybe partial
            raise UpstreamError(
                f"upstream cannot answer {market}'s {tf.name} candles now (verify compares "
                "with its own): try again later"
            )
        upstream = [c for c in theirs if c.start_ms not in gapped]
        report.windows += len({c.start_ms for c in built} | {c.start_ms for c in upstream})
        report.differences += compare_candles(built, upstream)
        day = cut
    return report
