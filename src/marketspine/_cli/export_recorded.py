"""``marketspine export --kind trades|orderbooks|tickers``: what ``record`` kept, to CSV or
Parquet, one file or (``--split day``) one file per UTC day.

The database is opened read-only. The range is read a UTC day at a time, so a long export
holds one day in memory, not the whole range; each file is written whole or not at all. Every
row carries ``time_utc`` (ISO 8601 with milliseconds) and the exact ``timestamp_ms``; trades
are in ``sequential_id`` order, books and tickers in time order. A book is one row with its
levels as columns (``ask_price_1``, ``ask_size_1``, ``bid_price_1``, ``bid_size_1``, ...).
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .._base.durations import parse_moment
from .._base.extras import need
from .._base.markets import market_code
from .._base.time import DAY_MS, format_utc, now_ms
from .._store.recording import RECORDED_KINDS, RecordedKind, RecordingStore
from .._store.recording_store import recording_for
from ..errors import InvalidRequestError
from ..records import Orderbook, Ticker, Trade
from .commands import open_store
from .outfile import atomic_output, check_output_path

__all__ = ["SPLITS", "run_export_recorded"]

SPLITS = ("none", "day")
EXIT_NOTHING_STORED = 3

TRADE_COLUMNS = (
    "time_utc", "timestamp_ms", "market", "sequential_id", "price", "volume", "side",
    "prev_close", "change_price", "best_ask_price", "best_ask_size", "best_bid_price",
    "best_bid_size",
)  # fmt: skip
TICKER_COLUMNS = (
    "time_utc", "timestamp_ms", "market", "trade_timestamp_ms", "price", "open", "high", "low",
    "prev_close", "change", "change_price", "change_rate", "trade_volume", "acc_volume",
    "acc_value", "acc_volume_24h", "acc_value_24h", "high_52w", "high_52w_date", "low_52w",
    "low_52w_date", "side", "acc_ask_volume", "acc_bid_volume", "market_state", "delisting_date",
)  # fmt: skip
BOOK_HEAD = ("time_utc", "timestamp_ms", "market", "level", "total_ask_size", "total_bid_size")
UNIT_FIELDS = ("ask_price", "ask_size", "bid_price", "bid_size")


def run_export_recorded(
    market: str,
    *,
    kind: str,
    since: str | None,
    until: str | None,
    db: str,
    export_format: str,
    out: str,
    split: str,
) -> None:
    """Write the recorded ``kind`` of ``market`` in ``[since, until)`` to ``out`` (a file, or
    with ``split`` ``day`` a folder that gets MARKET-KIND-YYYY-MM-DD files). Raises
    InvalidRequestError (exit 2) for bad input; exits EXIT_NOTHING_STORED when nothing is."""
    code = market_code(market)
    if kind not in RECORDED_KINDS:
        raise InvalidRequestError(
            f"unknown --kind {kind!r}: accepted are candles, {', '.join(RECORDED_KINDS)}"
        )
    if split not in SPLITS:
        raise InvalidRequestError(f"unknown --split {split!r}: accepted are {', '.join(SPLITS)}")
    if export_format not in ("csv", "parquet"):
        raise InvalidRequestError(f"unknown --format {export_format!r}: accepted are csv, parquet")
    if out == "-":
        raise InvalidRequestError(f"--kind {kind} writes files: give --out FILE (or a folder)")
    if export_format == "parquet":
        need("parquet")
    now = now_ms()
    since_ms = parse_moment(since, now, "--since") if since else None
    until_ms = parse_moment(until, now, "--until") if until else now + 1
    if since_ms is not None and since_ms >= until_ms:
        raise InvalidRequestError(
            f"--since ({format_utc(since_ms)}Z) must be before --until ({format_utc(until_ms)}Z)"
        )
    path = Path(out).expanduser()
    if split == "day":
        make_day_folder(path, out)
    else:
        check_output_path(path)
    written = asyncio.run(
        _export(db, code, kind, since_ms, until_ms, export_format, path, split == "day")
    )
    if not written:
        print(
            f"marketspine: nothing recorded of {code} {kind} in {db} in the range; run "
            f"`marketspine record {code}` first; no file written",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_NOTHING_STORED)
    rows = sum(n for _, n in written)
    where = written[0][0] if len(written) == 1 else f"{len(written)} files in {path}"
    print(f"wrote {rows:,} {kind} of {code} to {where}", file=sys.stderr)


async def _export(
    db: str,
    market: str,
    kind: RecordedKind,
    since_ms: int | None,
    until_ms: int,
    export_format: str,
    path: Path,
    by_day: bool,
) -> list[tuple[Path, int]]:
    """Files written and their rows."""
    async with open_store(db, must_exist=True, read_only=True) as store:
        recording = recording_for(store)
        span = await recording.time_span(kind, market)
        if span is None:
            return []
        start = max(span[0], since_ms) if since_ms is not None else span[0]
        end = min(span[1] + 1, until_ms)
        if start >= end:
            return []
        days = [(max(d, start), min(d + DAY_MS, end))
                for d in range(start // DAY_MS * DAY_MS, end, DAY_MS)]  # fmt: skip
        written: list[tuple[Path, int]] = []
        if by_day:
            for lo, hi in days:
                name = f"{market}-{kind}-{format_utc(lo)[:10]}.{export_format}"
                rows = await _write(recording, kind, market, [(lo, hi)], export_format, path / name)
                if rows:
                    written.append((path / name, rows))
        else:
            rows = await _write(recording, kind, market, days, export_format, path)
            if rows:
                written.append((path, rows))
        return written


async def _write(
    recording: RecordingStore,
    kind: RecordedKind,
    market: str,
    days: Sequence[tuple[int, int]],
    export_format: str,
    path: Path,
) -> int:
    """Write the rows of ``days`` into one file at ``path`` (none when there are none)."""
    count = 0
    with ExitStack() as stack:
        sink: _Sink | None = None
        for lo, hi in days:
            rows, columns = await _rows(recording, kind, market, lo, hi)
            if not rows:
                continue
            if sink is None:
                temporary = stack.enter_context(atomic_output(path))
                sink = stack.enter_context(_Sink(temporary, export_format, columns))
            sink.write(rows)
            count += len(rows)
        if sink is None:
            return 0
    return count


async def _rows(
    recording: RecordingStore, kind: RecordedKind, market: str, lo: int, hi: int
) -> tuple[list[tuple[Any, ...]], tuple[str, ...]]:
    if kind == "trades":
        trades = await recording.trades(market, lo, hi)
        return [_trade(t) for t in trades], TRADE_COLUMNS
    if kind == "tickers":
        return [_ticker(t) for t in await recording.tickers(market, lo, hi)], TICKER_COLUMNS
    books = await recording.orderbooks(market, lo, hi)
    depth = 30  # every file has the same columns: thinner books leave theirs empty
    columns = BOOK_HEAD + tuple(f"{f}_{i}" for i in range(1, depth + 1) for f in UNIT_FIELDS)
    return [_book(b, depth) for b in books], columns


def _time(ms: int) -> str:
    return format_utc(ms) + f".{ms % 1000:03d}Z"


def _trade(t: Trade) -> tuple[Any, ...]:
    return (_time(t.ms), t.ms, t.market, t.seq, t.price, t.volume, t.side, t.prev_close,
            t.change_price, t.best_ask_price, t.best_ask_size, t.best_bid_price,
            t.best_bid_size)  # fmt: skip


def _ticker(t: Ticker) -> tuple[Any, ...]:
    return (_time(t.ms), t.ms, t.market, t.trade_ms, t.price, t.open, t.high, t.low,
            t.prev_close, t.change, t.change_price, t.change_rate, t.trade_volume, t.acc_volume,
            t.acc_value, t.acc_volume_24h, t.acc_value_24h, t.high_52w, t.high_52w_date,
            t.low_52w, t.low_52w_date, t.side, t.acc_ask_volume, t.acc_bid_volume,
            t.market_state, t.delisting_date)  # fmt: skip


def _book(b: Orderbook, depth: int) -> tuple[Any, ...]:
    levels: list[Any] = []
    for unit in b.units[:depth]:
        levels += (unit.ask_price, unit.ask_size, unit.bid_price, unit.bid_size)
    levels += [None] * (4 * depth - len(levels))
    return (_time(b.ms), b.ms, b.market, b.level, b.total_ask_size, b.total_bid_size, *levels)


_TEXT = {"market", "side", "change", "high_52w_date", "low_52w_date", "market_state",
         "delisting_date"}  # fmt: skip
_INTEGER = {"timestamp_ms", "sequential_id", "trade_timestamp_ms"}


def _schema(columns: tuple[str, ...]) -> Any:
    """The Parquet schema of ``columns``: a UTC timestamp, exact integers, text, floats."""
    import pyarrow as pa

    def kind(name: str) -> Any:
        if name == "time_utc":
            return pa.timestamp("ms", tz="UTC")
        if name in _INTEGER:
            return pa.int64()
        return pa.string() if name in _TEXT else pa.float64()

    return pa.schema([(name, kind(name)) for name in columns])


class _Sink:
    """One output file, written a batch of rows at a time (CSV, or Parquet row groups)."""

    def __init__(self, path: Path, export_format: str, columns: tuple[str, ...]) -> None:
        self._path, self._format, self._columns = path, export_format, columns
        self._close: Callable[[], None] = lambda: None

    def __enter__(self) -> _Sink:
        if self._format == "csv":
            handle = self._path.open("w", newline="")
            self._csv = csv.writer(handle)
            self._csv.writerow(self._columns)
            self._close = handle.close
        else:
            self._parquet: Any = None
        return self

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if self._format == "csv":
            self._csv.writerows(rows)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            self._schema = _schema(self._columns)
            self._parquet = pq.ParquetWriter(self._path, self._schema)
            self._close = self._parquet.close
        columns = list(zip(*rows, strict=True))
        arrays = {
            name: pa.array(
                columns[1] if name == "time_utc" else columns[i], type=self._schema.field(name).type
            )
            for i, name in enumerate(self._columns)
        }
        self._parquet.write_table(pa.table(arrays, schema=self._schema))

    def __exit__(self, *exc: object) -> None:
        self._close()


def make_day_folder(path: Path, out: str) -> None:
    """The folder ``--split day`` writes into, made when it is not there yet (as ``mkdir
    -p``). Raises InvalidRequestError for a file there, a name that looks like a file's
    (``x.csv``: a typo for a file export, not a folder wanted), or a folder that cannot be
    made."""
    where = f"--split day writes one file a day into the folder --out {path}"
    if path.exists() and not path.is_dir():
        raise InvalidRequestError(f"{where}, but it is a file: give a folder")
    if path.exists():
        return
    if path.suffix and not out.endswith(("/", os.sep)):
        raise InvalidRequestError(
            f"{where}, but {path.name} names a file: give a folder (end it with / to make "
            "one of that name)"
        )
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise InvalidRequestError(f"{where}: cannot make it: {exc.strerror or exc}") from None
