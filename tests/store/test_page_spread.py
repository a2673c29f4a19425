"""Which pages of a cold read go out together (pure): 200 windows apart, so a chain never
leaves a hole; as many as the known density needs; none beyond the call bound when a walk
would cost fewer."""

from __future__ import annotations

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
