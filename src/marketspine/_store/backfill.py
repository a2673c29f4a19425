"""The resumable backfill runner: planner pages → upstream → store, one transaction per page.

Several pages of each market are in flight at once (``pipeline.MarketPipeline``), and each
is written together with the coverage it proves as soon as it and every page above it in
its gap have arrived, so a crash or Ctrl-C at any instant loses at most the pages in
flight, and a rerun plans only what is still uncovered: the database ends the same as after
an uninterrupted run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .._base.coverage import Range
from .._base.groups import first_leaf
from .._base.timeframes import Timeframe
from .._budget.rules import Priority
from .._upbit.horizon import split_unserved
from ..errors import InvalidRequestError, UnknownMarketError
from ..records import Candle
from .pipeline import DEFAULT_DEPTH, MarketPipeline, PipelinePage
from .planner import PageRequest, plan_gaps
from .sqlite import CandleStore

__all__ = [
    "CandleSource",
    "CollectSummary",
    "MarketCollectSummary",
    "PageLeases",
    "ProgressEvent",
    "collect",
    "fetch_page",
]


class _Listed(Protocol):
    @property
    def market(self) -> str: ...


class CandleSource(Protocol):
    """What the collector needs from upstream (``marketspine._client.client.Client`` has it)."""

    async def candles(
        self,
        market: str,
        timeframe: Timeframe,
        *,
        count: int = 200,
        to_ms: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Candle]: ...

    async def markets(self) -> Sequence[_Listed]: ...


class PageLeases(Protocol):
    """Fetches a page at most once among the processes sharing it
    (``marketspine._store.page_lease.RedisPageLeases`` does, through Redis)."""

    async def fetch_once(
        self, key: str, fetch: Callable[[], Awaitable[list[Candle]]]
    ) -> tuple[list[Candle], bool]:
        """The page named ``key``: fetched by ``fetch`` here (True) or by another process
        (False)."""
        ...


async def fetch_page(
    source: CandleSource,
    leases: PageLeases | None,
    market: str,
    tf: Timeframe,
    request: PageRequest,
    priority: Priority,
) -> tuple[list[Candle], bool]:
    """The page ``request`` of ``market``, and whether this process fetched it: once among
    the processes sharing ``leases`` (a page is named by market, timeframe, ``to`` and
    ``count``, so two processes walking the same gap ask for the same pages)."""

    def fetch() -> Awaitable[list[Candle]]:
        return source.candles(
            market, tf, count=request.count, to_ms=request.to_ms, priority=priority
        )

    if leases is None:
        return await fetch(), True
    return await leases.fetch_once(f"{market}:{tf.key}:{request.to_ms}:{request.count}", fetch)


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """Sent after every stored page. ``done_ms`` of ``total_ms`` (the uncovered time found
    at the start) is now covered; ``position_ms`` is the oldest point reached in the current
    gap (pages walk backwards)."""

    market: str
    timeframe: str
    pages: int
    candles_written: int
    position_ms: int
    done_ms: int
    total_ms: int
    finished: bool


@dataclass(slots=True)
class MarketCollectSummary:
    """What one market's backfill did. ``delisted``: upstream no longer lists the market
    (Upbit answers 404 for it) but the store holds its candles, so nothing new was asked."""

    market: str
    gaps: int = 0
    pages: int = 0
    candles_written: int = 0
    listing_ms: int | None = None
    delisted: bool = False


@dataclass(frozen=True, slots=True)
class CollectSummary:
    """What ``collect`` did; ``upstream_calls`` counts candle pages requested. ``unserved``
    is the part of the range older than upstream serves (1s candles: about three months),
    neither asked for nor recorded as covered. ``collectable`` is False when nothing of the
    request could be collected at all: the whole range is unserved, or every market is
    delisted."""

    markets: tuple[str, ...]
    timeframe: str
    candles_written: int
    upstream_calls: int
    seconds: float
    per_market: tuple[MarketCollectSummary, ...] = field(default=())
    unserved: Range | None = None
    collectable: bool = True

    @property
    def delisted(self) -> tuple[str, ...]:
        """The markets skipped because upstream delisted them."""
        return tuple(d.market for d in self.per_market if d.delisted)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``marketspine collect --json``)."""
        return asdict(self)


async def collect(
    client: CandleSource,
    store: CandleStore,
    markets: Iterable[str],
    timeframe: Timeframe,
    *,
    since_ms: int,
    until_ms: int,
    now_ms: int,
    priority: Priority = Priority.LOW,
    progress: Callable[[ProgressEvent], None] | None = None,
    leases: PageLeases | None = None,
    depth: int = DEFAULT_DEPTH,
    keep_below: bool = True,
    grid: bool = False,
) -> CollectSummary:
    """Backfill the closed candles of ``markets`` starting in ``[since_ms, until_ms)``.

    ``now_ms`` is upstream's clock: the window forming then is never stored. Markets run
    concurrently, paced by the client's rate budget; each market pages backwards through the
    gaps its coverage leaves, writing each page with its coverage in one transaction.

    The part of the range older than upstream serves (``_upbit.horizon``) is left out and
    reported as ``unserved``. A market upstream no longer lists whose candles the store
    holds is delisted: it is skipped (``delisted`` in its summary), as is a market that
    upstream delists while its pages are fetched.

    Returns a CollectSummary. Raises InvalidRequestError for a bad range or timeframe,
    UnknownMarketError (before storing anything; the market list is asked together with the
    first pages, so at most a first page per market was asked) for a market upstream does
    not list and the store knows nothing of, and the client's or store's typed error for a
    page that finally fails — never skipping it.

    ``leases`` (processes sharing a Redis) make each page fetched once among them; a page
    another process fetched is stored here too but not counted in ``upstream_calls``.
    Processes that plan the same gaps ask the same pages; with ``grid``, dense pages lie on
    one grid whatever the gaps (``pipeline.grid_point_at_or_above``), so collectors whose
    ranges overlap ask the same pages there too, for at most one call more per gap.

    Up to ``depth`` pages are in flight at once (``pipeline``; shared among the markets that
    have something to fetch, at least one each), so one market fills the rate budget at any
    distance from upstream; pages are still stored strictly from each gap's end downwards,
    one transaction each. A full page reaching below the range is stored whole (the next
    request nearby costs nothing), or with ``keep_below=False`` only its part in the range,
    so that an interrupted run and its rerun store exactly what one run stores.
    """
    if depth < 1:
        raise InvalidRequestError(f"depth must be at least 1 page in flight, got {depth}")
    tf = timeframe
    codes = list(dict.fromkeys(m.strip().upper() for m in markets))
    if not codes:
        raise InvalidRequestError("no market given: name at least one, such as KRW-BTC")
    if since_ms >= until_ms:
        raise InvalidRequestError(
            f"empty time range: since ({since_ms}) must be before until ({until_ms})"
        )
    started = time.perf_counter()
    unserved, served_from = split_unserved(tf, since_ms, until_ms, now_ms)
    plans: dict[str, list[Range]] = {}
    for code in codes:
        coverage = await store.coverage(code, tf)
        plans[code] = (
            plan_gaps(coverage, tf, served_from, until_ms, now_ms) if served_from < until_ms else []
        )
    details = {code: MarketCollectSummary(code) for code in codes}
    for code in codes:
        details[code].gaps = len(plans[code])
    # ``depth`` pages in flight in all: one market gets them all, many markets one each at
    # least (as many as before), so a long run's queue at the rate budget stays short.
    working = sum(1 for code in codes if plans[code])
    per_market = max(1, -(-depth // max(1, working)))
    # Whether each market may be stored: upstream lists it, or it is delisted (False). The
    # market list is asked together with each market's first page, not a round trip before
    # it; no answer is looked at before the list has cleared its market, so a market upstream
    # does not list still fails with nothing stored. A covered closed range costs zero calls:
    # the list is only asked when there is something to fetch.
    loop = asyncio.get_running_loop()
    cleared: dict[str, asyncio.Future[bool]] = {code: loop.create_future() for code in codes}
    try:
        async with asyncio.TaskGroup() as group:
            if working:
                group.create_task(_check_listed(client, store, plans, details, cleared))
            for code in codes:
                group.create_task(
                    _collect_market(
                        client,
                        store,
                        tf,
                        plans[code],
                        details[code],
                        priority,
                        progress,
                        cleared[code],
                        leases,
                        per_market,
                        keep_below,
                        grid,
                    )
                )
    except BaseExceptionGroup as failures:
        raise first_leaf(failures) from None
    for detail in details.values():
        if detail.delisted:  # kept for `status`, which reads the store alone
            await store.set_delisted(detail.market, now_ms)
    return CollectSummary(
        markets=tuple(codes),
        timeframe=tf.name,
        candles_written=sum(d.candles_written for d in details.values()),
        upstream_calls=sum(d.pages for d in details.values()),
        seconds=time.perf_counter() - started,
        per_market=tuple(details[code] for code in codes),
        unserved=unserved,
        collectable=served_from < until_ms and not all(d.delisted for d in details.values()),
    )


async def _check_listed(
    client: CandleSource,
    store: CandleStore,
    plans: dict[str, list[Range]],
    details: dict[str, MarketCollectSummary],
    cleared: dict[str, asyncio.Future[bool]],
) -> None:
    """Clear each market for storing (``cleared``: True) once upstream's list names it; a
    market the list does not name but the store holds is delisted (False: nothing more of it
    is stored). Raises UnknownMarketError for markets neither names (a typo, or delisted
    before anything was collected), which stops the run before anything is stored."""
    listed = {info.market for info in await client.markets()}
    unknown = [code for code in cleared if code not in listed]
    held = {s.market for s in await store.summary()} if unknown else set()
    for code in unknown:
        if code in held:  # Upbit forgets a delisted market; the store does not
            details[code].delisted = True
            details[code].gaps = 0
            plans[code] = []
    unknown = [code for code in unknown if code not in held]
    if unknown:
        raise UnknownMarketError(
            unknown[0],
            f"unknown market{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            "(not listed upstream, and nothing of it stored: a typo, or delisted "
            "before anything was collected; expected codes such as KRW-BTC)",
        )
    for code, verdict in cleared.items():
        verdict.set_result(not details[code].delisted)


async def _collect_market(
    client: CandleSource,
    store: CandleStore,
    tf: Timeframe,
    gaps: list[Range],
    detail: MarketCollectSummary,
    priority: Priority,
    progress: Callable[[ProgressEvent], None] | None,
    cleared: Awaitable[bool],
    leases: PageLeases | None = None,
    depth: int = DEFAULT_DEPTH,
    keep_below: bool = True,
    grid: bool = False,
) -> None:
    market = detail.market
    total_ms = sum(end - start for start, end in gaps)
    done_ms = 0
    pipeline = MarketPipeline(tf, gaps, keep_below=keep_below, grid=grid)
    answers: asyncio.Queue[tuple[PipelinePage, list[Candle] | Exception, bool]] = asyncio.Queue()
    fetching: set[asyncio.Task[None]] = set()
    failure: Exception | None = None

    async def fetch(page: PipelinePage) -> None:
        try:
            candles, fetched = await fetch_page(client, leases, market, tf, page.request, priority)
        except Exception as exc:  # handed to the loop, which stores what came before it
            answers.put_nowait((page, exc, False))
        else:
            answers.put_nowait((page, candles, fetched))

    outstanding = 0  # fetches started whose answer (or error) is not taken yet
    async with asyncio.TaskGroup() as group:
        while True:
            while failure is None and pipeline.in_flight < depth:
                if (page := pipeline.next_request()) is None:
                    break
                task = group.create_task(fetch(page))
                fetching.add(task)
                task.add_done_callback(fetching.discard)
                outstanding += 1
            if pipeline.done or (failure is not None and not outstanding):
                break
            assert outstanding, "the pipeline is neither done nor waiting for a page"
            page, answer, fetched = await answers.get()
            outstanding -= 1
            if not await cleared:  # delisted (see ``_check_listed``): nothing is stored
                detail.pages += fetched
                break
            if isinstance(answer, Exception):
                # As the walk did: the pages above the failed one are stored, then it is
                # raised. Those in flight are waited for; nothing more is asked.
                failure = failure or answer
                continue
            detail.pages += fetched
            pipeline.feed(page, answer)
            for ready in pipeline.ready():
                outcome = ready.outcome
                await store.write_page(
                    market, tf, outcome.candles, outcome.covered, listing_ms=outcome.listing_ms
                )
                detail.candles_written += ready.new_candles
                if outcome.listing_ms is not None:
                    detail.listing_ms = max(
                        detail.listing_ms or outcome.listing_ms, outcome.listing_ms
                    )
                done_ms += ready.new_ms
                if progress is not None:
                    progress(
                        ProgressEvent(
                            market,
                            tf.name,
                            detail.pages,
                            detail.candles_written,
                            ready.position_ms,
                            done_ms,
                            total_ms,
                            finished=done_ms >= total_ms,
                        )
                    )
        # Pages asked below a proof of the gap's start are void: no need to wait for them.
        for task in fetching:
            task.cancel()
    if pipeline.done:
        failure = None  # it failed a void page, asked below the proof of its gap's start
    if isinstance(failure, UnknownMarketError):
        # Delisted while collecting: what is stored stays, and stays exact.
        detail.delisted = True
    elif failure is not None:
        raise failure
    if progress is not None and (not gaps or detail.gaps == 0):
        progress(ProgressEvent(market, tf.name, 0, 0, 0, 0, 0, finished=True))
