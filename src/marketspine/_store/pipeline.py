"""Several pages of one market's backfill in flight at once (pure, no I/O).

Walking a gap page by page (``planner.GapCursor``) waits one round trip per page: at 200 ms
from Upbit one market backfills at 40% of the rate limit. But where the next pages lie is
known before the current one answers: a full page of ``count`` candles spans *at least*
``count`` windows, so a page asked at ``to - count`` windows can never leave a hole below the
page at ``to``. ``MarketPipeline`` therefore asks for the next pages before the earlier ones
answer, each where the one above it surely ends (its *claim*):

* **Learn first.** Until one full page of the market has answered, one page is in flight:
  its span tells how dense the market is. (A page holds the ``count`` newest candles before
  its ``to`` however far down they reach, so a second page asked ``count`` windows lower
  before that would fetch again, on a sparse market, candles the first one returns; no
  placement avoids it without the density. ``collect`` asks the market list meanwhile.)
* **Ahead only where dense.** While the newest full page known spanned at most ``DENSE`` times
  ``count`` windows, the next pages are asked ``count`` windows apart from the lowest point
  asked so far: no hole is possible, and at most one page in ten overlaps the one above it.
  Where a page spans more (a sparse stretch: 200 candles over thousands of windows), strides
  of ``count`` windows would ask for the same candles many times over, and a stride guessed
  from the span leaves holes as density varies (a whole call for each, measured: up to 1.8
  calls per page on a young market) — so there the gap is walked as before, one page at a
  time from the oldest start received, until a dense page is seen again.
* **Placed alike in every process.** Which answers are in when a page is decided depends on
  timing; where the page goes must not, or two processes sharing page leases (keyed by
  ``to``) would ask the same candles under different names and fetch them twice. So page
  ``k`` is decided from the answers to pages ``k - AHEAD`` and older alone (waiting for
  them if need be), each newer page above it standing for its claim; walking waits for
  every answer anyway and uses them all. A page found below a proof already in is not
  asked, but keeps its place in the order.
* **On one grid, if asked.** With ``grid`` (``collect --redis``), a page asked ahead goes
  to the first grid point at or above where the pages above it reach: a window start a
  multiple of ``count`` windows from the epoch's. Processes whose gaps differ (a collector
  started after another stored part of the range plans only the rest) then still ask the
  same pages where the gaps overlap, and page leases fetch each once. Joining the grid
  costs at most one call per gap, which a process alone has no reason to pay.
* **Written in order.** Answers are handed out for storing strictly from the gap's end
  downwards, each only once everything above it is proven, so the store after a crash at
  any instant is one that the sequential walk could have left: coverage contiguous from the
  end of the gap, exact.
* **Kept to the gap, if asked.** A page reaching below the gap's start is stored whole by
  default (the next request nearby then costs nothing), but which candles lie below
  depends on where the pages fell, and so on the moment a run was interrupted. With
  ``keep_below=False`` it stores only its part in the gap, so an interrupted run and its
  rerun store exactly what one run stores (``marketspine collect``). That holds for a short
  page too (everything down to the listing, or Upbit's horizon for seconds): a rerun's
  smaller gap may end in a short page where one run's page was full, and kept whole it
  stored candles, and a listing, below the range that one run never stored.
* **Stopped at the proof.** Once a written page proves the gap complete (it reached the
  gap's start, or was short: nothing older exists), the pages asked below it are void: their
  answers are dropped unwritten (an empty answer below a listing would claim a wrong one).
  Below a listing reached by dense pages, at most ``AHEAD - 1`` calls are spent so.

The runner (``backfill.collect``) does the I/O: it sends what ``next_request`` gives while
fewer than ``depth`` pages are in flight, feeds each answer with ``feed`` and writes what
``ready`` hands out, one transaction per page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .._base.coverage import Range
from .._base.timeframes import Timeframe
from ..errors import InvalidRequestError
from ..records import Candle
from .planner import MAX_PAGE, PageOutcome, PageRequest, page_outcome

__all__ = ["DEFAULT_DEPTH", "MarketPipeline", "PipelinePage", "ReadyPage"]

# Pages of one market in flight: enough to keep Upbit's 10 requests/s busy at 300 ms round
# trips plus jitter (3 on the wire, one waiting for its slot), with room to spare. Pages
# beyond that only wait for the rate budget.
DEFAULT_DEPTH = 6
# Pages decided before the answer that informs them: the answers to pages ``index - AHEAD``
# and older decide page ``index`` (where it lies, whether the market is dense), so it can be
# asked while the ``AHEAD - 1`` pages above it are in flight. A constant, not the caller's
# depth: processes sharing page leases then place their pages alike.
AHEAD = DEFAULT_DEPTH
# A page spanning up to this many times ``count`` windows counts as dense: asking ahead by
# ``count`` windows costs at most 10% more calls than the walk there.
DENSE = 1.1


@dataclass(eq=False, slots=True)
class PipelinePage:
    """One page asked of one gap: how far down it surely reaches, and its answer."""

    index: int  # its place in the order pages are decided (all gaps together)
    gap: int  # index of its gap (newest first)
    request: PageRequest
    claim_ms: int  # the low end it surely proves when full: ``count`` windows below ``to``
    outcome: PageOutcome | None = None
    skipped: bool = False  # below a proof already in when decided: never asked
    full: bool = False  # it answered ``count`` candles (kept: its candles go once stored)


@dataclass(frozen=True, slots=True)
class ReadyPage:
    """A page to store now (in this order), and where its gap stands once it is stored."""

    gap: Range
    outcome: PageOutcome
    position_ms: int  # everything in [position_ms, gap end) is stored with it
    finished: bool  # the gap is complete with it
    new_ms: int  # how much of the gap it adds to what the pages before it stored
    new_candles: int  # its candles in that part (overlapping pages count each once)


@dataclass(slots=True)
class _Gap:
    start_ms: int
    end_ms: int
    pages: list[PipelinePage]  # by ``to`` descending
    written: int = 0  # pages[:written] are handed out
    position_ms: int = 0  # everything in [position_ms, end_ms) is handed out
    proven: bool = False  # a handed-out page proved the gap complete
    proved_at: int | None = None  # the first page (by index) answered with a proof
    known_low_ms: int | None = None  # the lowest start proven by its known pages
    known_proof: bool = False  # a known page proved the gap complete: nothing more to ask

    @property
    def range(self) -> Range:
        return (self.start_ms, self.end_ms)


class MarketPipeline:
    """The pages of one market's gaps (ascending ``(start, end)`` ranges of window starts),
    walked newest first with several pages in flight (see the module doc)."""

    def __init__(
        self,
        timeframe: Timeframe,
        gaps: Sequence[Range],
        *,
        page_size: int = MAX_PAGE,
        keep_below: bool = True,
        grid: bool = False,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise InvalidRequestError(f"page_size must be 1..{MAX_PAGE}, got {page_size}")
        self.timeframe = timeframe
        self._page_size = page_size
        self._keep_below = keep_below
        self._grid = grid
        self._gaps = [_Gap(start, end, [], position_ms=end) for start, end in reversed(gaps)]
        self._pages: list[PipelinePage] = []  # every page decided, by index
        self._answered = 0  # pages[:answered] are answered (or skipped)
        self._known = 0  # pages[:known] are what the decisions use (see ``next_request``)
        self._dense = False  # the newest known full page was dense: ask ahead
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Pages asked and not yet fed."""
        return self._in_flight

    @property
    def done(self) -> bool:
        """Every gap is proven complete and handed out."""
        return all(gap.proven for gap in self._gaps)

    @property
    def position_ms(self) -> int:
        """The oldest point stored in the gap being stored (pages walk backwards)."""
        for gap in self._gaps:
            if not gap.proven:
                return gap.position_ms
        return self._gaps[-1].start_ms if self._gaps else 0

    def next_request(self) -> PipelinePage | None:
        """The next page to ask for now, or None until an answer comes (the market's
        density is not learnt yet, or every gap is asked down to its start).

        Where the page lies, and whether it is asked at all, depends only on which page it
        is (its index) and the answers to the pages ``AHEAD`` or more before it (all of
        them while walking), never on which answers happen to be in: every process asks
        the same pages in the same places, however its answers interleave."""
        while True:
            index = len(self._pages)
            known = max(self._known, index + 1 - AHEAD, min(index, 1))
            if self._answered < known:
                return None
            self._learn(known)
            if not self._dense:  # walk: from where the newest answer reached
                if self._answered < index:
                    return None
                self._learn(index)
            page = self._decide(index)
            if page is None:
                return None
            gap = self._gaps[page.gap]
            if gap.proved_at is not None and gap.proved_at < index:
                # Below a proof already in: void, so not asked. It keeps its place in the
                # order (a process without that answer yet asks it) and decides nothing.
                page.skipped = True
                self._answered += self._answered == index
                continue
            self._in_flight += 1
            return page

    def feed(self, page: PipelinePage, candles: Sequence[Candle]) -> None:
        """Take the answer to ``page`` (any order of candles, any order of pages)."""
        if page.outcome is not None or page.skipped or self._in_flight <= 0:
            raise InvalidRequestError("MarketPipeline.feed() of a page not asked or fed twice")
        self._in_flight -= 1
        gap = self._gaps[page.gap]
        page.outcome = outcome = page_outcome(self.timeframe, page.request, candles, gap.start_ms)
        page.full = len(outcome.candles) >= page.request.count
        proves = outcome.done or outcome.covered[0] <= gap.start_ms
        if proves and (gap.proved_at is None or page.index < gap.proved_at):
            gap.proved_at = page.index
        while self._answered < len(self._pages) and self._is_answered(self._answered):
            self._answered += 1

    def ready(self) -> list[ReadyPage]:
        """The answered pages that can be stored now, in order: each gap from its end down,
        a page only once everything above it is handed out (a full page spans at least
        ``count`` windows and each page is asked at most that far below the one above, so
        the pages join without a hole)."""
        out: list[ReadyPage] = []
        for gap in self._gaps:
            while not gap.proven and gap.written < len(gap.pages):
                page = gap.pages[gap.written]
                answered = page.outcome
                if answered is None:
                    break  # the pages below wait for it
                gap.written += 1
                outcome = answered
                if self._clips(outcome, gap.start_ms):
                    outcome = _clipped(outcome, gap.start_ms)
                above = gap.position_ms
                gap.position_ms = max(gap.start_ms, min(above, outcome.covered[0]))
                # The pages below a proof are void: never handed out, whatever they return.
                gap.proven = outcome.done or gap.position_ms <= gap.start_ms
                low = gap.position_ms
                fresh = sum(1 for c in outcome.candles if low <= c.start_ms < above)
                out.append(ReadyPage(gap.range, outcome, low, gap.proven, above - low, fresh))
                # Handed out to be stored: what decides the next pages is kept, not the
                # candles (a year of 1m would otherwise stay in memory to the end).
                page.outcome = replace(answered, candles=[])
        return out

    def _clips(self, outcome: PageOutcome, start_ms: int) -> bool:
        """Whether to store only the gap's part of a page reaching below it."""
        return not self._keep_below and outcome.covered[0] < start_ms

    # -- what to ask next ----------------------------------------------------------------

    def _is_answered(self, index: int) -> bool:
        page = self._pages[index]
        return page.skipped or page.outcome is not None

    def _learn(self, known: int) -> None:
        """Take the answers of ``pages[:known]`` (all in) into what decides the next pages,
        in index order: each gap's lowest proven start and proof, and the density of the
        newest full page that is not below a proof."""
        for page in self._pages[self._known : known]:
            gap = self._gaps[page.gap]
            if gap.known_proof:
                continue  # below a proof: void, whatever it returned
            outcome = page.outcome
            assert outcome is not None  # skipped pages lie below a proof
            low = outcome.covered[0]
            gap.known_low_ms = low if gap.known_low_ms is None else min(gap.known_low_ms, low)
            gap.known_proof = outcome.done or low <= gap.start_ms
            if page.full:
                spanned = self.timeframe.count_windows(low, page.request.to_ms)
                self._dense = spanned <= DENSE * page.request.count
        self._known = max(self._known, known)

    def _decide(self, index: int) -> PipelinePage | None:
        """Page ``index``: below every page asked in the first gap that reaches further
        down, where the lowest of them surely reaches (known: where it did; else its
        claim)."""
        for number, gap in enumerate(self._gaps):
            if gap.known_proof:
                continue
            bottom = gap.end_ms if gap.known_low_ms is None else gap.known_low_ms
            if gap.pages and gap.pages[-1].index >= self._known:
                bottom = min(bottom, gap.pages[-1].claim_ms)
            if bottom <= gap.start_ms:
                continue
            tf, count = self.timeframe, self._page_size
            to = bottom
            if self._grid and self._dense:  # never above the gap: its end may be the forming one
                to = min(grid_point_at_or_above(tf, count, bottom), gap.end_ms)
            claim = tf.shift(tf.floor(to - 1), 1 - count)  # count windows below ``to``
            page = PipelinePage(index, number, PageRequest(to, count), claim)
            gap.pages.append(page)
            self._pages.append(page)
            return page
        return None


def grid_point_at_or_above(timeframe: Timeframe, count: int, ms: int) -> int:
    """The first window start at or after ``ms`` whose number of windows since the epoch's
    is a multiple of ``count``: the one page grid every process shares."""
    origin = timeframe.floor(0)
    index = timeframe.count_windows(origin, ms)
    return timeframe.shift(origin, -(-index // count) * count)


def _clipped(outcome: PageOutcome, start_ms: int) -> PageOutcome:
    """A page's outcome limited to what lies at or after ``start_ms`` (a listing below it
    dropped with the candles: what a page above ``start_ms`` cannot see)."""
    kept = [c for c in outcome.candles if c.start_ms >= start_ms]
    listing = outcome.listing_ms
    if listing is not None and listing < start_ms:
        listing = None
    return PageOutcome(kept, (start_ms, outcome.covered[1]), listing, outcome.done)
