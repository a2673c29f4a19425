"""The pure backfill planner against a model upstream with Upbit's paging rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketspine import InvalidRequestError, parse_timeframe
from marketspine._base.coverage import Coverage
from marketspine._base.time import parse_time
from marketspine._base.timeframes import Timeframe
from marketspine._store.planner import GapCursor, ceil_window, plan_gaps
from marketspine.records import Candle

T0 = parse_time("2024-01-01")


def candle(tf: Timeframe, start: int) -> Candle:
    return Candle("KRW-TEST", tf.name, start, 1.0, 2.0, 0.5, 1.5, 3.0, 4.5, start + 1)


@dataclass
class ModelUpstream:
    """Upbit's candle paging: the ``count`` newest existing candles strictly before ``to``,
    newest first; nothing older than ``horizon_ms`` (seconds candles)."""

    tf: Timeframe
    starts: list[int]
    horizon_ms: int | None = None
    calls: list[tuple[int, int]] = field(default_factory=list)

    def candles(self, to_ms: int, count: int) -> list[Candle]:
        self.calls.append((to_ms, count))
        older = [s for s in self.starts if s < to_ms]
        if self.horizon_ms is not None:
            older = [s for s in older if s >= self.horizon_ms]
        return [candle(self.tf, s) for s in sorted(older, reverse=True)[:count]]


@dataclass
class Outcome:
    stored: dict[int, Candle]
    coverage: Coverage
    calls_per_gap: list[int]
    candles_per_gap: list[int]


def backfill(
    upstream: ModelUpstream,
    coverage: Coverage,
    since: int,
    until: int,
    now: int,
    page_size: int = 200,
    stored: dict[int, Candle] | None = None,
) -> Outcome:
    stored = {} if stored is None else stored
    calls_per_gap, candles_per_gap = [], []
    for gap in plan_gaps(coverage, upstream.tf, since, until, now):
        cursor = GapCursor(upstream.tf, gap, page_size=page_size)
        calls = written = 0
        while (request := cursor.next_request()) is not None:
            assert 1 <= request.count <= page_size
            page = upstream.candles(request.to_ms, request.count)
            calls += 1
            outcome = cursor.feed(page)
            for c in outcome.candles:
                assert outcome.covered[0] <= c.start_ms < outcome.covered[1]
                stored[c.start_ms] = c
            written += len(outcome.candles)
            coverage = coverage.add(*outcome.covered)
            if outcome.listing_ms is not None:
                coverage = coverage.with_listing(outcome.listing_ms)
        calls_per_gap.append(calls)
        candles_per_gap.append(written)
    return Outcome(stored, coverage, calls_per_gap, candles_per_gap)


def in_range(upstream: ModelUpstream, since: int, end: int) -> set[int]:
    return {s for s in upstream.starts if since <= s < end}


TIMEFRAME_NAMES = ["1s", "1m", "3m", "1h", "4h", "1d", "1w", "1M", "1y"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ModelUpstream, int, int, int, Coverage, int]:
    tf = parse_timeframe(draw(st.sampled_from(TIMEFRAME_NAMES)))
    n_windows = draw(st.integers(1, 400))
    density = draw(st.sampled_from([1.0, 0.9, 0.3, 0.02]))
    listing_index = draw(st.integers(0, n_windows))
    windows = [tf.shift(T0, i) for i in range(n_windows)]
    # Which windows traded: a seeded Random, since drawing up to 400 floats one by one
    # through hypothesis cost most of this test's time.
    rng = draw(st.randoms(use_true_random=True))
    starts = [w for i, w in enumerate(windows)
              if i >= listing_index and rng.random() < density]  # fmt: skip
    lo = draw(st.integers(0, n_windows - 1))
    hi = draw(st.integers(lo + 1, n_windows))
    # Unaligned request bounds: the planner aligns them to window starts.
    since = windows[lo] + draw(st.sampled_from([0, 1]))
    until = tf.shift(T0, hi) - draw(st.sampled_from([0, 1]))
    now = tf.shift(T0, n_windows) + draw(st.sampled_from([0, 1, 999]))
    prior = [
        (windows[a], windows[b])
        for a, b in draw(st.lists(st.tuples(st.integers(0, n_windows - 1),
                                             st.integers(0, n_windows - 1)), max_size=3))
        if a < b
    ]  # fmt: skip
    page_size = draw(st.sampled_from([200, 7]))
    return ModelUpstream(tf, starts), since, until, now, Coverage.of(prior), page_size


@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_stored_set_equals_upstream_set_within_the_call_bound(
    scenario: tuple[ModelUpstream, int, int, int, Coverage, int],
) -> None:
    upstream, since, until, now, prior, page_size = scenario
    tf = upstream.tf
    # What earlier runs stored for the prior coverage is exactly what upstream has there.
    stored = {s: candle(tf, s) for a, b in prior.ranges for s in in_range(upstream, a, b)}
    result = backfill(upstream, prior, since, until, now, page_size, stored)

    start, end = ceil_window(tf, since), min(ceil_window(tf, until), tf.floor(now))
    assert {s for s in result.stored if start <= s < end} == in_range(upstream, start, end)
    assert set(result.stored) <= set(upstream.starts), "only real candles are stored"
    assert result.coverage.contains(start, end)
    for calls, written in zip(result.calls_per_gap, result.candles_per_gap, strict=True):
        assert calls <= math.ceil(written / page_size) + 1

    # Asking again for the covered closed range makes zero upstream calls.
    upstream.calls.clear()
    again = backfill(upstream, result.coverage, since, until, now, page_size)
    assert upstream.calls == [] and again.calls_per_gap == []


def test_dense_market_takes_the_fewest_pages_and_always_asks_full_pages() -> None:
    tf = parse_timeframe("1m")
    upstream = ModelUpstream(tf, [tf.shift(T0, i) for i in range(1000)])
    result = backfill(upstream, Coverage(), T0, tf.shift(T0, 450), now=tf.shift(T0, 1000))
    # The last page asks for 200, not the 50 windows left: a call costs the same either way.
    assert upstream.calls == [
        (tf.shift(T0, 450), 200),
        (tf.shift(T0, 250), 200),
        (tf.shift(T0, 50), 200),
    ]
    assert len(result.stored) == 450  # the listing is at T0: the last page was short


def test_whole_page_is_stored_and_proves_its_span_below_the_gap() -> None:
    tf = parse_timeframe("1m")
    upstream = ModelUpstream(tf, [tf.shift(T0, i) for i in range(1000)])
    gap_start, gap_end = tf.shift(T0, 986), tf.shift(T0, 1000)
    result = backfill(upstream, Coverage(), gap_start, gap_end, now=tf.shift(T0, 1000))
    # A miss of 14 candles asks for a full page and keeps all of it ...
    assert upstream.calls == [(gap_end, 200)]
    assert sorted(result.stored) == [tf.shift(T0, i) for i in range(800, 1000)]
    assert result.coverage.ranges == ((tf.shift(T0, 800), gap_end),)
    # ... so the next request for 60 adjacent candles is free.
    upstream.calls.clear()
    backfill(upstream, result.coverage, tf.shift(T0, 926), gap_end, now=tf.shift(T0, 1000))
    assert upstream.calls == []


def test_sparse_page_reaching_below_the_gap_is_kept_and_ends_the_gap() -> None:
    tf = parse_timeframe("1h")
    starts = [tf.shift(T0, i) for i in (0, 1, 2, 50, 90)]
    upstream = ModelUpstream(tf, starts)
    result = backfill(upstream, Coverage(), tf.shift(T0, 40), tf.shift(T0, 100), tf.shift(T0, 200))
    # one call: asks for 200, gets all 5 (fewer than asked) → done, the older ones kept
    assert upstream.calls == [(tf.shift(T0, 100), 200)]
    assert sorted(result.stored) == starts
    assert result.coverage.listing_ms == T0
    assert result.coverage.gaps(T0 - 10**12, tf.shift(T0, 100)) == []


def test_full_page_reaching_below_the_gap_ends_the_gap_without_listing() -> None:
    tf = parse_timeframe("1h")
    starts = [tf.shift(T0, i) for i in range(0, 3000, 10)]  # 300 candles, 3000 windows
    upstream = ModelUpstream(tf, starts)
    since, until = tf.shift(T0, 2995), tf.shift(T0, 3000)
    result = backfill(upstream, Coverage(), since, until, tf.shift(T0, 3100))
    assert upstream.calls == [(until, 200)]  # 5 windows missing, a full page asked
    assert sorted(result.stored) == starts[100:]
    assert result.coverage.ranges == ((tf.shift(T0, 1000), until),)
    assert result.coverage.listing_ms is None


def test_middle_hole_is_filled_and_nothing_else_is_fetched() -> None:
    tf = parse_timeframe("1m")
    upstream = ModelUpstream(tf, [tf.shift(T0, i) for i in range(600)])
    prior = Coverage.of([(T0, tf.shift(T0, 200)), (tf.shift(T0, 300), tf.shift(T0, 600))])
    result = backfill(upstream, prior, T0, tf.shift(T0, 600), tf.shift(T0, 700))
    assert upstream.calls == [(tf.shift(T0, 300), 200)]
    assert sorted(result.stored) == [tf.shift(T0, i) for i in range(100, 300)]
    assert result.coverage.ranges == ((T0, tf.shift(T0, 600)),)


def test_range_before_listing_takes_one_call_then_none() -> None:
    tf = parse_timeframe("1d")
    listing = tf.shift(T0, 100)
    upstream = ModelUpstream(tf, [tf.shift(T0, i) for i in range(100, 120)])
    first = backfill(upstream, Coverage(), T0, tf.shift(T0, 50), tf.shift(T0, 130))
    assert len(upstream.calls) == 1 and first.stored == {}
    # a range that straddles the listing stops there and records it
    second = backfill(upstream, first.coverage, T0, tf.shift(T0, 110), tf.shift(T0, 130))
    assert second.coverage.listing_ms == listing
    assert len(upstream.calls) == 2
    upstream.calls.clear()
    backfill(upstream, second.coverage, T0 - 10**11, tf.shift(T0, 105), tf.shift(T0, 130))
    assert upstream.calls == []


def test_seconds_stop_at_the_horizon_without_spinning_or_claiming_a_listing() -> None:
    tf = parse_timeframe("1s")
    upstream = ModelUpstream(tf, [tf.shift(T0, i) for i in range(1000)])
    upstream.horizon_ms = tf.shift(T0, 900)
    result = backfill(upstream, Coverage(), T0, tf.shift(T0, 1000), tf.shift(T0, 1000))
    assert len(upstream.calls) == 1  # 100 of 200 came back: done
    assert sorted(result.stored) == [tf.shift(T0, i) for i in range(900, 1000)]
    assert result.coverage.listing_ms is None
    # entirely beyond the horizon: one empty answer, recorded, no loop
    upstream.calls.clear()
    older = backfill(upstream, Coverage(), T0 - 5000, T0, tf.shift(T0, 1000))
    assert len(upstream.calls) == 1 and older.coverage.contains(T0 - 5000, T0)


def test_forming_window_is_never_requested_or_stored() -> None:
    tf = parse_timeframe("5m")
    upstream = ModelUpstream(tf, [tf.shift(T0, i) for i in range(10)])
    now = tf.shift(T0, 9) + 60_000  # the 10th window is forming
    result = backfill(upstream, Coverage(), T0, tf.shift(T0, 10), now)
    assert tf.shift(T0, 9) not in result.stored
    assert all(tf.is_closed(s, now) for s in result.stored)
    assert upstream.calls[0][0] == tf.shift(T0, 9)
    assert plan_gaps(Coverage(), tf, tf.shift(T0, 9), tf.shift(T0, 10), now) == []


def test_minute_and_month_candles_are_planned_on_their_own_grids() -> None:
    minute, month = parse_timeframe("1m"), parse_timeframe("1M")
    since, until, now = parse_time("2024-01-15"), parse_time("2024-04-15"), parse_time("2024-05-02")
    assert plan_gaps(Coverage(), month, since, until, now) == [
        (parse_time("2024-02-01"), parse_time("2024-05-01"))
    ]
    assert plan_gaps(Coverage(), minute, since, until, now) == [(since, until)]


def test_feed_without_request_and_empty_range_are_errors() -> None:
    tf = parse_timeframe("1m")
    with pytest.raises(InvalidRequestError, match="without a pending"):
        GapCursor(tf, (T0, T0 + 60_000)).feed([])
    with pytest.raises(InvalidRequestError, match="must be before"):
        plan_gaps(Coverage(), tf, T0, T0, T0 + 10**9)
