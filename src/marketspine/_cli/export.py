"""``marketspine export``: the stored candles of one series, written whole to CSV or Parquet.

The database is opened read-only and never changed. Timeframes the library derives from 1m
(3m … 1d) are derived here the same way, wherever the stored 1m candles cover whole windows;
a candle stored for the timeframe itself wins over a derived one. An export that finds
nothing writes no file and exits with EXIT_NOTHING_STORED, saying why on stderr.
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from pathlib import Path
from typing import TextIO

from .._base.durations import parse_moment
from .._base.extras import need
from .._base.markets import market_code
from .._base.time import format_utc, from_ms, now_ms
from .._base.timeframes import TIMEFRAMES, Timeframe, parse_timeframe
from .._store.default_path import sibling_hint
from .._store.derive import DERIVABLE, derive_candles, merged
from .._store.sqlite import CandleStore
from ..errors import InvalidRequestError, UnknownMarketError
from ..records import Candle
from .commands import check_since, open_store
from .outfile import atomic_output, check_output_path

__all__ = ["COLUMNS", "EXIT_NOTHING_STORED", "market_is_stored", "run_export", "stored_candles"]

EXIT_NOTHING_STORED = 3
COLUMNS = ("time_utc", "open", "high", "low", "close", "volume", "value")
FORMATS = ("csv", "parquet")


def run_export(
    market: str,
    *,
    timeframe: str,
    since: str | None,
    until: str | None,
    db: str,
    export_format: str,
    out: str,
) -> None:
    """Write the candles of one series in ``[since, until)`` to ``out``, ascending, existing
    only. Raises InvalidRequestError (exit 2) for bad input, an unknown market or an unusable
    ``out``, MissingExtraError (exit 2) for Parquet without the parquet extra; exits
    EXIT_NOTHING_STORED when the range holds nothing."""
    tf = parse_timeframe(timeframe)
    code = market_code(market)
    if export_format not in FORMATS:
        raise InvalidRequestError(
            f"unknown --format {export_format!r}: accepted are {', '.join(FORMATS)}"
        )
    to_stdout = out == "-"
    if to_stdout and export_format != "csv":
        raise InvalidRequestError(
            f"--out - (standard output) takes --format csv only; give a FILE for {export_format}"
        )
    if export_format == "parquet":
        need("parquet")
    now = now_ms()
    since_ms = parse_moment(since, now, "--since") if since else 0
    until_ms = parse_moment(until, now, "--until") if until else now
    if since_ms >= until_ms and until:
        raise InvalidRequestError(
            f"--since ({_label(since_ms)}) must be before --until ({_label(until_ms)})"
        )
    check_since(since_ms, now)  # as collect: nothing can be stored from there yet
    path = Path(out).expanduser()
    if not to_stdout:
        check_output_path(path)  # before any work: a bad --out fails fast
    candles = asyncio.run(_read(db, code, tf, since_ms, until_ms))
    if not candles:
        window = f"[{_label(since_ms)}, {_label(until_ms)})"
        span = f"in {window}" if since else f"before {_label(until_ms)}"
        source = f" (or -t 1m, from which {tf.name} is built)" if tf.name in DERIVABLE else ""
        reason = (
            f"nothing stored for {code} {tf.name} {span} in {db}; run "
            f"`marketspine collect {code} -t {tf.name}`{source} first" + sibling_hint(db)
        )
        print(f"marketspine: {reason}; no file written", file=sys.stderr)
        raise SystemExit(EXIT_NOTHING_STORED)
    if to_stdout:
        # Piped onward (`| head`, `| gzip`): a reader that goes away early is not an error.
        try:
            _write_csv_rows(sys.stdout, candles)
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
        print(f"wrote {len(candles):,} {tf.name} candles of {code} to stdout", file=sys.stderr)
        return
    with atomic_output(path) as temporary:
        if export_format == "csv":
            _write_csv(temporary, candles)
        else:
            _write_parquet(temporary, candles)
    print(f"wrote {len(candles):,} {tf.name} candles of {code} to {path}", file=sys.stderr)


def _label(ms: int) -> str:
    return format_utc(ms) + "Z"


async def _read(db: str, market: str, tf: Timeframe, since_ms: int, until_ms: int) -> list[Candle]:
    async with open_store(db, must_exist=True, read_only=True) as store:
        candles = await stored_candles(store, market, tf, since_ms, until_ms)
        if not candles and not await market_is_stored(store, market):
            raise UnknownMarketError(
                market,
                f"unknown market {market!r}: nothing of it is stored in {db} "
                f"(`marketspine status` lists what is; `marketspine collect {market} -t TF` "
                "stores it)" + sibling_hint(db),
            )
        return candles


async def stored_candles(
    store: CandleStore, market: str, tf: Timeframe, start_ms: int, end_ms: int
) -> list[Candle]:
    """The candles of ``market`` ``tf`` starting in ``[start_ms, end_ms)``, ascending: the
    stored ones, and for a derivable timeframe those built from stored 1m candles where the
    timeframe's own coverage has gaps (stored wins), as ``Spine.candles`` reads them."""
    rows = await store.read(market, tf, start_ms, end_ms)
    if tf.name not in DERIVABLE:
        return rows
    coverage = await store.coverage(market, tf)
    if not coverage.gaps(start_ms, end_ms):
        return rows
    derived = await derive_candles(store, market, tf, start_ms, end_ms)
    return merged((c for c in derived.candles if start_ms <= c.start_ms < end_ms), rows)


async def market_is_stored(store: CandleStore, market: str) -> bool:
    """Whether any timeframe of ``market`` has stored coverage or a recorded listing."""
    for tf in {tf.key: tf for tf in TIMEFRAMES.values()}.values():
        coverage = await store.coverage(market, tf)
        if coverage.ranges or coverage.listing_ms is not None:
            return True
    return False


def _write_csv(path: Path, candles: list[Candle]) -> None:
    with path.open("w", newline="") as handle:
        _write_csv_rows(handle, candles)


def _write_csv_rows(handle: TextIO, candles: list[Candle]) -> None:
    writer = csv.writer(handle)
    writer.writerow(COLUMNS)
    writer.writerows(
        (
            from_ms(c.start_ms).strftime("%Y-%m-%dT%H:%M:%SZ"),
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.value,
        )
        for c in candles
    )


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write_parquet(path: Path, candles: list[Candle]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "time_utc": pa.array([c.start_ms for c in candles], type=pa.timestamp("ms", tz="UTC")),
            "open": [c.open for c in candles],
            "high": [c.high for c in candles],
            "low": [c.low for c in candles],
            "close": [c.close for c in candles],
            "volume": [c.volume for c in candles],
            "value": [c.value for c in candles],
        }
    )
    pq.write_table(table, path)
