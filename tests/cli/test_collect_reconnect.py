"""A real ``marketspine collect`` into PostgreSQL whose connection the server terminates in
the middle of a page: the page is written again on a new connection, the run ends with exit
0, the store equals the simulator candle for candle, and the operator got one "database
lost" and one "database back" alert, without the URL or its password anywhere.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
import pytest
from clitools import rest_candles, run_in_process
from helpers import wait_until_sync
from receiver import Receiver, receiver
from services import PgSpace

from marketspine._base.time import parse_naive_utc, parse_time
from marketspine._base.timeframes import TIMEFRAMES

pytestmark = pytest.mark.process

MARKET = "KRW-XLM"  # a market few tests use: its advisory lock is held for a moment
SINCE, MIDDLE, UNTIL = "2026-01-01", "2026-01-01T12:00:00", "2026-01-02T12:00:00"
PASSWORD = "pg-secret-5150"  # trust auth on loopback lets it in unasked


@pytest.fixture
def got() -> Iterator[Receiver]:
    with receiver() as found:
        yield found


def collect(sim: str, db: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "marketspine", "collect", MARKET, "-t", "1m", "--since", SINCE,
         "--until", UNTIL, "--db", db, "--upstream", sim, "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def test_collect_redoes_the_page_its_terminated_connection_cut_and_ends_exact(
    running_sim: Callable[..., AbstractContextManager[str]], pg_space: PgSpace, got: Receiver
) -> None:
    from marketspine.sim import SimConfig

    name = f"mstest_{uuid.uuid4().hex[:10]}"
    db = re.sub(r"://([^:@/]+)@", rf"://\1:{PASSWORD}@", pg_space.url)
    db += f"&application_name={name}"
    assert PASSWORD in db
    series = f"{MARKET}/{TIMEFRAMES['1m'].key}"
    with running_sim(SimConfig(rate_limit=0)) as sim:
        # The first half is stored by an earlier run (in this process, to save a start-up):
        # the store holds rows when the cut comes.
        first = run_in_process(
            "collect", MARKET, "-t", "1m", "--since", SINCE, "--until", MIDDLE,
            "--db", db, "--upstream", sim, "--json",
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        with psycopg.connect(pg_space.url, autocommit=True) as holder:
            # The series' advisory lock held here stops the run's first page halfway through
            # its transaction; the server then terminates the run's connection under it.
            holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (series,))
            run = collect(sim, db, "--notify", got.url, "--log-level", "info")
            try:

                def waiting() -> set[int]:
                    """The run's backends waiting on the lock."""
                    assert run.poll() is None, run.communicate()
                    rows = holder.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                        "AND wait_event_type = 'Lock' AND state = 'active'",
                        (name,),
                    ).fetchall()
                    return {pid for (pid,) in rows}

                wait_until_sync(lambda: len(waiting()) == 1, 60, "the run's page to wait")
                (cut,) = waiting()
                ended = holder.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                ).fetchall()
                assert ended == [(True,)]
                # The run reconnects and writes the same page again (waiting on the lock).
                wait_until_sync(lambda: bool(waiting() - {cut}), 60, "the page to be redone")
                holder.execute("SELECT pg_advisory_unlock_all()")
                out, err = run.communicate(timeout=60)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.communicate()
        assert run.returncode == 0, err
        truth = rest_candles(
            sim, "/v1/candles/minutes/1", MARKET, parse_time(SINCE), parse_time(UNTIL)
        )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["candles_written"] > 0
    with psycopg.connect(pg_space.url) as conn:
        stored = conn.execute(
            "SELECT start_ms, open, high, low, close, volume, value, last_trade_ms "
            "FROM candles WHERE market = %s AND start_ms >= %s AND start_ms < %s "
            "ORDER BY start_ms",
            (MARKET, parse_time(SINCE), parse_time(UNTIL)),
        ).fetchall()
        coverage = conn.execute("SELECT start_ms, end_ms FROM coverage").fetchall()
    expected = [
        (parse_naive_utc(c["candle_date_time_utc"]), c["opening_price"], c["high_price"],
         c["low_price"], c["trade_price"], c["candle_acc_trade_volume"],
         c["candle_acc_trade_price"], c["timestamp"])
        for c in truth
    ]  # fmt: skip
    assert len(expected) > 200  # more than one page: the run went on after the cut
    assert stored == expected  # no gap, no duplicate, no changed value
    assert len(coverage) == 1 and coverage[0][0] <= parse_time(SINCE)
    assert coverage[0][1] >= parse_time(UNTIL)
    # The operator's side: one line and one alert each way, and no secret anywhere.
    lost_line = r"WARNING: candle database PostgreSQL 'test' at \S+ lost \(.*administrator"
    assert re.search(lost_line, err), err
    assert "INFO: candle database PostgreSQL 'test' at" in err and " back after " in err
    lost, back = got.wait_for(2)[:2]
    assert lost["title"] == "marketspine: database lost", lost
    assert back["title"] == "marketspine: database back", back
    for text in (out, err, json.dumps(got.messages)):
        assert PASSWORD not in text and "postgresql://" not in text
