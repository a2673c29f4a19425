"""Moving a candle database to another store (``marketspine migrate``), verified.

Series by series and covered range by covered range, the candles go over in chunks of
10,000, each written as one page covering its part of the range (so the target's coverage
ends up the source's, gaps with no trade included). The copy is then checked: per series,
the same row count, first and last start and the same coverage and listing on both sides.
Running it again is harmless (upserts), so an interrupted migration is resumed by rerunning.
A target that held some of a series before (a shared database others collect into) is
checked to hold all of the source's: its coverage contains the source's ranges and has, in
them, as many candles as were copied.

What ``marketspine record`` kept goes over too, market by market: trades (each once: a trade
the target holds already is left as it is), books, tickers in batches of the replay's reads,
and the known gaps; then per market and kind the row counts, the first and last times and
the known gaps are compared (where the target recorded that market too: at least the
source's rows, over at least its span).

So does the run history (the finished warmups and backfill jobs that ``/api/warmup/history``
and ``/api/backfill/history`` read): a run the target holds already, field for field, is not
added again, so a rerun adds none and a target with runs of its own keeps them; then every
run of the source must be in the target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._base.timeframes import parse_timeframe
from .._base.urls import check_db, is_postgres_url
from ..errors import InvalidRequestError, StoreError
from .recording import RECORDED_KINDS, RecordingStore
from .recording_reads import book_batches, recorded_markets, ticker_batches, trade_batches
from .recording_store import recording_for
from .sqlite import CandleStore, SeriesSummary, SQLiteStore, runs_missing

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = ["MigrationReport", "migrate", "migrate_databases"]

_CHUNK = 10_000  # candles per page written


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What was moved and verified."""

    series: int
    candles: int
    ranges: int
    seconds: float
    recorded_rows: int = 0  # trades, books, tickers and known gaps that ``record`` kept
    runs: int = 0  # runs of the source's run history, all in the target now
    runs_added: int = 0  # of those, the ones the target did not hold before


async def migrate(
    source: CandleStore,
    target: CandleStore,
    *,
    progress: Callable[[SeriesSummary], None] | None = None,
) -> MigrationReport:
    """Copy every series of ``source`` into ``target`` and verify counts and coverage.

    Raises StoreError when the target does not hold, afterwards, what the source holds.
    """
    started = time.perf_counter()
    candles = ranges = 0
    summaries = await source.summary()
    held_before = {(s.market, s.timeframe) for s in await target.summary()}
    recorded_before = set(await recorded_markets(recording_for(target)))
    for series in summaries:
        tf = parse_timeframe(series.timeframe)
        market = series.market
        # Every stored candle lies in a covered range (write_page sees to it): copy range by
        # range, each chunk a page covering from where the last one stopped.
        for start, stop in series.ranges:
            cursor = start
            while cursor < stop:
                until = min(stop, tf.shift(cursor, _CHUNK))  # at most _CHUNK candles
                chunk = await source.read(market, tf, cursor, until)
                await target.write_page(market, tf, chunk, (cursor, until))
                candles += len(chunk)
                cursor = until
            ranges += 1
        if series.listing_ms is not None:
            await target.set_listing(market, tf, series.listing_ms)
        if progress is not None:
            progress(series)
    gone = await source.delisted()
    for market, seen_ms in gone.items():
        await target.set_delisted(market, seen_ms)
    await _verify(summaries, await target.summary(), target, held_before)
    delisted = await target.delisted()
    if any(delisted.get(market) != seen for market, seen in gone.items()):
        raise StoreError("migration check: the delisted markets differ")
    recorded = await _copy_recording(recording_for(source), recording_for(target), recorded_before)
    runs = await source.run_history()
    added = await target.merge_runs(runs)
    if runs_missing(await target.run_history(), runs):
        raise StoreError("migration check: runs of the run history are missing from the target")
    seconds = time.perf_counter() - started
    return MigrationReport(
        len(summaries), candles, ranges, seconds, recorded, len(runs), runs_added=added
    )


async def _copy_recording(
    source: RecordingStore, target: RecordingStore, held_before: set[str]
) -> int:
    """Copy every recorded row and known gap, then check the copy; return the rows copied.
    Markets in ``held_before`` (recorded in the target too) need at least the source's rows
    over at least its span.

    Raises StoreError naming the first market and kind that differs."""
    rows = 0
    markets = await recorded_markets(source)
    for market in markets:
        for kind in RECORDED_KINDS:
            span = await source.time_span(kind, market)
            if span is None:
                continue
            start, end = span[0], span[1] + 1
            if kind == "trades":
                async for trades in trade_batches(source, market, start, end):
                    await target.write(trades)
                    rows += len(trades)
            elif kind == "orderbooks":
                async for books in book_batches(source, market, start, end):
                    await target.write(orderbooks=books)
                    rows += len(books)
            else:
                async for tickers in ticker_batches(source, market, start, end):
                    await target.write(tickers=tickers)
                    rows += len(tickers)
        gaps = await source.trade_gaps(market)
        if gaps:
            await target.write(gaps=gaps)
            rows += len(gaps)
    for market in markets:
        for kind in RECORDED_KINDS:
            mine = (await source.row_count(kind, market), await source.time_span(kind, market))
            copy = (await target.row_count(kind, market), await target.time_span(kind, market))
            if mine != copy and not (market in held_before and _holds_more(mine, copy)):
                raise StoreError(
                    f"migration check: recorded {kind} of {market} differ (source {mine[0]} "
                    f"rows at {mine[1]}, target {copy[0]} at {copy[1]})"
                )
        if market in held_before:
            continue  # the target's own recording may have filled a gap the source knows
        if await source.trade_gaps(market) != await target.trade_gaps(market):
            raise StoreError(f"migration check: the known gaps of {market} differ")
    return rows


async def _verify(
    source: list[SeriesSummary],
    target: list[SeriesSummary],
    store: CandleStore,
    held_before: set[tuple[str, str]],
) -> None:
    """Raise StoreError naming the first series that differs (for a series ``store`` held
    before: the first the target does not hold all of)."""
    theirs = {(s.market, s.timeframe): s for s in target}
    for mine in source:
        copy = theirs.get((mine.market, mine.timeframe))
        if copy is None:
            raise StoreError(f"migration check: {mine.market} {mine.timeframe} is missing")
        for field in ("rows", "first_ms", "last_ms", "ranges", "listing_ms", "last_trade_ms"):
            if getattr(mine, field) != getattr(copy, field):
                if (mine.market, mine.timeframe) in held_before:
                    await _verify_held(mine, copy, store)
                    break
                raise StoreError(
                    f"migration check: {mine.market} {mine.timeframe} {field} differs "
                    f"(source {getattr(mine, field)!r}, target {getattr(copy, field)!r})"
                )


async def _verify_held(mine: SeriesSummary, copy: SeriesSummary, store: CandleStore) -> None:
    """The target, which held some of this series before, holds all the source does: its
    coverage contains the source's ranges, with as many candles in them, and the same
    listing where the source knows one."""
    series = f"{mine.market} {mine.timeframe}"
    if mine.listing_ms is not None and copy.listing_ms != mine.listing_ms:
        raise StoreError(
            f"migration check: {series} listing differs (source {mine.listing_ms!r}, target "
            f"{copy.listing_ms!r})"
        )
    tf = parse_timeframe(mine.timeframe)
    coverage = await store.coverage(mine.market, tf)
    rows = 0
    for start, stop in mine.ranges:
        missing = coverage.gaps(start, stop)
        if missing:
            raise StoreError(
                f"migration check: {series}: the target does not cover {len(missing)} "
                "part(s) of what the source covers"
            )
        cursor = start
        while cursor < stop:
            until = min(stop, tf.shift(cursor, _CHUNK))
            rows += len(await store.read(mine.market, tf, cursor, until))
            cursor = until
    if rows != mine.rows:
        raise StoreError(
            f"migration check: {series}: {rows} candles in the target where the source has "
            f"{mine.rows}"
        )


def _holds_more(
    mine: tuple[int, tuple[int, int] | None], copy: tuple[int, tuple[int, int] | None]
) -> bool:
    """Recorded rows of a market the target recorded too: at least as many, over a span at
    least as wide."""
    (rows, span), (copy_rows, copy_span) = mine, copy
    if span is None:
        return True
    return (
        copy_rows >= rows and copy_span is not None
        and copy_span[0] <= span[0] and copy_span[1] >= span[1]
    )  # fmt: skip


def migrate_databases(source: str, target: str) -> MigrationReport:
    """``marketspine migrate``: copy between two ``--db`` values (an SQLite path or a
    postgresql:// URL) and verify.

    Raises StoreError when the source does not exist, either side cannot be used or the
    check fails; InvalidRequestError when both name the same database.
    """
    check_db(source, "--from")
    check_db(target, "--to")
    if source == target:
        raise InvalidRequestError(f"--from and --to name the same database ({source})")
    if not is_postgres_url(source) and not Path(source).expanduser().is_file():
        raise StoreError(f"no database at {source}: expected an existing marketspine SQLite file")

    def open_one(db: str, *, read_only: bool) -> SQLiteStore | PostgresStore:
        if is_postgres_url(db):
            from .postgres import PostgresStore  # psycopg (the postgres extra) only when used

            return PostgresStore(db)
        return SQLiteStore(Path(db).expanduser(), read_only=read_only)

    async def run() -> MigrationReport:
        async with (
            open_one(source, read_only=True) as src,
            open_one(target, read_only=False) as dst,
        ):
            return await migrate(src, dst)

    return asyncio.run(run())
