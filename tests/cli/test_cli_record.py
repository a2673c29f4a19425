"""``marketspine record``: bad input is one line and exit 2 before anything is opened; the
real command, SIGKILLed while recording through WebSocket drops and run again, then stopped
with SIGTERM, leaves every simulated trade of the span stored exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from clitools import run_in_process
from helpers import afternoon_clock, wait_until_sync
from recorded_truth import differences, simulated_trades

from marketspine._cli.record import summary_line
from marketspine._live.recorder import RecordCounts
from marketspine._live.trade_backfill import BackfillReport
from marketspine._spine.recording import RecordSummary
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Trade
from marketspine.sim import History, SimConfig

RunSim = Callable[..., contextlib.AbstractContextManager[str]]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["KRW-BTC", "--kinds", "trade,candle"], "--kinds must name some of trade, orderbook"),
        (["KRW-BTC", "--kinds", ""], "--kinds must name some of"),
        (["KRW-BTC", "--orderbook-every", "soon"], "--orderbook-every must be a duration"),
        (["KRW-BTC", "--backfill", "-1d"], "--backfill must be a duration"),
        (["KRW-BTC", "--keep", "forever"], "--keep must be a duration"),
        (["KRW-BTC", "--keep", "trades=90d"], "KIND one of trade, orderbook, ticker"),
        (["KRW-BTC", "--keep", "trade=9d,trade=1d"], "--keep names trade twice"),
        (["KRW-BTC", "--keep", "book=1d,90d"], "--keep takes one duration (90d) or KIND="),
        (["KRW-BTC", "--orderbook-depth", "7"], "'7' is not one of '15', '30'"),
        (["KRW-BTC", "all"], "'all' records every listed market"),
        (["KRW-BTC", "--quote", "KRW"], "--quote picks every market"),
        ([], "name the markets to record"),
        (["BTC"], "BTC"),
        (["KRW-BTC", "--db", "mysql://x/y"], "--db"),
        (["KRW-BTC", "--upstream", "ftp://x"], "--upstream"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], complaint: str) -> None:
    db = tmp_path / "rec.sqlite"
    extra = [] if "--db" in args else ["--db", str(db)]
    if "--upstream" not in args:  # nothing listens there: no request may be needed
        extra += ["--upstream", "http://127.0.0.1:9"]
    done = run_in_process("record", *args, *extra)
    assert done.returncode == 2, done.stderr
    assert complaint in done.stderr and "Traceback" not in done.stderr
    assert not db.exists()  # nothing was opened


def test_an_unlisted_market_is_exit_2(fixed_sim: str, tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    done = run_in_process("record", "KRW-BTC", "KRW-NOPE", "--db", str(db), "--upstream", fixed_sim)
    assert done.returncode == 2, done.stderr
    assert "unknown market KRW-NOPE" in done.stderr


def test_the_summary_line_counts_the_backfilled_trades_apart() -> None:
    counts = RecordCounts(trades=152, orderbooks=148, tickers=93)
    backfill = [BackfillReport("KRW-BTC", trades=600), BackfillReport("KRW-ETH", trades=2558)]
    summary = RecordSummary(["KRW-BTC", "KRW-ETH"], ["trade"], counts, 7.64, backfill)
    assert summary_line(summary) == (
        "recorded 152 trades live (and 3,158 backfilled from REST), 148 books and 93 "
        "tickers of 2 market(s) in 7.6 s; 0 new known gap(s), 0 in all"
    )
    without = RecordSummary(["KRW-BTC"], ["trade"], counts, 1.0)
    assert summary_line(without).startswith("recorded 152 trades, 148 books")


def stored_trades(db: Path, market: str) -> list[Trade]:
    async def read() -> list[Trade]:
        async with SQLiteStore(db, read_only=True) as store:
            return await SQLiteRecording(store).trades(market, 0, 1 << 62)

    return asyncio.run(read())


def count(db: Path, market: str) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        try:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM trades WHERE market = ?", (market,)
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(n)


def drops(base: str) -> int:
    return int(httpx.get(f"{base}/sim/stats").json()["websocket"]["drops"])


@pytest.mark.process
def test_killed_and_rerun_through_drops_every_trade_is_stored_once(
    running_sim: RunSim, tmp_path: Path
) -> None:
    config = SimConfig(speed=60, ws_drop_every_s=0.7)
    db = tmp_path / "rec.sqlite"
    with running_sim(config, afternoon_clock(config.speed)) as base:
        argv = [sys.executable, "-m", "marketspine", "record", "KRW-BTC", "--kinds", "trade",
                "--backfill", "10s", "--db", str(db), "--upstream", base, "--json"]  # fmt: skip
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            start = drops(base)
            wait_until_sync(
                lambda: count(db, "KRW-BTC") >= 60 and drops(base) >= start + 1,
                60,
                "trades recorded through a drop",
            )
        finally:
            first.kill()  # SIGKILL: nothing flushed, nothing said
            first.communicate(timeout=30)
        held = count(db, "KRW-BTC")
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            start = drops(base)
            wait_until_sync(
                lambda: count(db, "KRW-BTC") >= held + 60 and drops(base) >= start + 1,
                60,
                "the rerun recording through another drop",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["gaps"] == [] and summary["trades"] > 0
    assert "Traceback" not in err
    trades = stored_trades(db, "KRW-BTC")
    history = History(config.seed, markets=config.markets, region=config.region)
    truth = simulated_trades(history, "KRW-BTC", trades[0], trades[-1])
    assert differences(trades, truth) == []
    assert len(trades) == len(truth) > held
