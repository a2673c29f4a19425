"""``export --kind trades|orderbooks|tickers``: what ``record`` kept comes out whole and exact
(17-digit sequential ids, every field), in CSV or Parquet, one file or one per UTC day;
nothing recorded is exit 3, bad input exit 2."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest
from clitools import run_in_process

from marketspine._base.time import DAY_MS, parse_time
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Orderbook, OrderbookUnit, Ticker, Trade

T0 = parse_time("2026-03-02T22:00:00Z")
MARKET = "KRW-BTC"


def trades() -> list[Trade]:
    out = []
    for i in range(300):  # 300 trades, 15 minutes apart: three UTC days
        ms = T0 + i * 15 * 60_000 + i % 1000
        best = (95_001_000.0, 0.5, 95_000_000.0, 0.25) if i % 3 else (None,) * 4
        out.append(Trade(MARKET, ms, 95_000_000.0 + i, 0.00012345, "BID" if i % 2 else "ASK",
                         ms * 10_000 + 1, 94_000_000.0, 1_000_000.0 + i, *best))  # fmt: skip
    return out


BOOKS = [
    Orderbook(MARKET, T0 + i * DAY_MS // 2, 1.5, 2.5,
              tuple(OrderbookUnit(100.0 + k, 0.1, 99.0 - k, 0.2) for k in range(15 if i else 30)),
              0.0)
    for i in range(4)
]  # fmt: skip
TICKERS = [
    Ticker(MARKET, T0 + i * 1000, T0 + i * 1000 - 5, 101.5, 100.0, 102.0, 99.0, 100.0, "RISE",
           1.5, 0.015, 0.001, 1234.5, 125_000.25, 2000.0, 200_000.5, 150.0, "2025-03-01", 50.0,
           "2025-08-01", "BID" if i else None, 12.5, 13.25, "ACTIVE", None)
    for i in range(5)
]  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "rec.sqlite"

    async def fill() -> None:
        async with SQLiteStore(path) as store:
            await SQLiteRecording(store).write(trades(), orderbooks=BOOKS, tickers=TICKERS)

    asyncio.run(fill())
    return path


def test_trades_to_csv_are_every_field_exact(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "trades.csv"
    done = run_in_process("export", MARKET, "--kind", "trades", "--db", str(db), "--out", str(out))
    assert done.returncode == 0, done.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    expected = trades()
    assert len(rows) == len(expected)
    for row, trade in zip(rows, expected, strict=True):
        assert int(row["sequential_id"]) == trade.seq and int(row["timestamp_ms"]) == trade.ms
        assert float(row["price"]) == trade.price and float(row["volume"]) == trade.volume
        assert row["side"] == trade.side
        assert row["best_ask_price"] == ("" if trade.best_ask_price is None else "95001000.0")
    assert rows[0]["time_utc"] == "2026-03-02T22:00:00.000Z"


def test_trades_split_by_day_into_parquet(db: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "export" / "days"  # not there yet: made, as mkdir -p would
    done = run_in_process(
        "export", MARKET, "--kind", "trades", "--format", "parquet", "--split", "day",
        "--since", "2026-03-03", "--db", str(db), "--out", f"{folder}/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"KRW-BTC-trades-2026-03-0{d}.parquet" for d in (3, 4, 5, 6)]
    tables = [pq.read_table(folder / name) for name in files]
    seqs = [s for table in tables for s in table.column("sequential_id").to_pylist()]
    wanted = [t.seq for t in trades() if t.ms >= parse_time("2026-03-03")]
    assert seqs == wanted  # exact beyond 2^53
    assert tables[0].num_rows == 96  # a whole day of trades 15 minutes apart


def test_books_and_tickers(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "books.csv"
    done = run_in_process(
        "export", MARKET, "--kind", "orderbooks", "--db", str(db), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert rows[0]["ask_price_30"] == "129.0" and rows[1]["ask_price_30"] == ""
    assert float(rows[1]["bid_size_15"]) == 0.2
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out = tmp_path / "tickers.parquet"
    done = run_in_process(
        "export", MARKET, "--kind", "tickers", "--format", "parquet", "--db", str(db),
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.column("timestamp_ms").to_pylist() == [t.ms for t in TICKERS]
    assert table.column("side").to_pylist() == [t.side for t in TICKERS]


def test_nothing_recorded_is_exit_3_and_bad_input_exit_2(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    done = run_in_process(
        "export", "KRW-ETH", "--kind", "trades", "--db", str(db), "--out", str(out)
    )
    assert done.returncode == 3 and "nothing recorded of KRW-ETH" in done.stderr
    assert not out.exists()
    done = run_in_process("export", MARKET, "--kind", "trades", "--db", str(db), "--out", "-")
    assert done.returncode == 2 and "writes files" in done.stderr
    done = run_in_process("export", MARKET, "--kind", "trades", "--split", "day", "--db",
                          str(db), "--out", str(out))  # fmt: skip
    assert done.returncode == 2 and "x.csv names a file: give a folder" in done.stderr
    assert not out.exists()
    (tmp_path / "file").write_text("a file where the folder would go")
    done = run_in_process("export", MARKET, "--kind", "trades", "--split", "day", "--db",
                          str(db), "--out", str(tmp_path / "file" / "days"))  # fmt: skip
    assert done.returncode == 2 and "cannot make it: Not a directory" in done.stderr
    done = run_in_process("export", MARKET, "--db", str(db), "--out", str(out))
    assert done.returncode == 2 and "Missing option '--timeframe'" in done.stderr
