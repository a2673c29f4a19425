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
* **Ahead only where dense.** While the last full page spanned at most ``DENSE`` times
  ``count`` windows, the next pages are asked ``count`` windows apart from the lowest point
  asked so far: no hole is possible, and at most one page in ten overlaps the one above it.
  Where a page spans more (a sparse stretch: 200 candles over thousands of windows), strides
  of ``count`` windows would ask for the same candles many times over, and a stride guessed
  from the span leaves holes as density varies (a whole call for each, measured: up to 1.8
  calls per page on a young market) — so there the gap is walked as before, one page at a
  time from the oldest start received, until a dense page is seen again.
* **Written in order.** Answers are handed out for storing strictly from the gap's end
  downwards, each only once everything above it is proven, so the store after a crash at
  any instant is one that the sequential walk could have left: coverage contiguous from the
  end of the gap, exact.
* **Kept to the gap, if asked.** A full page reaching below the gap's start is stored whole
  by default (the next request nearby then costs nothing), but which candles lie below
  depends on where the pages fell, and so on the moment a run was interrupted. With
  ``keep_below=False`` it stores only its part in the gap, so an interrupted run and its
  rerun store exactly what one run stores (``marketspine collect``). (A short page keeps
  everything it returned either way: everything down to the listing, wherever it was asked.)
* **Stopped at the proof.** Once a written page proves the gap complete (it reached the
  gap's start, or was short: nothing older exists), the pages asked below it are void: their
  answers are dropped unwritten (an empty answer below a listing would claim a wrong one).
  Below a listing reached by dense pages, at most ``depth - 1`` calls are spent so.

The runner (``backfill.collect``) does the I/O: it sends what ``next_request`` gives while
fewer than ``depth`` pages are in flight, feeds each answer with ``feed`` and writes what
``ready`` hands out, one transaction per page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
# A page spanning up to this many times ``count`` windows counts as dense: asking ahead by
# ``count`` windows costs at most 10% more calls than the walk there.
DENSE = 1.1


@dataclass(eq=False, slots=True)
class PipelinePage:
    """One page asked of one gap: how far down it surely reaches, and its answer."""

    gap: int  # index of its gap (newest first)
    request: PageRequest
    claim_ms: int  # the low end it surely proves when full: ``count`` windows below ``to``
    outcome: PageOutcome | None = None
    void: bool = False  # asked below a proof of the gap's end: its answer is dropped

    @property
    def bottom_ms(self) -> int:
        """How far down this page reaches: proven when answered, else claimed."""
        return self.claim_ms if self.outcome is None else self.outcome.covered[0]


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
    pages: list[PipelinePage]  # by ``to`` descending; fillers are put in their place
    written: int = 0  # pages[:written] are handed out
    position_ms: int = 0  # everything in [position_ms, end_ms) is handed out
    proven: bool = False  # a handed-out page proved the gap complete

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
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE:
            raise InvalidRequestError(f"page_size must be 1..{MAX_PAGE}, got {page_size}")
        self.timeframe = timeframe
        self._page_size = page_size
        self._keep_below = keep_below
        self._gaps = [_Gap(start, end, [], position_ms=end) for start, end in reversed(gaps)]
        self._ahead = False  # the last full page answered was dense: ask ahead
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
        density is not learnt yet, or every gap is asked down to its start)."""
        if not self._ahead and self._in_flight:
            return None  # not known dense: walk, one page at a time
        for index, gap in enumerate(self._gaps):
            if gap.proven:
                continue
            page = self._below(index, gap)
            if page is not None:
                self._in_flight += 1
                return page
        return None

    def feed(self, page: PipelinePage, candles: Sequence[Candle]) -> None:
        """Take the answer to ``page`` (any order of candles, any order of pages)."""
        if page.outcome is not None or self._in_flight <= 0:
            raise InvalidRequestError("MarketPipeline.feed() of a page not asked or fed twice")
        self._in_flight -= 1
        gap = self._gaps[page.gap]
        page.outcome = page_outcome(self.timeframe, page.request, candles, gap.start_ms)
        if not page.void and len(page.outcome.candles) >= page.request.count:
            tf, low = self.timeframe, page.outcome.covered[0]
            spanned = tf.count_windows(low, page.request.to_ms)
            self._ahead = spanned <= DENSE * page.request.count

    def ready(self) -> list[ReadyPage]:
        """The answered pages that can be stored now, in order: each gap from its end down,
        a page only once everything above it is handed out (a full page spans at least
        ``count`` windows and each page is asked at most that far below the one above, so
        the pages join without a hole)."""
        out: list[ReadyPage] = []
        for gap in self._gaps:
            while not gap.proven and gap.written < len(gap.pages):
                page = gap.pages[gap.written]
                outcome = page.outcome
                if outcome is None:
                    break  # the pages below wait for it
                gap.written += 1
                if self._clips(page.request, outcome, gap.start_ms):
                    outcome = _clipped(outcome, gap.start_ms)
                above = gap.position_ms
                gap.position_ms = max(gap.start_ms, min(above, outcome.covered[0]))
                if outcome.done or gap.position_ms <= gap.start_ms:
                    gap.proven = True
                    for later in gap.pages[gap.written :]:
                        later.void = True
                low = gap.position_ms
                fresh = sum(1 for c in outcome.candles if low <= c.start_ms < above)
                out.append(ReadyPage(gap.range, outcome, low, gap.proven, above - low, fresh))
        return out

    def _clips(self, request: PageRequest, outcome: PageOutcome, start_ms: int) -> bool:
        """Whether to store only the gap's part of a full page reaching below it."""
        full = len(outcome.candles) >= request.count
        return not self._keep_below and full and outcome.covered[0] < start_ms

    # -- what to ask next ----------------------------------------------------------------

    def _below(self, index: int, gap: _Gap) -> PipelinePage | None:
        """The page below every page asked in the gap, if the gap reaches further down:
        where the lowest of them surely reaches (answered: where it did)."""
        if any(p.outcome is not None and p.outcome.done for p in gap.pages):
            return None
        bottom = min((p.bottom_ms for p in gap.pages), default=gap.end_ms)
        if bottom <= gap.start_ms:
            return None

        page = self._page(index, bottom)
        gap.pages.append(page)
        return page

    def _page(self, index: int, to_ms: int) -> PipelinePage:
        tf, count = self.timeframe, self._page_size
        claim = tf.shift(tf.floor(to_ms - 1), 1 - count)  # count windows below ``to``
        return PipelinePage(index, PageRequest(to_ms, count), claim)


def _clipped(outcome: PageOutcome, start_ms: int) -> PageOutcome:
    """A full page's outcome limited to what lies at or after ``start_ms``."""
    kept = [c for c in outcome.candles if c.start_ms >= start_ms]
    return PageOutcome(kept, (start_ms, outcome.covered[1]), outcome.listing_ms, outcome.done)
