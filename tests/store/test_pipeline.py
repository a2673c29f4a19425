"""The pipelined backfill plan (``_store.pipeline``) against a model upstream with Upbit's paging
rules, its answers arriving in any order: the stored set and coverage equal what upstream
holds in the range, whatever the order; at every instant the store holds a contiguous stretch
from each gap's end (what a kill -9 would leave); a dense market keeps several pages in flight
and costs the sequential walk's calls."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketspine import InvalidRequestError, parse_timeframe
from marketspine._base.coverage import Coverage
from marketspine._base.time import parse_time
from marketspine._base.timeframes import Timeframe
from marketspine._store.pipeline import MarketPipeline, PipelinePage
from marketspine._store.planner import plan_gaps
from marketspine.records import Candle

T0 = parse_time("2024-01-01")
MIN = parse_timeframe("1m")


def candle(tf: Timeframe, start: int) -> Candle:
    return Candle("KRW-TEST", tf.name, start, 1.0, 2.0, 0.5, 1.5, 3.0, 4.5, start + 1)


@dataclass
class Model:
    """Upbit's paging: the ``count`` newest existing candles strictly before ``to``."""

    tf: Timeframe
    starts: list[int]
    calls: list[int] = field(default_factory=list)

    def answer(self, to_ms: int, count: int) -> list[Candle]:
        self.calls.append(to_ms)
        older = sorted((s for s in self.starts if s < to_ms), reverse=True)[:count]
        return [candle(self.tf, s) for s in older]


@dataclass
class Run:
    stored: dict[int, Candle]
    coverage: Coverage
    listing: int | None
    calls: int
    most_in_flight: int
    asked: dict[int, int]  # page index -> its ``to``, for every page asked
    written: set[int]  # the ``to`` of every page written


def run(
    model: Model,
    gaps: list[tuple[int, int]],
    *,
    depth: int,
    rng: random.Random,
    page_size: int = 200,
    stop_after_writes: int | None = None,
    keep_below: bool = True,
    grid: bool = False,
) -> Run:
    """Drive a pipeline: keep ``depth`` pages asked, answer a random one of them, store what
    it hands out; checks after every write that each gap is stored contiguously from its
    end. ``stop_after_writes`` ends the run there, as a kill -9 would."""
    pipeline = MarketPipeline(model.tf, gaps, page_size=page_size, keep_below=keep_below, grid=grid)
    stored: dict[int, Candle] = {}
    coverage = Coverage.of([])
    listing: int | None = None
    asked: list[PipelinePage] = []
    places: dict[int, int] = {}
    written: set[int] = set()
    most = writes = 0
    while not pipeline.done:
        while len(asked) < depth and (page := pipeline.next_request()) is not None:
            asked.append(page)
            places[page.index] = page.request.to_ms
        most = max(most, len(asked))
        assert asked, "the pipeline waits for nothing"
        page = asked.pop(rng.randrange(len(asked)))
        pipeline.feed(page, model.answer(page.request.to_ms, page.request.count))
        for ready in pipeline.ready():
            low, high = ready.outcome.covered
            for c in ready.outcome.candles:
                assert low <= c.start_ms < high
                stored[c.start_ms] = c
            coverage = coverage.add(low, high)
            if ready.outcome.listing_ms is not None:
                listing = ready.outcome.listing_ms
            writes += 1
            written.add(high)
            # Contiguous from the gap's end: what a crash here leaves.
            start, end = ready.gap
            assert coverage.contains(max(start, ready.position_ms), end)
            if stop_after_writes is not None and writes >= stop_after_writes:
                return Run(stored, coverage, listing, len(model.calls), most, places, written)
    return Run(stored, coverage, listing, len(model.calls), most, places, written)


def in_range(model: Model, start: int, end: int) -> dict[int, Candle]:
    return {s: candle(model.tf, s) for s in model.starts if start <= s < end}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Model, int, int, int, Coverage]:
    tf = parse_timeframe(draw(st.sampled_from(["1s", "1m", "1h", "1d", "1w", "1M"])))
    n = draw(st.integers(1, 3000 if tf.unit in ("second", "minute") else 400))
    density = draw(st.sampled_from([1.0, 0.97, 0.5, 0.1, 0.01]))
    listing = draw(st.integers(0, n))
    rng = draw(st.randoms(use_true_random=True))
    # Sparser further back, as real markets are: density falls to a third over the range.
    starts = [
        tf.shift(T0, i)
        for i in range(n)
        if i >= listing and rng.random() < density * (1 + 2 * i / n) / 3
    ]
    lo = draw(st.integers(0, n - 1))
    hi = draw(st.integers(lo + 1, n))
    prior = [
        (tf.shift(T0, a), tf.shift(T0, b))
        for a, b in draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), max_size=3))
        if a < b
    ]
    return (
        Model(tf, starts),
        tf.shift(T0, lo),
        tf.shift(T0, hi),
        tf.shift(T0, n),
        Coverage.of(prior),
    )


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.integers(1, 8), st.randoms(use_true_random=True), st.booleans())
def test_any_answer_order_stores_exactly_what_upstream_holds(
    scenario: tuple[Model, int, int, int, Coverage], depth: int, rng: random.Random, grid: bool
) -> None:
    model, since, until, now, prior = scenario
    gaps = plan_gaps(prior, model.tf, since, until, now)
    done = run(model, gaps, depth=depth, rng=rng, grid=grid)
    for start, end in gaps:
        assert done.coverage.contains(start, end)
        assert {s: c for s, c in done.stored.items() if start <= s < end} == in_range(
            model, start, end
        )
    # Beyond the gaps, only what a short page returned: everything older, as upstream has it.
    everything = in_range(model, 0, 2**62)
    assert all(done.stored[s] == everything[s] for s in done.stored)
    if done.listing is not None:  # nothing starts before it (an empty first page: its to)
        assert all(s >= done.listing for s in model.starts)


@settings(max_examples=100, deadline=None)
@given(
    scenarios(),
    st.integers(1, 8),
    st.randoms(use_true_random=True),
    st.integers(1, 20),
    st.booleans(),
)
def test_a_run_stopped_anywhere_then_rerun_gives_the_same_store(
    scenario: tuple[Model, int, int, int, Coverage],
    depth: int,
    rng: random.Random,
    stop: int,
    grid: bool,
) -> None:
    model, since, until, now, prior = scenario
    tf = model.tf
    gaps = plan_gaps(prior, tf, since, until, now)
    # As ``marketspine collect`` runs it: full pages kept to the gap.
    whole = run(Model(tf, model.starts), gaps, depth=depth, rng=rng, keep_below=False, grid=grid)
    first = run(
        Model(tf, model.starts),
        gaps,
        depth=depth,
        rng=rng,
        stop_after_writes=stop,
        keep_below=False,
        grid=grid,
    )
    # The rerun plans what the stopped run left uncovered (as collect does) and adds to it.
    left = plan_gaps(prior.union(first.coverage), tf, since, until, now)
    rest = run(Model(tf, model.starts), left, depth=depth, rng=rng, keep_below=False, grid=grid)
    assert {**first.stored, **rest.stored} == whole.stored
    assert prior.union(first.coverage).union(rest.coverage) == prior.union(whole.coverage)


@settings(max_examples=200, deadline=None)
@given(
    scenarios(),
    st.tuples(st.integers(1, 8), st.integers(1, 8)),
    st.tuples(st.randoms(use_true_random=True), st.randoms(use_true_random=True)),
    st.booleans(),
)
def test_every_answer_order_and_depth_asks_the_same_pages_in_the_same_places(
    scenario: tuple[Model, int, int, int, Coverage],
    depths: tuple[int, int],
    rngs: tuple[random.Random, random.Random],
    grid: bool,
) -> None:
    # What lets processes sharing page leases (keyed by ``to``) fetch each page once: however
    # their answers interleave, page k of one lies where page k of the other does. (Only
    # how many void pages, below a proof, get asked depends on the order.)
    model, since, until, now, prior = scenario
    gaps = plan_gaps(prior, model.tf, since, until, now)
    one = run(Model(model.tf, model.starts), gaps, depth=depths[0], rng=rngs[0], grid=grid)
    other = run(Model(model.tf, model.starts), gaps, depth=depths[1], rng=rngs[1], grid=grid)
    assert one.written == other.written
    for index in one.asked.keys() & other.asked.keys():
        assert one.asked[index] == other.asked[index]


@pytest.mark.parametrize("density", [1.0, 0.97])
def test_on_the_grid_overlapping_gaps_ask_the_same_pages_where_they_overlap(
    density: float,
) -> None:
    # Two collectors whose ranges overlap, one planned from where the other had stored to:
    # past each one's first page (asked at its gap's end), their pages meet on the grid, so
    # page leases fetch the overlap once.
    rng = random.Random(7)
    starts = [MIN.shift(T0, i) for i in range(20_000) if i == 0 or rng.random() < density]
    one_gap, other_gap = (MIN.shift(T0, 5_000), MIN.shift(T0, 19_000)), (T0, MIN.shift(T0, 12_345))
    one = run(Model(MIN, starts), [one_gap], depth=6, rng=random.Random(8), grid=True)
    other = run(Model(MIN, starts), [other_gap], depth=6, rng=random.Random(9), grid=True)
    union = run(Model(MIN, starts), [(T0, one_gap[1])], depth=6, rng=random.Random(10), grid=True)
    both = set(one.asked.values()) | set(other.asked.values())
    assert len(both) <= len(union.asked) + 2  # + the other's first page, + one to join
    assert one.stored | other.stored == union.stored == in_range(Model(MIN, starts), T0, one_gap[1])


def test_a_dense_market_keeps_pages_in_flight_at_the_sequential_walks_calls() -> None:
    model = Model(MIN, [MIN.shift(T0, i) for i in range(10_000)])
    gap = (MIN.shift(T0, 1_000), MIN.shift(T0, 9_000))  # 8,000 windows: 40 pages
    done = run(model, [gap], depth=6, rng=random.Random(1))
    assert done.most_in_flight == 6
    assert done.calls == 40
    # The pages are exactly those of the walk: 200 windows apart from the gap's end.
    assert sorted(model.calls, reverse=True) == [MIN.shift(gap[1], -200 * k) for k in range(40)]
    assert done.stored == in_range(model, *gap)
    assert done.coverage.ranges == (gap,)


def test_a_sparse_market_is_walked_one_page_at_a_time_at_the_walks_calls() -> None:
    # One candle every 50 windows: a page spans 10,000 windows; strides of 200 windows would
    # ask for each candle 50 times.
    model = Model(MIN, [MIN.shift(T0, 50 * i) for i in range(2_000)])
    gap = (MIN.shift(T0, 0), MIN.shift(T0, 100_000))
    pipeline = MarketPipeline(MIN, [gap])
    first = pipeline.next_request()
    assert first is not None and pipeline.next_request() is None  # learn first
    done = run(Model(MIN, model.starts), [gap], depth=6, rng=random.Random(2))
    assert (done.most_in_flight, done.calls) == (1, 10)
    assert done.stored == in_range(model, *gap)


def test_pages_go_ahead_again_once_the_market_turns_dense() -> None:
    # Sparse for the newest 4,000 windows (one candle in 4), dense before.
    starts = [MIN.shift(T0, i) for i in range(6_000)] + [
        MIN.shift(T0, i) for i in range(6_000, 10_000, 4)
    ]
    model = Model(MIN, starts)
    gap = (MIN.shift(T0, 0), MIN.shift(T0, 10_000))
    done = run(model, [gap], depth=4, rng=random.Random(3))
    assert done.most_in_flight == 4
    assert done.stored == in_range(model, *gap)
    assert done.coverage.ranges == (gap,)
    # 5 sparse pages walked, 30 dense ones, and a page or two where density changes.
    assert 35 <= done.calls <= 37


def test_pages_below_a_listing_are_dropped_unwritten() -> None:
    # Listed 300 windows into the range: the pages asked below the listing answer empty,
    # which would claim a listing at their own ``to``; they are void.
    model = Model(MIN, [MIN.shift(T0, i) for i in range(300, 1_500)])
    gap = (MIN.shift(T0, 0), MIN.shift(T0, 1_500))
    done = run(model, [gap], depth=8, rng=random.Random(4))
    assert done.listing == MIN.shift(T0, 300)
    assert done.stored == in_range(model, *gap)
    assert done.coverage.ranges == (gap,)


def test_a_full_page_below_the_gap_is_kept_whole_unless_asked_not_to() -> None:
    model = Model(MIN, [MIN.shift(T0, i) for i in range(1_000)])
    gap = (MIN.shift(T0, 900), MIN.shift(T0, 1_000))  # 100 windows: one full page
    whole = run(model, [gap], depth=4, rng=random.Random(5))
    assert min(whole.stored) == MIN.shift(T0, 800)  # the next request nearby is free
    assert whole.coverage.ranges == ((MIN.shift(T0, 800), gap[1]),)
    kept = run(Model(MIN, model.starts), [gap], depth=4, rng=random.Random(5), keep_below=False)
    assert kept.stored == in_range(model, *gap) and kept.coverage.ranges == (gap,)


def test_a_page_s_candles_are_let_go_once_handed_out_for_storing() -> None:
    # A long backfill holds the candles of the pages in flight and waiting to be stored, not
    # of everything it stored (a year of 1m is 525,600 candles).
    model = Model(MIN, [MIN.shift(T0, i) for i in range(10_000)])
    pipeline = MarketPipeline(MIN, [(T0, MIN.shift(T0, 10_000))])
    asked: list[PipelinePage] = []
    handed_out = 0
    while not pipeline.done:
        while (page := pipeline.next_request()) is not None:
            asked.append(page)
        waiting = [p for p in asked if p.outcome is None]
        page = waiting[-1]  # the lowest first: the ones above it keep it waiting
        pipeline.feed(page, model.answer(page.request.to_ms, page.request.count))
        handed_out += len(pipeline.ready())
        held = sum(len(p.outcome.candles) for p in asked if p.outcome is not None)
        assert held <= 6 * 200  # at most the pages answered and not yet stored
    assert handed_out == len(asked) == 50
    assert all(p.outcome is not None and p.outcome.candles == [] for p in asked)


def test_feeding_a_page_twice_or_a_bad_page_size_is_an_error() -> None:
    with pytest.raises(InvalidRequestError, match=r"page_size must be 1\.\.200"):
        MarketPipeline(MIN, [], page_size=0)
    pipeline = MarketPipeline(MIN, [(T0, MIN.shift(T0, 10))])
    page = pipeline.next_request()
    assert page is not None
    pipeline.feed(page, [])
    with pytest.raises(InvalidRequestError, match="fed twice"):
        pipeline.feed(page, [])
    assert pipeline.ready()[0].finished and pipeline.done


@pytest.mark.parametrize("name", ["1m", "1s"])
def test_a_short_page_below_the_gap_is_kept_to_the_gap_when_asked(name: str) -> None:
    # A rerun's gap may end in a short page (everything down to the listing, or Upbit's
    # horizon for seconds) where one uninterrupted run's page was full: kept whole, it
    # stored candles (and a listing) below the range that the one run never stored, so the
    # two stores differed (found by the stopped-and-rerun property above: 47 1s candles).
    tf = parse_timeframe(name)
    starts = [tf.shift(T0, i) for i in range(150)]  # the market's whole history: one page
    gap = (tf.shift(T0, 100), tf.shift(T0, 150))
    kept = run(Model(tf, starts), [gap], depth=1, rng=random.Random(0), keep_below=False)
    assert sorted(kept.stored) == starts[100:]
    assert kept.coverage.ranges == (gap,) and kept.listing is None
    whole = run(Model(tf, starts), [gap], depth=1, rng=random.Random(0))  # the default
    assert sorted(whole.stored) == starts  # kept whole: the next request nearby is free
