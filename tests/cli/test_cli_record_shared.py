"""``marketspine record --redis``: two recorders of one PostgreSQL database on one Redis take
turns. The lease holder is SIGKILLed mid-run (the upstream socket dropping now and then too),
the one standing by takes over and continues from the last stored trade; what is stored then
equals the simulator's trades over the span, every field, none missing, none twice, no known
gap."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from clitools import exit_code, run_in_process
from helpers import afternoon_clock, wait_until_sync
from recorded_truth import differences, simulated_trades
from services import PgSpace, PrivateRedis

from marketspine._live.recorder_lease import recorder_name
from marketspine._store.recording_rows import TRADE_COLUMNS, trade_of_row
from marketspine.records import Trade
from marketspine.sim import History, SimConfig

RunSim = Callable[..., contextlib.AbstractContextManager[str]]
MARKET = "KRW-BTC"


def drops(base: str) -> int:
    return int(httpx.get(f"{base}/sim/stats").json()["websocket"]["drops"])


def stored(db: str) -> list[Trade]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            f"SELECT {TRADE_COLUMNS} FROM trades WHERE market = %s ORDER BY seq", (MARKET,)
        ).fetchall()
    return [trade_of_row(row) for row in rows]


def count(db: str) -> int:
    with psycopg.connect(db) as conn:
        try:
            row = conn.execute("SELECT COUNT(*) FROM trades WHERE market = %s", (MARKET,))
            return int(row.fetchone()[0])  # type: ignore[index]
        except psycopg.errors.UndefinedTable:
            return 0


@contextlib.contextmanager
def recorder(argv: list[str], logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A recorder process writing to files (never a pipe that could fill); killed if left."""
    with logs.with_suffix(".out").open("wb") as out, logs.with_suffix(".err").open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["record", "KRW-BTC", "--redis", "ftp://x"], "--redis 'ftp://x' is not a Redis URL"),
        (["serve", "--record", "trade"], "--record KINDS and --record-markets MARKETS go"),
        (["serve", "--record-markets", "KRW"], "--record KINDS and --record-markets MARKETS go"),
        (["serve", "--record", "book", "--record-markets", "KRW"], "--record must name some"),
        (["serve", "--record", "trade", "--record-markets", "KRW-BTC,all"], "'all' records"),
        (["serve", "--record", "trade", "--record-markets", "KRW",
          "--record-orderbook-every", "soon"], "--record-orderbook-every must be a duration"),
    ],
)  # fmt: skip
def test_bad_sharing_flags_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], complaint: str
) -> None:
    db = tmp_path / "rec.sqlite"
    done = run_in_process(*args, "--db", str(db), "--upstream", "http://127.0.0.1:9")
    assert done.returncode == 2, done.stderr
    assert complaint in done.stderr and "Traceback" not in done.stderr
    assert not db.exists()


@pytest.mark.process
def test_a_killed_lease_holder_is_replaced_without_missing_or_duplicated_trades(
    running_sim: RunSim, pg_space: PgSpace, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    config = SimConfig(speed=60, ws_drop_every_s=1.5)  # the socket drops too
    db = pg_space.url
    lease_key = f"marketspine:record:{{{recorder_name(db)}}}:lease"
    watcher = redis.Redis.from_url(private_redis.url, decode_responses=True)

    def holder() -> int | None:
        token = watcher.get(lease_key)
        return None if token is None else int(str(token).partition(":")[0])

    with running_sim(config, afternoon_clock(config.speed)) as base, contextlib.closing(watcher):
        argv = [sys.executable, "-m", "marketspine", "record", MARKET, "--kinds", "trade",
                "--backfill", "0", "--db", db, "--upstream", base, "--redis",
                private_redis.url, "--json", "--log-level", "info"]  # fmt: skip
        with recorder(argv, tmp_path / "a") as first, recorder(argv, tmp_path / "b") as second:
            wait_until_sync(
                lambda: holder() in (first.pid, second.pid) and count(db) >= 30,
                60,
                "one recorder holding the lease and writing",
            )
            killed, survivor = (first, second) if holder() == first.pid else (second, first)
            standby_log = tmp_path / ("b.err" if survivor is second else "a.err")
            wait_until_sync(
                lambda: "standing by" in standby_log.read_text(),
                60,
                "the other recorder standing by",
            )
            killed.kill()  # SIGKILL: nothing flushed, the lease left to lapse
            killed.wait(timeout=30)
            held = count(db)
            wait_until_sync(
                lambda: holder() == survivor.pid and count(db) >= held + 60 and drops(base) >= 2,
                60,
                "the standby taking over and recording on, through socket drops",
            )
            survivor.send_signal(signal.SIGTERM)
            assert exit_code(survivor, standby_log) == 0
        out_name = "b.out" if survivor is second else "a.out"
        summary = json.loads((tmp_path / out_name).read_text().splitlines()[-1])
    assert summary["gaps"] == [] and summary["trades"] > 0
    assert "Traceback" not in (tmp_path / "a.err").read_text() + (tmp_path / "b.err").read_text()
    trades = stored(db)
    history = History(config.seed, markets=config.markets, region=config.region)
    truth = simulated_trades(history, MARKET, trades[0], trades[-1])
    assert differences(trades, truth) == []
    assert len(trades) == len(truth) > held
