"""``record(spine, ...)``: what ``marketspine record`` does once its flags are read: the markets
picked, the live stream of their trades, books and tickers joined to what the store holds,
written by a ``Recorder`` until stopped, and the store's holes of the last days backfilled
from REST at LOW priority beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from .._base.groups import first_leaf
from .._base.markets import market_code
from .._live.recorder import RecordCounts, Recorder
from .._live.recorder_lease import RecorderLease
from .._live.trade_backfill import BackfillReport, backfill_market
from .._store.recording import RecordedKind, RecordingStore, TradeGap, WriterFence
from .._store.recording_store import recording_for
from .._store.retention import KEEP_KINDS, keep_pruning
from ..errors import FencedError, InvalidRequestError
from ..records import Trade
from .spine import Spine

__all__ = [
    "RECORD_KINDS",
    "RecordPlan",
    "RecordSummary",
    "market_words",
    "pick_markets",
    "record",
    "record_kinds",
    "record_plan",
]

RECORD_KINDS = ("trade", "orderbook", "ticker")
log = logging.getLogger("marketspine.record")

LISTENER_SIZE = 1_000_000  # events queued for the recorder before Overflow (a hole to fill)


@dataclass
class RecordSummary:
    """What a recording run did."""

    markets: list[str]
    kinds: list[str]
    counts: RecordCounts
    seconds: float
    backfill: list[BackfillReport] = field(default_factory=list)
    gaps: list[TradeGap] = field(default_factory=list)  # every known gap of these markets


@dataclass(frozen=True)
class RecordPlan:
    """What ``serve --record`` keeps: ``kinds`` of ``markets`` (codes; [] with ``quote``:
    every listed market of it; [] without: every listed market), books at most one per
    ``orderbook_every_ms``."""

    kinds: list[str]
    markets: list[str]
    quote: str | None = None
    orderbook_every_ms: int = 0


def record_plan(kinds: str, markets: str, orderbook_every_ms: int = 0) -> RecordPlan:
    """``serve --record KINDS --record-markets WORDS`` checked: WORDS is market codes
    (comma separated), ``all``, or one quote currency (``KRW``: every market quoted in it).

    Raises InvalidRequestError for bad kinds or markets."""
    kind_list = record_kinds(kinds, "--record")
    words = [w.strip() for w in markets.split(",") if w.strip()]
    if not words:
        raise InvalidRequestError(
            "--record-markets must name the markets to record: codes (KRW-BTC,KRW-ETH), "
            "all, or a quote currency (KRW)"
        )
    if len(words) == 1 and words[0].isalpha() and words[0].lower() != "all":
        return RecordPlan(kind_list, [], words[0].upper(), orderbook_every_ms)
    codes = market_words(words, None)
    return RecordPlan(kind_list, codes or ["all"], None, orderbook_every_ms)


def record_kinds(text: str, name: str = "--kinds") -> list[str]:
    """``--kinds`` (comma separated; the flag ``name``) checked. Raises InvalidRequestError
    for an unknown one."""
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    wrong = [k for k in kinds if k not in RECORD_KINDS]
    if wrong or not kinds:
        raise InvalidRequestError(
            f"{name} must name some of {', '.join(RECORD_KINDS)} (comma separated), got {text!r}"
        )
    return list(dict.fromkeys(kinds))


def market_words(asked: Sequence[str], quote: str | None) -> list[str]:
    """The market codes ``asked`` for, checked before anything is opened; [] means every
    listed market (``all``, or every one quoted in ``quote``).

    Raises InvalidRequestError for a bad code, ``all`` beside codes, codes beside ``quote``,
    or nothing asked at all."""
    words = [m.strip() for m in asked]
    if any(w.lower() == "all" for w in words):
        if len(words) > 1:
            raise InvalidRequestError("'all' records every listed market: name no market beside it")
        return []
    if not words:
        if quote is None:
            raise InvalidRequestError(
                "name the markets to record (KRW-BTC ...), all, or --quote KRW"
            )
        return []
    if quote is not None:
        raise InvalidRequestError("--quote picks every market of a quote: name no market with it")
    return list(dict.fromkeys(market_code(w) for w in words))


def pick_markets(asked: Sequence[str], quote: str | None, listed: Sequence[str]) -> list[str]:
    """The markets to record: ``asked`` codes (see ``market_words``; each must be listed),
    or with ``all`` / ``quote`` every listed market (of that quote currency).

    Raises InvalidRequestError for what ``market_words`` refuses, an unlisted code or a
    quote no listed market has."""
    codes = market_words(asked, quote)
    if not codes:
        wanted = None if quote is None else quote.strip().upper()
        picked = [m for m in listed if wanted is None or m.partition("-")[0] == wanted]
        if not picked:
            quotes = sorted({m.partition("-")[0] for m in listed})
            raise InvalidRequestError(
                f"--quote {quote}: no listed market is quoted in it (quotes: {', '.join(quotes)})"
            )
        return picked
    known = set(listed)
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise InvalidRequestError(
            f"unknown market {', '.join(unknown)}: not listed upstream "
            "(expected codes such as KRW-BTC, as GET /v1/market/all lists them)"
        )
    return codes


async def record(
    spine: Spine,
    markets: Sequence[str],
    *,
    quote: str | None = None,
    kinds: Sequence[str] = RECORD_KINDS,
    orderbook_every_ms: int = 0,
    orderbook_depth: int | None = None,
    backfill_ms: int = 0,
    keep_ms: Mapping[RecordedKind, int] = {},
    stop: asyncio.Event,
    on_start: Callable[[list[str]], None] | None = None,
    lease: RecorderLease | None = None,
) -> RecordSummary:
    """Record ``kinds`` of ``markets`` (see ``pick_markets``) into the Spine's store until
    ``stop`` is set; then commit what is held and return what was done. Books are recorded
    ``orderbook_depth`` levels deep (1, 5, 15 or 30; None: 30). ``backfill_ms``
    (> 0) also fills, at LOW priority, the store's trade holes of that long before now
    (known gaps, the span before the first stored trade). ``keep_ms`` (per table, see
    ``_store.retention.parse_keep``) prunes the rows of these markets older than that in
    the background, on upstream's clock, while this process writes. ``on_start`` hears the
    markets each time this process starts writing.

    With ``lease`` (entered; ``record --redis``) this process writes only while it holds
    it and stands by otherwise: on taking it, it first fences off the holder before it
    (whose writes the database refuses from then on), then joins from the last stored trade
    as a rerun does; on losing it, it stops writing and stands by again.

    Raises InvalidRequestError for bad markets or kinds, StoreError when the store fails."""
    started = time.perf_counter()
    kinds = [k for k in RECORD_KINDS if k in kinds]
    listed = [m.market for m in await spine.markets()]
    codes = pick_markets(markets, quote, listed)
    recording = recording_for(spine.store)
    if "orderbook" in kinds and orderbook_depth is not None:
        await spine.watch(["orderbook"], codes, depth=orderbook_depth)  # the stream keeps it
    run = partial(
        _record_run,
        spine,
        recording,
        codes,
        kinds,
        orderbook_every_ms,
        backfill_ms,
        keep_ms,
        on_start,
    )
    total, reports = RecordCounts(), list[BackfillReport]()
    if lease is None:
        _add(total, await run(stop, None, reports))
    else:
        while not stop.is_set():
            fence = await lease.acquire(stop)
            if fence is None:
                break
            try:
                # Fence off the holder before: once this commits, the database refuses its
                # writes, so the last stored trade read next is where it truly stopped.
                await recording.write(fence=fence)
                log.info("took the recorder lease (generation %d): recording", fence.generation)
                _add(total, await _while_held(lease, fence, run, stop, reports))
            except FencedError as exc:
                log.warning("recording stopped: %s", exc)
    gaps = [g for g in await recording.trade_gaps() if g.market in set(codes)]
    return RecordSummary(codes, kinds, total, time.perf_counter() - started, reports, gaps)


RunOnce = Callable[
    [asyncio.Event, WriterFence | None, list[BackfillReport]], Awaitable[RecordCounts]
]


async def _while_held(
    lease: RecorderLease,
    fence: WriterFence,
    run: RunOnce,
    stop: asyncio.Event,
    reports: list[BackfillReport],
) -> RecordCounts:
    """``run`` until ``stop`` is set or the lease of ``fence`` is lost."""
    ending = asyncio.Event()
    outcome: RecordCounts | Exception
    async with asyncio.TaskGroup() as group:
        keeper = group.create_task(lease.keep(fence))
        keeper.add_done_callback(lambda _: ending.set())
        stopping = group.create_task(stop.wait())
        stopping.add_done_callback(lambda _: ending.set())
        try:
            outcome = await run(ending, fence, reports)
        except Exception as exc:  # raised below, not as an ExceptionGroup of the group's
            outcome = exc
        if keeper.done() and not keeper.cancelled():
            log.warning("recorder lease lost: %s; standing by", keeper.result())
        keeper.cancel()
        stopping.cancel()
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _add(total: RecordCounts, counts: RecordCounts) -> None:
    total.trades += counts.trades
    total.orderbooks += counts.orderbooks
    total.tickers += counts.tickers
    total.gaps += counts.gaps
    total.batches += counts.batches
    total.filled += counts.filled
    total.markets |= counts.markets


async def _record_run(
    spine: Spine,
    recording: RecordingStore,
    codes: list[str],
    kinds: list[str],
    orderbook_every_ms: int,
    backfill_ms: int,
    keep_ms: Mapping[RecordedKind, int],
    on_start: Callable[[list[str]], None] | None,
    stop: asyncio.Event,
    fence: WriterFence | None,
    reports: list[BackfillReport],
) -> RecordCounts:
    """One recording from the last stored trades until ``stop``: the live stream joined to
    them, written with ``fence``, and the backfill beside it."""
    last: dict[str, Trade] = {}
    if "trade" in kinds:
        for code in codes:
            found = await recording.last_trade(code)
            if found is not None:
                last[code] = found
    recorder = Recorder(
        recording, spine.client, last=last, orderbook_every_ms=orderbook_every_ms, fence=fence
    )
    # Closed with the recording, not when collected: its listener leaves the stream now.
    events = cast(
        AsyncGenerator[object, None],
        spine.stream(kinds, codes, maxsize=LISTENER_SIZE, since=last or None),
    )
    try:
        async with contextlib.aclosing(events), asyncio.TaskGroup() as group:
            backfills = []
            if backfill_ms > 0 and "trade" in kinds:
                horizon = spine.client.upstream_now_ms() - backfill_ms
                for code in codes:
                    backfills.append(
                        group.create_task(_backfill(spine, recorder, code, horizon, reports))
                    )
            tables = [KEEP_KINDS[k] for k in kinds]
            kept = {table: span for table, span in keep_ms.items() if table in tables}
            if kept:  # cancelled with the backfills once the recording stops
                prune = keep_pruning(recording, kept, codes, spine.client.upstream_now_ms)
                backfills.append(group.create_task(prune))
            if on_start is not None:
                on_start(codes)
            outcome: RecordCounts | Exception
            try:
                outcome = await recorder.run(events, stop)
            except Exception as exc:  # raised below, not as an ExceptionGroup of the group's
                outcome = exc
            for task in backfills:
                task.cancel()
    except BaseExceptionGroup as failures:  # a backfill's or pruning's: one error
        raise first_leaf(failures) from None
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def _backfill(
    spine: Spine, recorder: Recorder, market: str, horizon_ms: int, reports: list[BackfillReport]
) -> None:
    """Fill the holes of ``market`` after ``horizon_ms``: the known gaps at once, and once
    this run committed a trade of it (the join to the stored trades, with the gap it may
    have left), that gap and the span before its first stored trade."""
    recording, report = recording_for(spine.store), BackfillReport(market)
    reports.append(report)
    fill = partial(
        backfill_market,
        spine.client,
        recording,
        market,
        horizon_ms=horizon_ms,
        wall_ms=spine.client.upstream_now_ms,
        report=report,
    )
    await fill(before_first=False)
    await recorder.committed_trade(market)
    await fill()
