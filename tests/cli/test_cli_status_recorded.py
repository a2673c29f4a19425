"""``status`` shows what ``record`` kept, per market and kind: rows, from when to when, and
the trades' known gaps; in ``--json`` too, from SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from clitools import run_in_process

from marketspine._base.time import format_utc, parse_time
from marketspine._cli.commands import open_store
from marketspine._store.recording import TradeGap
from marketspine._store.recording_store import recording_for
from marketspine.records import Orderbook, OrderbookUnit, Ticker, Trade

T0 = parse_time("2026-03-02T22:00:00Z")


def trade(market: str, i: int) -> Trade:
    ms = T0 + i * 60_000
    return Trade(market, ms, 100.0 + i, 0.5, "BID", ms * 1000 + 1, 100.0, float(i))


def book(market: str, ms: int) -> Orderbook:
    return Orderbook(market, ms, 1.0, 2.0, (OrderbookUnit(101.0, 1.0, 99.0, 2.0),), 0.0)


def ticker(market: str, ms: int) -> Ticker:
    return Ticker(market, ms, ms - 5, 101.5, 100.0, 102.0, 99.0, 100.0, "RISE", 1.5, 0.015,
                  0.001, 1234.5, 125_000.25, 2000.0, 200_000.5, 150.0, "2025-03-01", 50.0,
                  "2025-08-01")  # fmt: skip


BTC = [trade("KRW-BTC", i) for i in (0, 1, 2, 10, 11)]
GAP = TradeGap("KRW-BTC", BTC[2].seq, BTC[3].seq, BTC[2].ms, BTC[3].ms, "REST failed: 503", T0)


def label(ms: int) -> str:
    return format_utc(ms) + "Z"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = (
        str(tmp_path / "rec.sqlite")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_space").url
    )

    async def fill() -> None:
        async with open_store(url, must_exist=False) as store:
            await recording_for(store).write(
                BTC,
                orderbooks=[book("KRW-BTC", T0 + i * 1000) for i in range(3)],
                tickers=[ticker("KRW-ETH", T0 + 5000)],
                gaps=[GAP],
            )

    asyncio.run(fill())
    return url


def test_status_lists_each_recorded_kind_per_market_with_its_gaps(db: str) -> None:
    done = run_in_process("status", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    recorded = json.loads(done.stdout)["recorded"]
    assert [(r["market"], r["kind"], r["rows"]) for r in recorded] == [
        ("KRW-BTC", "trades", 5),
        ("KRW-BTC", "orderbooks", 3),
        ("KRW-ETH", "tickers", 1),
    ]
    trades, books, tickers = recorded
    assert (trades["first"], trades["last"]) == (label(BTC[0].ms), label(BTC[-1].ms))
    assert trades["gaps"] == [
        {"from": label(GAP.from_ms), "to": label(GAP.to_ms), "from_seq": GAP.from_seq,
         "to_seq": GAP.to_seq, "reason": GAP.reason}
    ]  # fmt: skip
    assert (books["first"], books["last"]) == (label(T0), label(T0 + 2000))
    assert books["gaps"] == [] and tickers["first"] == tickers["last"] == label(T0 + 5000)

    text = run_in_process("status", "--db", db)
    assert text.returncode == 0, text.stderr
    assert "recorded" in text.stdout and "REST failed: 503" in text.stdout
    assert f"{GAP.from_seq} → {GAP.to_seq}" in text.stdout
    # No candles: one line says so, not a candle table of headers alone.
    assert text.stdout.startswith(f"no candles stored in {db} (marketspine collect stores them)")
    assert "timeframe" not in text.stdout


def test_status_of_a_store_without_recordings_says_nothing_of_them(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"

    async def make() -> None:
        async with open_store(str(path), must_exist=False):
            pass

    asyncio.run(make())
    done = run_in_process("status", "--db", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recorded"] == []
    assert "recorded" not in run_in_process("status", "--db", str(path)).stdout
