"""Which pages of a cold read go out together (pure): 200 windows apart, so a chain never
leaves a hole; as many as the known density needs; none beyond the call bound when a walk
would cost fewer."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from marketspine._base.time import parse_time
from marketspine._base.timeframes import parse_timeframe
from marketspine._store.page_spread import MAX_SPREAD, spread_pages
from marketspine._store.planner import PageRequest

ONE_MINUTE = parse_timeframe("1m")
AT = parse_time("2026-07-30T07:00:00Z")


def tos(requests: list[PageRequest]) -> list[int]:
    return [(AT - r.to_ms) // 60_000 for r in requests]


def test_a_dense_market_sends_every_remaining_page_200_windows_apart() -> None:
    pages = spread_pages(ONE_MINUTE, AT, 800, held=199, windows=199, calls_left=5)
    assert tos(pages) == [0, 200, 400, 600]
    assert all(p.count == 200 for p in pages)


def test_a_dense_market_spreads_even_past_the_call_bound_as_a_walk_costs_as_much() -> None:
    pages = spread_pages(ONE_MINUTE, AT, 800, held=199, windows=199, calls_left=1)
    assert tos(pages) == [0, 200, 400, 600]


def test_a_nearly_dense_market_adds_the_pages_its_gaps_cost_and_a_margin() -> None:
    # 90%: k pages reach 200 + (k - 1) * 180 candles, 5 for 800; a sixth as margin if allowed
    assert tos(spread_pages(ONE_MINUTE, AT, 800, held=180, windows=200, calls_left=5)) == [
        0,
        200,
        400,
        600,
        800,
    ]
    assert len(spread_pages(ONE_MINUTE, AT, 800, held=180, windows=200, calls_left=9)) == 6


def test_a_sparse_market_walks() -> None:
    # One candle in 100 windows: a hole-free chain would need 31 pages for 800 candles.
    pages = spread_pages(ONE_MINUTE, AT, 800, held=200, windows=20_000, calls_left=5)
    assert pages == [PageRequest(AT, 200)]


def test_one_page_when_it_is_enough_or_nothing_is_known() -> None:
    assert spread_pages(ONE_MINUTE, AT, 200, held=199, windows=199, calls_left=5) == [
        PageRequest(AT, 200)
    ]
    assert spread_pages(ONE_MINUTE, AT, 999, held=0, windows=0, calls_left=6) == [
        PageRequest(AT, 200)
    ]


def test_no_page_at_or_below_the_stop() -> None:
    stop = AT - 450 * 60_000  # the top of a stored run, or the listing
    pages = spread_pages(ONE_MINUTE, AT, 800, held=199, windows=199, calls_left=5, stop_ms=stop)
    assert tos(pages) == [0, 200, 400]


def test_a_long_read_goes_out_in_rounds_of_a_second_of_budget() -> None:
    pages = spread_pages(ONE_MINUTE, AT, 99_000, held=200, windows=200, calls_left=500)
    assert len(pages) == MAX_SPREAD
    assert tos(pages) == [200 * n for n in range(MAX_SPREAD)]


# -- any market: the chain never leaves a hole, and with the walk after it gives the walk's
# candles exactly ------------------------------------------------------------------------------

MINUTE_MS = 60_000


def _page(starts: list[int], to_ms: int) -> list[int]:
    """Upbit's page: the 200 newest candle starts before ``to_ms``, newest first."""
    return [s for s in starts if s < to_ms][:200]


# Stretches of (windows, share of them holding a candle), newest first: a market whose
# density swings as an illiquid coin's does, or stays dense.
_STRETCHES = st.lists(
    st.tuples(st.integers(1, 900), st.sampled_from([1.0, 1.0, 0.95, 0.7, 0.3, 0.05, 0.0])),
    min_size=1,
    max_size=12,
)


def _market(stretches: list[tuple[int, float]], seed: int) -> list[int]:
    """Candle starts below AT, newest first."""
    rng = random.Random(seed)
    starts: list[int] = []
    window = 0
    for length, share in stretches:
        for n in range(window, window + length):
            if rng.random() < share:
                starts.append(AT - (n + 1) * MINUTE_MS)
        window += length
    return starts


@settings(max_examples=400, deadline=None)
@given(
    stretches=_STRETCHES,
    seed=st.integers(0, 1_000),
    want=st.integers(201, 2_500),
    calls_left=st.integers(0, 15),
    stop_back=st.one_of(st.none(), st.integers(1, 8_000)),
)
def test_every_chain_is_hole_free_and_the_walk_after_it_gives_the_walks_candles(
    stretches: list[tuple[int, float]],
    seed: int,
    want: int,
    calls_left: int,
    stop_back: int | None,
) -> None:
    starts = _market(stretches, seed)
    first = _page(starts, AT)  # the first page, asked alone: it tells the density
    if len(first) < 200:
        return  # it reached the listing: nothing to spread
    position = first[-1]
    stop = None if stop_back is None else position - stop_back * MINUTE_MS
    pages = spread_pages(
        ONE_MINUTE,
        position,
        want - 200,
        held=200,
        windows=(AT - position) // MINUTE_MS,
        calls_left=calls_left,
        stop_ms=stop,
    )
    assert pages[0] == PageRequest(position, 200)  # the walk's own next page
    assert len(pages) <= MAX_SPREAD
    tos = [p.to_ms for p in pages]
    assert tos == sorted(tos, reverse=True) and len(set(tos)) == len(tos)
    assert all(stop is None or to > stop for to in tos[1:])
    covered: list[tuple[int, int]] = [(position, AT)]
    for to in tos:
        page = _page(starts, to)
        # A full page proves [its oldest start, to); a short one everything below ``to``.
        covered.append((page[-1] if len(page) == 200 else 0, to))
    for (low, _), (_, next_to) in itertools.pairwise(covered):
        assert low <= next_to, "a hole between two pages of the chain"
    # The walk afterwards: from AT down through what the chain proved, a page where not.
    found: list[int] = []
    position = AT
    while len(found) < want:
        below = [low for low, to in covered if low < position <= to]
        if below:
            low = min(below)
        else:
            page = _page(starts, position)
            low = page[-1] if len(page) == 200 else 0
            covered.append((low, position))
        found += [s for s in starts if low <= s < position]
        if low == 0:
            break
        position = low
    assert found[:want] == starts[:want]
