"""Moving a candle database to another store (``marketspine migrate``), verified.

Series by series and covered range by covered range, the candles go over in chunks of
10,000, each written as one page covering its part of the range (so the target's coverage
ends up the source's, gaps with no trade included). The copy is then checked: per series,
the same row count, first and last start and the same coverage and listing on both sides.
Running it again is harmless (upserts), so an interrupted migration is resumed by rerunning.

What ``marketspine record`` kept goes over too, market by market: trades (each once: a trade
the target holds already is left as it is), books, tickers in batches of the replay's reads,
and the known gaps; then per market and kind the row counts, the first and last times and
the known gaps are compared.

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
    await _verify(summaries, await target.summary())
    copied = await target.delisted()
    if any(copied.get(market) != seen for market, seen in gone.items()):
        raise StoreError("migration check: the delisted markets differ")
    recorded = await _copy_recording(recording_for(source), recording_for(target))
    runs = await source.run_history()
    added = await target.merge_runs(runs)
    if runs_missing(await target.run_history(), runs):
        raise StoreError("migration check: runs of the run history are missing from the target")
    seconds = time.perf_counter() - started
    return MigrationReport(
        len(summaries), candles, ranges, seconds, recorded, len(runs), runs_added=added
    )


async def _copy_recording(source: RecordingStore, target: RecordingStore) -> int:
    """Copy every recorded row and known gap, then check the copy; return the rows copied.

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
            if mine != copy:
                raise StoreError(
                    f"migration check: recorded {kind} of {market} differ (source {mine[0]} "
                    f"rows at {mine[1]}, target {copy[0]} at {copy[1]})"
                )
        if await source.trade_gaps(market) != await target.trade_gaps(market):
            raise StoreError(f"migration check: the known gaps of {market} differ")
    return rows


async def _verify(source: list[SeriesSummary], target: list[SeriesSummary]) -> None:
    """Raise StoreError naming the first series that differs."""
    theirs = {(s.market, s.timeframe): s for s in target}
    for mine in source:
        copy = theirs.get((mine.market, mine.timeframe))
        if copy is None:
            raise StoreError(f"migration check: {mine.market} {mine.timeframe} is missing")
        for field in ("rows", "first_ms", "last_ms", "ranges", "listing_ms", "last_trade_ms"):
            if getattr(mine, field) != getattr(copy, field):
                raise StoreError(
                    f"migration check: {mine.market} {mine.timeframe} {field} differs "
                    f"(source {getattr(mine, field)!r}, target {getattr(copy, field)!r})"
                )


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
