"""Five processes share one rate budget through Redis — three ``marketspine collect`` and two
``marketspine serve --redis`` answering a steady client each — and their Redis is killed
(SIGKILL) for 10 s, then restarted empty. Each process falls back to its share of the
ceiling for the five it counted (2 requests/s), so the simulator, a process of its own and
the truth, answers no 429; PostgreSQL holds exactly the simulator's candles, none missing.

Every process writes to files, never to a pipe nobody reads (a full pipe stalls a child);
the Redis is a private redis-server, so killing it touches no other test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
import psycopg
import pytest
import redis
from clitools import CONSOLE_SCRIPT, behind_upstream, json_log_lines, sim_process
from helpers import UnpacedBudget, wait_until_sync
from services import PgSpace, PrivateRedis

from marketspine._base.time import parse_time
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._budget.redis import COUNTING_GROUP
from marketspine._budget.redis_lua import BudgetKeys
from marketspine._client.client import Client
from marketspine._store.backfill import collect
from marketspine._store.sqlite import SQLiteStore
from marketspine.sim import SimConfig, create_app

pytestmark = pytest.mark.process

NOW = "2026-11-20T12:34:56.789Z"
COLLECTED = ("KRW-BTC", "KRW-ETH", "KRW-XRP")
SINCE, UNTIL = "2026-11-15T12:00:00Z", "2026-11-20T12:00:00Z"  # 36 pages of 1m a market
LOADED = ("KRW-SOL", "KRW-DOGE")  # one per serve, asked page after page back from UNTIL
OUTAGE_S = 10.0
PAUSE_S = 0.5
PROCESSES = 5
TOKEN = "outage-test-token"


# Timed logs with each 429 a process was answered (INFO), for outage_report.
LOGGING = ["--log-level", "info", "--log-format", "json"]


def outage_report(
    seen: dict[str, Any],
    killed_at: float,
    back_at: float,
    killed_wall: float,
    logs: Path,
    owners: dict[str, str],
) -> str:
    """Why the simulator answered 429 or 418, in full (a tuple in an assertion is cut to a
    line): each rejection and the arrivals that filled its window, by sender, and each
    process's 429s and Redis losses and returns, all in seconds from the kill."""
    lines = [
        f"429: {seen['429']}, 418: {seen['418']}; Redis killed at 0, restarted at "
        f"{back_at - killed_at:+.3f} s (the outage lasts {OUTAGE_S} s)"
    ]
    for rejection in seen["rejections"]:
        lines.append(
            f"rejected at {rejection['at'] - killed_at:+.3f} s ({rejection['group']}, from "
            f"{owners.get(rejection['source'], '?')} port {rejection['source']}); its window held:"
        )
        lines += [
            f"    {at - killed_at:+.3f} s {owners.get(port, '?')} port {port}"
            for at, port in rejection["counted"]
        ]
    events = {"rate_limited", "redis_lost", "redis_back"}
    for err in sorted(logs.glob("*.err")):
        for line in json_log_lines(err.read_text()):
            # With the budget's sends counted later than booked (a process running late).
            if line.get("event") in events or "later than booked" in line["message"]:
                at = dt.datetime.fromisoformat(line["time"]).timestamp() - killed_wall
                lines.append(f"{err.stem} at {at:+.3f} s: {line['message']}")
    return "\n".join(lines)


def redis_sends(url: str) -> Scored:
    """The candles group's sends as Redis counts them (its last 5 s): each member names its
    grant (Redis's clock, µs), its score is when it counts as arrived."""
    client = redis.Redis.from_url(url)
    try:
        sends = BudgetKeys.of("marketspine:", "default", "candles").sends
        return cast(Scored, client.zrange(sends, 0, -1, withscores=True))
    finally:
        client.close()


def redis_view(booked: Scored, seen: dict[str, Any], killed_at: float, killed_wall: float) -> str:
    """Redis's sends around each rejection, in seconds from the kill: granted, counted at.
    Redis's clock is the wall clock, read just before the kill (``killed_wall``)."""
    lines = []
    for rejection in seen["rejections"]:
        at = rejection["at"] - killed_at
        lines.append(f"Redis's candles sends granted from {at - 1.6:+.3f} s to {at:+.3f} s:")
        for member, score in sorted(booked, key=lambda row: row[1]):
            granted = int(member.split(b":")[0]) / 1e6 - killed_wall
            if at - 1.6 <= granted <= at:
                counted = score / 1e6 - killed_wall
                lines.append(f"    granted {granted:+.3f} s, counted at {counted:+.3f} s")
    return "\n".join(lines)


class PortOwners:
    """Which process each connection to the simulator came from, by its local port (the
    simulator names a request's sender by the port): sampled from the kernel's table every
    0.2 s while the processes run, since a finished collector's connections are gone."""

    def __init__(self, sim_url: str) -> None:
        self._sim_port = int(sim_url.rsplit(":", 1)[1])
        self.names: dict[int, str] = {}  # pid -> name
        self.owners: dict[str, str] = {}  # port -> name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PortOwners:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                connections = psutil.net_connections("tcp")
            except (psutil.Error, OSError):  # a process gone mid-read: the next sample
                continue
            for conn in connections:
                name = self.names.get(conn.pid or 0)
                local, remote = conn.laddr, conn.raddr  # () when there is none
                if name is None or not isinstance(remote, tuple) or not remote:
                    continue
                if remote[1] == self._sim_port and local:
                    self.owners[str(local[1])] = name


def launch(args: list[str], log: Path) -> subprocess.Popen[str]:
    """A child writing stdout to ``log``.out and stderr to ``log``.err."""
    with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
        return subprocess.Popen(
            [CONSOLE_SCRIPT, *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL, text=True,
            preexec_fn=behind_upstream,
        )  # fmt: skip


@dataclass
class Serve:
    process: subprocess.Popen[str]
    log: Path
    url: str = ""

    def wait_serving(self) -> None:
        out = self.log.with_suffix(".out")

        def serving() -> bool:
            assert self.process.poll() is None, self.log.with_suffix(".err").read_text()
            return "serving on " in out.read_text()

        wait_until_sync(serving, 60, f"serve {self.log.name} to listen")
        line = next(s for s in out.read_text().splitlines() if s.startswith("serving on "))
        self.url = line.removeprefix("serving on ").strip()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        assert code == 0, self.log.with_suffix(".err").read_text()


@dataclass
class ClientLoad:
    """One client asking a serve for ``market``'s 1m candles, 200 at a time, each page the
    one before the last answered: one upstream request per answer, at most one per
    ``PAUSE_S`` — a modest load (the budget serves clients before backfills, so a client
    asking without pause would leave the collectors little)."""

    url: str
    market: str
    statuses: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        to = UNTIL
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while not self.stop.is_set():
                answer = http.get(
                    "/v1/candles/minutes/1", params={"market": self.market, "count": 200, "to": to}
                )
                self.statuses.append(answer.status_code)
                if answer.status_code != 200 or not answer.json():
                    return
                to = answer.json()[-1]["candle_date_time_utc"] + "Z"  # the oldest answered
                self.stop.wait(PAUSE_S)  # the load's pace

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def rows_of(pg: PgSpace, markets: tuple[str, ...]) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.url) as conn:
        try:
            return conn.execute(
                "SELECT * FROM candles WHERE market = ANY(%s)", (list(markets),)
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # not created yet
            return []


async def truth(tmp_path: Path, markets: tuple[str, ...], since_ms: int) -> set[tuple[Any, ...]]:
    """The simulator's 1m candles of ``markets`` from since_ms to UNTIL, fetched in-process
    page by page as a collector does (its first page may reach before since_ms)."""
    now = parse_time(NOW)
    app = create_app(SimConfig(rate_limit=0), clock=lambda: now)
    path = tmp_path / f"truth-{markets[0]}.sqlite"
    async with (
        SQLiteStore(path) as store,
        Client(
            "http://sim", transport=httpx.ASGITransport(app=app), budget=UnpacedBudget()
        ) as client,
    ):
        await collect(
            client, store, markets, TIMEFRAMES["1m"],
            since_ms=since_ms, until_ms=parse_time(UNTIL), now_ms=now,
        )  # fmt: skip
    with sqlite3.connect(path) as conn:
        return set(conn.execute("SELECT * FROM candles").fetchall())


Scored = list[tuple[bytes, float]]  # a sorted set read with its scores


@dataclass
class Heartbeats:
    """The processes' heartbeats in the shared Redis (RedisRateBudget's defaults)."""

    url: str
    counted_at_us: int | None = None  # Redis's clock once each had counted all of them

    def all_counted(self) -> bool:
        """Every process registered; in the counting group, the latest count each has read
        is from after the last of them joined (so each counted all of them); and each renewed
        its heartbeat after that (so each has read that the others counted it: while Redis is
        lost, one that has not sends nothing)."""
        client = redis.Redis.from_url(self.url)
        try:
            keys = BudgetKeys.of("marketspine:", "default", COUNTING_GROUP)
            # (member, score) pairs, which redis-py's return type does not say.
            lapse = cast(Scored, client.zrange(keys.processes, 0, -1, withscores=True))
            joined = cast(Scored, client.zrange(keys.joined, 0, -1, withscores=True))
            beats = cast(Scored, client.zrange(keys.beats, 0, -1, withscores=True))
            seconds, micros = client.time()
        finally:
            client.close()
        if len(lapse) < PROCESSES or len(beats) < PROCESSES:
            return False
        if self.counted_at_us is None:
            if min(s for _, s in beats) >= max(s for _, s in joined):
                self.counted_at_us = seconds * 1_000_000 + micros
            return False
        ttl_us = 5_000_000  # a heartbeat's score is its renewal + heartbeat_ttl_s
        return min(score for _, score in lapse) - ttl_us > self.counted_at_us


def sim_stats(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/sim/stats", timeout=10).json()
    return answer


def test_redis_killed_under_five_processes_costs_no_429_and_no_candle(
    pg_space: PgSpace, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    with sim_process(tmp_path, NOW) as sim, PortOwners(sim) as ports:
        common = ["--upstream", sim, "--db", pg_space.url, "--redis", private_redis.url]
        serves = [
            Serve(launch(["serve", *common, "--port", "0", "--admin-token", TOKEN, *LOGGING],
                         tmp_path / f"serve{i}"), tmp_path / f"serve{i}")
            for i in range(2)
        ]  # fmt: skip
        collectors = [
            launch(["collect", *COLLECTED, "-t", "1m", "--since", SINCE, "--until", UNTIL,
                    *common, "--json", *LOGGING], tmp_path / f"collect{i}")
            for i in range(3)
        ]  # fmt: skip
        ports.names.update({s.process.pid: f"serve{i}" for i, s in enumerate(serves)})
        ports.names.update({c.pid: f"collect{i}" for i, c in enumerate(collectors)})
        try:
            for serve in serves:
                serve.wait_serving()
            loads = [ClientLoad(s.url, market) for s, market in zip(serves, LOADED, strict=True)]
            for load in loads:
                load.start()

            heartbeats = Heartbeats(private_redis.url)

            def working() -> bool:
                for i, process in enumerate(collectors):
                    assert process.poll() is None, (tmp_path / f"collect{i}.err").read_text()
                return all(len(load.statuses) >= 2 for load in loads) and heartbeats.all_counted()

            wait_until_sync(working, 60, "five processes counted in Redis, all at work")
            before = len(rows_of(pg_space, COLLECTED))
            answered = [len(load.statuses) for load in loads]

            booked = redis_sends(private_redis.url)  # its last seconds, for a 429's report
            killed_at = time.monotonic()  # the simulator's limiter runs on this clock
            killed_wall = time.time()  # the processes' logs' clock (and Redis's)
            private_redis.stop()  # SIGKILL
            down_until = time.monotonic() + OUTAGE_S
            while time.monotonic() < down_until:  # the outage itself, not a wait for a state
                for process in [*collectors, *(s.process for s in serves)]:
                    assert process.poll() is None, "a process ended while Redis was down"
                time.sleep(0.1)
            # Everyone went on, at their share.
            assert len(rows_of(pg_space, COLLECTED)) > before
            assert all(len(load.statuses) > n for load, n in zip(loads, answered, strict=True))
            private_redis.start()  # empty, as after a restart
            back_at = time.monotonic()

            for i, process in enumerate(collectors):
                assert process.wait(timeout=60) == 0, (tmp_path / f"collect{i}.err").read_text()
            answered = [len(load.statuses) for load in loads]
            wait_until_sync(
                lambda: all(len(x.statuses) > n for x, n in zip(loads, answered, strict=True)),
                30,
                "serve answering after the restart",
            )
            for load in loads:
                load.finish()
        finally:
            for process in collectors:
                if process.poll() is None:  # a failure above: no orphan
                    process.kill()
                    process.wait()
            for serve in serves:
                if serve.process.poll() is None:
                    serve.stop()
        seen = sim_stats(sim)
    if seen["429"] or seen["418"]:
        report = outage_report(seen, killed_at, back_at, killed_wall, tmp_path, ports.owners)
        report += "\n" + redis_view(booked, seen, killed_at, killed_wall)
        pytest.fail(report, pytrace=False)
    for load in loads:
        assert set(load.statuses) == {200}
    for i in range(3):
        summary = json.loads((tmp_path / f"collect{i}.out").read_text().strip().splitlines()[-1])
        assert summary["collectable"] and summary["upstream_calls"] >= 1
    # PostgreSQL against the truth: the collected range whole, and whatever serve stored for
    # its clients (a run back from UNTIL) exactly the simulator's candles.
    collected = rows_of(pg_space, COLLECTED)
    assert len(collected) == len(set(collected))
    since = parse_time(SINCE)  # collect stores a page reaching below --since down to it only
    expected = {row for row in asyncio.run(truth(tmp_path, COLLECTED, since)) if row[2] >= since}
    assert set(collected) == expected
    for market in LOADED:
        served = rows_of(pg_space, (market,))
        assert len(served) >= 200
        oldest = min(row[2] for row in served)
        expected = {
            row for row in asyncio.run(truth(tmp_path, (market,), oldest)) if row[2] >= oldest
        }
        assert set(served) == expected
    # Each serve counted the five, told the loss once at WARNING and the return once at INFO.
    for serve in serves:
        err = serve.log.with_suffix(".err").read_text()
        lines = json_log_lines(err)
        lost = [line for line in lines if "the rate budget falls back" in line["message"]]
        assert len(lost) == 1, err
        assert "2 of 10 requests per window (5 processes)" in lost[0]["message"], err
        assert lost[0]["level"] == "WARNING"
        back = [line for line in lines if "the rate budget is shared again" in line["message"]]
        assert len(back) == 1 and back[0]["level"] == "INFO", err
