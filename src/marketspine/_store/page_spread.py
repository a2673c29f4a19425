"""Which pages of a cold read can be sent together rather than walked (pure, no I/O).

Walking backwards, each page's ``to`` is the oldest start the page before it returned: one
round trip per page, 540 ms for 1,000 candles at 100 ms latency. Pages sent together need
their ``to``s before any of them answers. A window holds one candle at most, so a full page
never spans fewer than 200 windows: pages whose ``to``s lie 200 windows apart can overlap
but never leave a hole between them. How far such a chain reaches depends on the density
``d`` (candles per window) of what is already known above it (the first page, a stored
run): ``k`` pages bring about ``200 + (k - 1) · 200 · d`` candles.

So a dense market (a candle in every window, as KRW-BTC's minutes) sends its remaining
pages at once (ten at a time), and a nearly dense one adds the pages its gaps cost, while
that stays within the calls the read may make. A sparse market walks, page by page.

That is a measured choice. The bound (ceil(N/200) + 1 calls: for count=1,000 the first
page, the four a perfect placement needs and one spare) leaves one page of margin for a
guess, while an illiquid coin's minutes swing: on the simulator's illiquid markets the
200-candle page after the first spans 0.25 to 1.85 times its windows, the fourth after it
0.13 to 4.4 times (5-95%; 0.6 to 1.9 on nearly dense ones). Replayed on the simulator's own
pages (20 cold count=1,000 reads with ends 3 days apart on each of 8 markets trading 6 to
600 times a day):

* pages placed by the first page's density, every allowed call at once, holes then filled
  together: about two round trips in 1-12% of reads, 3.4-3.9 on average, 8-9 calls;
* a coarse page sent beside the first as a density map (day candles' traded value scaled
  by the first page's value per candle, an idealised map): it takes the spare call, leaving
  four pages for 800 candles without margin, so never two round trips within 6 calls; with
  one page of margin (7 calls) 40% of reads, with two (8 calls) 58%;
* one guessed page beside the walk's second (the spare call, placed 0.6 to 2 first pages'
  spans below it), the rest walked: 5 round trips and 6 calls; of 960 reads (40 at random
  ends on each of 4 markets, 6 placements) one saved a round trip. A guess that joins the
  walk overlaps it, and 600 candles less any overlap leave three pages to walk, not two.
  Walking on below each guessed page too: 4.2-4.9 round trips on average, but 7-9 calls in
  3-68% of reads;
* the walk: 5 round trips and 5 calls, every time.

None comes near two round trips within the bound, so the bound wins: the walk stays. What
does help without a call is a stored run just above a read's end (a chart paging back has
just read the newer page): its density places every page of the first round
(``CandleReader`` passes it as ``held``/``windows``).

Whatever a chain still misses (older history sparser than the estimate) the caller walks
afterwards: a guess may cost a round trip, never exactness, since each page is stored with
exactly the range it proves.
"""

from __future__ import annotations

import math

from .._base.timeframes import Timeframe
from .planner import MAX_PAGE, PageRequest

__all__ = ["MAX_SPREAD", "spread_pages"]

# Pages of one read in flight at once: a second of one Upbit group's budget. A longer read
# (count=100,000) goes out in rounds of these, so it never fills the budget's queue ahead
# of other requests of its priority.
MAX_SPREAD = 10


def spread_pages(
    tf: Timeframe,
    position_ms: int,
    want: int,
    *,
    held: int,
    windows: int,
    calls_left: int,
    stop_ms: int | None = None,
) -> list[PageRequest]:
    """The pages to send at once for the ``want`` newest candles before ``position_ms`` (a
    window start), when ``held`` candles were found over the ``windows`` windows above it.

    The first is the exact next page of a walk (``to`` = ``position_ms``); the others follow
    200 windows apart, as many as the estimated density needs to reach ``want`` candles
    (one more as a margin when the market is not fully dense and ``calls_left`` allows),
    at most ``MAX_SPREAD``.
    Just the first when one page is enough, nothing is known to estimate from, or the
    chain would need more than ``calls_left`` calls and more than a walk would. Pages
    reaching to or below ``stop_ms`` (the listing, the top of the next stored run, the 1s
    horizon) are left out.
    """
    first = PageRequest(position_ms, MAX_PAGE)
    if want <= MAX_PAGE or held <= 0 or windows <= 0:
        return [first]
    density = min(1.0, held / windows)
    pages = 1 + math.ceil((want - MAX_PAGE) / (MAX_PAGE * density))
    if density < 1.0 and pages < calls_left:
        pages += 1  # the estimate came from a few pages: a margin for older, sparser ones
    if pages > max(calls_left, math.ceil(want / MAX_PAGE)):  # a walk would cost fewer
        return [first]
    pages = min(pages, MAX_SPREAD)  # the rest in the next round, the density known better
    requests = [first]
    for page in range(1, pages):
        to_ms = tf.shift(position_ms, -page * MAX_PAGE)
        if stop_ms is not None and to_ms <= stop_ms:
            break
        requests.append(PageRequest(to_ms, MAX_PAGE))
    return requests
