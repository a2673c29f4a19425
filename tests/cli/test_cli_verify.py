"""``marketspine verify``: a recording of the simulator agrees with its REST candles (exit 0);
a recorded trade that differs shows as its window (exit 1); upstream out of reach is exit 1 with
the reason, no window reported; nothing recorded is exit 3 and bad input exit 2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
from clitools import closed_port, run_in_process
from helpers import SIM_NOW_MS
from recorded_truth import simulated_between

from marketspine._base.time import MINUTE_MS, format_utc
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Trade
from marketspine.sim import History

MARKET = "KRW-BTC"


def store(path: Path, trades: list[Trade]) -> None:
    async def write() -> None:
        async with SQLiteStore(path) as opened:
            await SQLiteRecording(opened).write(trades)

    asyncio.run(write())


def test_a_faithful_recording_agrees_and_a_changed_trade_does_not(
    fixed_sim: str, tmp_path: Path
) -> None:
    start = SIM_NOW_MS // MINUTE_MS * MINUTE_MS - 12 * MINUTE_MS + 30_000
    trades = simulated_between(History(1, markets=30), MARKET, start, start + 8 * MINUTE_MS)
    db = tmp_path / "rec.sqlite"
    store(db, trades)
    args = ["--db", str(db), "--upstream", fixed_sim]
    done = run_in_process("verify", MARKET, *args, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["windows"] == 7 and report["differences"] == []  # whole minutes only
    # one trade recorded with another price: its window is reported
    changed = trades[len(trades) // 2]
    other = tmp_path / "other.sqlite"
    store(other, [msgspec.structs.replace(t, price=t.price + 1000) if t is changed else t
                  for t in trades])  # fmt: skip
    done = run_in_process("verify", MARKET, "--db", str(other), "--upstream", fixed_sim)
    assert done.returncode == 1
    window = format_utc(changed.ms // MINUTE_MS * MINUTE_MS)
    assert f"{window}Z differs in" in done.stdout
    assert "7 1m windows of KRW-BTC compared" in done.stdout and "1 differ" in done.stdout


def test_nothing_recorded_and_bad_input(fixed_sim: str, tmp_path: Path) -> None:
    db = tmp_path / "rec.sqlite"
    store(db, [])
    done = run_in_process("verify", MARKET, "--db", str(db), "--upstream", fixed_sim)
    assert done.returncode == 3 and "nothing of KRW-BTC is recorded" in done.stderr
    done = run_in_process("verify", MARKET, "--db", str(tmp_path / "none.db"))
    assert done.returncode == 2 and "no database at" in done.stderr
    done = run_in_process("verify", MARKET, "-t", "7m", "--db", str(db))
    assert done.returncode == 2


def test_upstream_out_of_reach_is_an_error_not_differences(tmp_path: Path) -> None:
    # Nothing to compare with: every recorded window used to be reported as differing from
    # an empty answer (exit 1 all the same, but "differs in" for each).
    start = SIM_NOW_MS // MINUTE_MS * MINUTE_MS - 12 * MINUTE_MS + 30_000
    trades = simulated_between(History(1, markets=30), MARKET, start, start + 8 * MINUTE_MS)
    db = tmp_path / "rec.sqlite"
    store(db, trades)
    done = run_in_process("verify", MARKET, "--db", str(db), "--upstream", closed_port())
    assert done.returncode == 1, done.stdout
    assert "differs in" not in done.stdout and "compared" not in done.stdout
    assert "cannot reach" in done.stderr and "Traceback" not in done.stderr, done.stderr
