"""Coverage interval sets: checked against a plain set-of-points model."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from marketspine._base.coverage import Coverage, Range

DOMAIN = 60  # small integer domain: every point can be enumerated

ranges = st.tuples(st.integers(0, DOMAIN), st.integers(0, DOMAIN)).map(lambda r: (min(r), max(r)))
range_lists = st.lists(ranges, max_size=8)
listings = st.none() | st.integers(0, DOMAIN)


def points(rs: list[Range] | tuple[Range, ...]) -> set[int]:
    return {p for start, end in rs for p in range(start, end)}


def covered_points(coverage: Coverage) -> set[int]:
    before_listing = set(range(coverage.listing_ms or 0))
    return points(coverage.ranges) | before_listing


def assert_canonical(coverage: Coverage) -> None:
    for start, end in coverage.ranges:
        assert start < end
    for (_, end), (next_start, _) in zip(coverage.ranges, coverage.ranges[1:], strict=False):
        assert end < next_start, "ranges must be sorted, disjoint and not touching"


@settings(max_examples=200)
@given(range_lists)
def test_building_merges_into_canonical_ranges_with_the_same_points(rs: list[Range]) -> None:
    coverage = Coverage.of(rs)
    assert_canonical(coverage)
    assert points(coverage.ranges) == points(rs)


@settings(max_examples=200)
@given(range_lists, ranges)
def test_add_is_set_union(rs: list[Range], extra: Range) -> None:
    coverage = Coverage.of(rs).add(*extra)
    assert_canonical(coverage)
    assert points(coverage.ranges) == points(rs) | points([extra])


@settings(max_examples=200)
@given(range_lists, range_lists)
def test_union_of_coverages(a: list[Range], b: list[Range]) -> None:
    assert points(Coverage.of(a).union(Coverage.of(b)).ranges) == points(a) | points(b)


@settings(max_examples=200)
@given(range_lists, ranges)
def test_subtract_is_set_difference(rs: list[Range], cut: Range) -> None:
    coverage = Coverage.of(rs).subtract(*cut)
    assert_canonical(coverage)
    assert points(coverage.ranges) == points(rs) - points([cut])


@settings(max_examples=300)
@given(range_lists, listings, ranges)
def test_gaps_are_exactly_the_uncovered_points(
    rs: list[Range], listing: int | None, query: Range
) -> None:
    coverage = Coverage.of(rs, listing)
    gaps = coverage.gaps(*query)
    assert points(gaps) == points([query]) - covered_points(coverage)
    assert gaps == sorted(gaps)
    assert all(start < end for start, end in gaps)
    # gaps are maximal: two gaps never touch
    for (_, end), (next_start, _) in itertools.pairwise(gaps):
        assert end < next_start
    assert coverage.contains(*query) == (not gaps)


def test_middle_hole_is_a_gap_and_ends_are_too() -> None:
    coverage = Coverage.of([(10, 20), (30, 40)])
    assert coverage.gaps(0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert coverage.gaps(12, 38) == [(20, 30)]
    assert coverage.contains(10, 20) and not coverage.contains(10, 21)


def test_listing_covers_the_past_and_the_later_listing_wins() -> None:
    coverage = Coverage.of([(50, 60)]).with_listing(30).with_listing(20)
    assert coverage.listing_ms == 30
    assert coverage.gaps(0, 70) == [(30, 50), (60, 70)]
    assert coverage.union(Coverage(listing_ms=40)).listing_ms == 40
    assert coverage.total_ms == 10
