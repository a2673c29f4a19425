"""The REST client against a loopback simulator (its own process) with Upbit's 10/s limit
and 30 ms latency: sustained requests/s per group with zero 429s, how long a CRITICAL
request waits behind a LOW backfill, the same sequential candle paging done by the real
pyupbit (``get_ohlcv``) and ccxt (``fetch_ohlcv``, rate limiter on) with their own pacing,
shared in-flight requests, decoding speed, and the Redis-shared budget under 50 ms jitter
(skipped without a Redis at 127.0.0.1:6379).

``python -m bench.client [SECONDS]`` prints the table; SECONDS (default 10) is the length
of the sustained run.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from bench._libs import ccxt_ohlcv, pyupbit_ohlcv
from bench._sim import start_simulator
from marketspine._base.time import MINUTE_MS
from marketspine._base.timeframes import parse_timeframe
from marketspine._budget.local import DEFAULT_MARGIN, LocalRateBudget
from marketspine._budget.rules import BudgetStatistics, Priority, RateBudget
from marketspine._client.client import Client
from marketspine._upbit.rest import decode_candles

LATENCY_MS = 30.0
JITTER_MS = 3.0
LIMIT = 10
# What the budget allows: LIMIT per window + its 20 ms margin.
CEILING = LIMIT / (1 + DEFAULT_MARGIN)
_HISTORY_TO_MS = 1_785_000_000_000  # a fixed past moment: pages far from "now"


def _row(name: str, value: float, unit: str, goal: str) -> dict[str, Any]:
    return {"benchmark": name, "value": value, "unit": unit, "goal": goal}


def _start_sim() -> tuple[subprocess.Popen[str], str]:
    return start_simulator(
        "--latency-ms", str(LATENCY_MS), "--jitter-ms", str(JITTER_MS), "--rate-limit", str(LIMIT)
    )


async def _sim_stats(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as http:
        stats: dict[str, Any] = (await http.get("/sim/stats")).json()
        return stats


async def _reset(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        (await http.post("/sim/reset")).raise_for_status()
    await asyncio.sleep(1.1)  # start on a clean upstream second


async def _sustained(base: str, seconds: float) -> list[dict[str, Any]]:
    """Every group saturated at once by 6 callers each, for ``seconds``."""
    await _reset(base)
    async with Client(base) as client:
        await asyncio.sleep(1.1)  # the markets call above stays out of the measured second
        stop_at = time.monotonic() + seconds

        async def candles(index: int) -> None:
            to_ms = _HISTORY_TO_MS - index * 10**9
            while time.monotonic() < stop_at:
                page = await client.candles("KRW-BTC", "1m", count=200, to_ms=to_ms)
                to_ms = page[-1].start_ms

        codes = [m.market for m in await client.markets()][:6]

        async def tickers(index: int) -> None:
            k = 0
            while time.monotonic() < stop_at:
                # A different list length per worker: no two calls share a request.
                await client.tickers([codes[(k + j) % len(codes)] for j in range(index + 1)])
                k += 1

        async def books(index: int) -> None:
            k = 0
            while time.monotonic() < stop_at:
                await client.orderbooks([codes[index]], count=1 + k % 30)
                k += 1

        async def trades(index: int) -> None:
            k = 0
            while time.monotonic() < stop_at:
                await client.trades(codes[index], count=1 + k % 500)
                k += 1

        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for index in range(6):
                for worker in (candles, tickers, books, trades):
                    tg.create_task(worker(index))
        elapsed = time.monotonic() - started
        retries = client.statistics().retries
    upstream = await _sim_stats(base)
    # Requests upstream answered, not calls made: shared in-flight calls count once.
    served = upstream["requests"]["by_group"]
    rows = [
        _row(
            f"sustained {group} req/s ({LIMIT}/s limit, {LATENCY_MS:g} ms latency)",
            round(served.get(group, 0) / elapsed, 2),
            "req/s",
            ">= 9.5",
        )
        for group in ("candles", "ticker", "orderbook", "trade")
    ]
    rows.append(
        _row(
            "429s + 418s during the sustained run", upstream["429"] + upstream["418"], "count", "0"
        )
    )
    rows.append(_row("retries during the sustained run", retries, "count", "0"))
    return rows


class _TimedBudget:
    """A budget that notes how long each acquire above LOW waited in ``inner`` (ms): the
    part of an urgent request's time that is the budget's, apart from the round trip."""

    def __init__(self, inner: RateBudget) -> None:
        self.inner = inner
        self.waits: list[float] = []

    async def acquire(self, group: str, priority: Priority = Priority.NORMAL) -> None:
        asked = time.monotonic()
        await self.inner.acquire(group, priority)
        if priority > Priority.LOW:
            self.waits.append((time.monotonic() - asked) * 1000)

    def observe(
        self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
    ) -> None:
        self.inner.observe(group, remaining_sec, sent_at=sent_at)

    def penalize(self, group: str, seconds: float) -> None:
        self.inner.penalize(group, seconds)

    def statistics(self) -> BudgetStatistics:
        return self.inner.statistics()


class _LoopLateness:
    """How late this event loop wakes a task that sleeps ``PROBE_S`` at a time (ms): what an
    urgent request's time spends on a busy loop rather than in the budget, which sleeps the
    same way for its slot."""

    PROBE_S = 0.005

    def __init__(self) -> None:
        self.late: list[float] = []

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.PROBE_S)
            self.late.append((time.monotonic() - asked - self.PROBE_S) * 1000)


async def _urgent_behind_backfill(base: str, *, shared: bool) -> list[dict[str, Any]]:
    """A LOW backfill (8 callers) saturates candles; every ~1.5-1.9 s a CRITICAL or HIGH
    candle request arrives — in the same process (one ``LocalRateBudget``), or with
    ``shared`` in another process on the same Redis (two ``RedisRateBudget``s). The bot's
    budget says it expects urgent work (``expect_urgent``, as Spine's does), so the backfill
    keeps the reserve before the bot's first request. Rows: the urgent requests' time to
    answer (and of that, the wait for the budget), the backfill's own rate meanwhile, and how
    late the event loop woke a sleeping task meanwhile (a loaded machine's share)."""
    import uuid

    from marketspine._budget.redis import RedisRateBudget

    where = "other process (Redis)" if shared else "same process"
    if shared:
        from redis.asyncio import Redis

        probe = Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
        try:
            await probe.ping()
        except OSError as exc:
            print(f"urgent behind backfill, {where}: skipped ({exc})", file=sys.stderr)
            return []
        finally:
            await probe.aclose()
    await _reset(base)
    prefix = f"marketspine-bench-{uuid.uuid4().hex[:8]}:"
    budgets: list[RateBudget] = (
        [
            RedisRateBudget(REDIS_URL, prefix=prefix, scope="bench", expect_urgent=bot)
            for bot in (False, True)
        ]
        if shared
        else [LocalRateBudget(expect_urgent=True)]
    )
    for budget in budgets:
        if isinstance(budget, RedisRateBudget):
            await budget.__aenter__()  # the bot's process registers (closed below)
    low_pages: list[float] = []
    waits: list[float] = []
    timed = _TimedBudget(budgets[-1])
    async with Client(base, budget=budgets[0]) as bulk, Client(base, budget=timed) as bot:
        stop = False

        async def backfill(index: int) -> None:
            to_ms = _HISTORY_TO_MS - index * 10**9
            while not stop:
                page = await bulk.candles(
                    "KRW-BTC", "1m", count=200, to_ms=to_ms, priority=Priority.LOW
                )
                low_pages.append(time.monotonic())
                to_ms = page[-1].start_ms

        lateness = _LoopLateness()
        async with asyncio.TaskGroup() as tg:
            for index in range(8):
                tg.create_task(backfill(index))
            await asyncio.sleep(1.5)  # let the backfill fill the group
            lateness_probe = tg.create_task(lateness.run())
            started = time.monotonic()
            for k in range(16):
                await asyncio.sleep(1.5 + 0.023 * k)  # arrive at varied phases
                asked = time.monotonic()
                urgency = Priority.CRITICAL if k % 2 else Priority.HIGH
                await bot.candles("KRW-ETH", "1m", count=1, priority=urgency)
                waits.append((time.monotonic() - asked) * 1000)
            ended = time.monotonic()
            stop = True
            lateness_probe.cancel()
    # The window's margin follows the round-trip spread (a loaded machine widens it); the
    # budget's ceiling is LIMIT per (1 s + margin).
    margin = budgets[0].statistics().groups["candles"].margin
    for budget in budgets:
        if isinstance(budget, RedisRateBudget):
            await budget.aclose()
    rate = sum(1 for t in low_pages if started <= t < ended) / (ended - started)
    urgent_rate = len(waits) / (ended - started)
    goal = f"<= {LATENCY_MS + JITTER_MS + 10:.0f} (latency + jitter + 10)"
    label = f"HIGH/CRITICAL behind a LOW backfill, {where}"
    return [
        _row(f"{label}: median ms to answer", round(statistics.median(waits), 1), "ms", goal),
        _row(f"{label}: max ms to answer after the first", round(max(waits[1:]), 1), "ms", goal),
        _row(f"{label}: max ms waited for the budget", round(max(timed.waits), 1), "ms", "<= 10"),
        # The first finds the reserve kept too: the bot's budget expects urgent work.
        _row(f"{label}: the first one, ms to answer", round(waits[0], 1), "ms", goal),
        _row(
            f"{label}: the backfill meanwhile ({urgent_rate:.2f} urgent req/s beside it)",
            round(rate, 2),
            "req/s",
            f">= {0.9 * CEILING:.2f} (90% of the {CEILING:.1f}/s ceiling)",
        ),
        _row(f"{label}: backfill + urgent together", round(rate + urgent_rate, 2), "req/s", "-"),
        _row(
            f"{label}: the event loop's lateness meanwhile, max (p99"
            f" {statistics.quantiles(lateness.late, n=100)[98]:.1f} ms)",
            round(max(lateness.late), 1),
            "ms",
            "-",
        ),
        _row(
            f"{label}: the window's margin then (ceiling {LIMIT / (1 + margin):.2f}/s)",
            round(margin * 1000, 1),
            "ms",
            "-",
        ),
    ]


async def _paced(base: str, seconds: float) -> list[dict[str, Any]]:
    """One sequential caller, three pacings, the same candle pages."""
    rows = []

    # The real libraries, each with its own pacing: pyupbit sleeps 0.1 s between the pages
    # of one get_ohlcv; ccxt's limiter spaces request starts by rateLimit × cost.
    pages = max(5, int(seconds * 8))
    until = _HISTORY_TO_MS
    libraries: list[tuple[str, Callable[[], tuple[float, int]]]] = [
        ("pyupbit get_ohlcv (its own pacing)", lambda: pyupbit_ohlcv(base, until, pages * 200)),
        (
            "ccxt fetch_ohlcv (enableRateLimit)",
            lambda: ccxt_ohlcv(base, until - pages * 200 * MINUTE_MS, until),
        ),
    ]
    for name, fetch in libraries:
        await _reset(base)
        elapsed, _ = await asyncio.to_thread(fetch)
        upstream = await _sim_stats(base)
        calls = upstream["requests"]["by_path"].get("/v1/candles/minutes/1", 0)
        rows.append(
            _row(f"sequential, {name}: req/s", round(calls / elapsed, 2), "req/s", "(comparison)")
        )
        rows.append(_row(f"sequential, {name}: 429s", upstream["429"], "count", "0"))

    await _reset(base)
    async with Client(base) as client:
        n, started = 0, time.monotonic()
        to_ms = _HISTORY_TO_MS
        while time.monotonic() < started + seconds:
            page = await client.candles("KRW-BTC", "1m", count=200, to_ms=to_ms)
            to_ms = page[-1].start_ms
            n += 1
        rate = n / (time.monotonic() - started)
    rows.append(
        _row("sequential, marketspine Client: req/s", round(rate, 2), "req/s", "(comparison)")
    )
    await _reset(base)
    async with Client(base) as client:
        n, started = 0, time.monotonic()

        async def caller(index: int) -> None:
            nonlocal n
            to_ms = _HISTORY_TO_MS - index * 10**9
            while time.monotonic() < started + seconds:
                page = await client.candles("KRW-BTC", "1m", count=200, to_ms=to_ms)
                to_ms = page[-1].start_ms
                n += 1

        async with asyncio.TaskGroup() as tg:
            for index in range(4):
                tg.create_task(caller(index))
        rate = n / (time.monotonic() - started)
    upstream = await _sim_stats(base)
    rows.append(
        _row("4 concurrent callers, marketspine Client: req/s", round(rate, 2), "req/s", ">= 9.5")
    )
    rows.append(
        _row("4 concurrent callers, marketspine Client: 429s", upstream["429"], "count", "0")
    )
    return rows


async def _coalescing(base: str) -> list[dict[str, Any]]:
    await _reset(base)
    async with Client(base) as client:
        await asyncio.gather(*(client.tickers(["KRW-BTC", "KRW-ETH"]) for _ in range(100)))
    upstream = await _sim_stats(base)
    calls = upstream["requests"]["by_path"].get("/v1/ticker", 0)
    return [_row("100 identical concurrent ticker calls: upstream requests", calls, "count", "1")]


async def _margin(base: str, seconds: float, jitter_ms: float) -> list[dict[str, Any]]:
    """Why the margin: saturated runs with upstream latency varying by ``jitter_ms``, once
    without a margin and once with the default."""
    rows = []
    for margin in (0.0, DEFAULT_MARGIN):
        await _reset(base)
        async with httpx.AsyncClient(base_url=base) as http:
            (await http.post("/sim/faults", json={"jitter_ms": jitter_ms})).raise_for_status()
        async with Client(base, budget=LocalRateBudget(margin=margin)) as client:
            stop_at = time.monotonic() + seconds

            async def caller(index: int, client: Client, stop_at: float) -> None:
                to_ms = _HISTORY_TO_MS - index * 10**9
                while time.monotonic() < stop_at:
                    page = await client.candles("KRW-BTC", "1m", count=200, to_ms=to_ms)
                    to_ms = page[-1].start_ms

            started = time.monotonic()
            async with asyncio.TaskGroup() as tg:
                for index in range(6):
                    tg.create_task(caller(index, client, stop_at))
            elapsed = time.monotonic() - started
        upstream = await _sim_stats(base)
        served = upstream["requests"]["by_group"].get("candles", 0) - upstream["429"]
        label = f"margin {margin * 1000:g} ms, {jitter_ms:g} ms jitter, {seconds:g} s saturated"
        rows.append(_row(f"{label}: 429s", upstream["429"], "count", "0"))
        rows.append(_row(f"{label}: req/s", round(served / elapsed, 2), "req/s", ">= 9.5"))
    async with httpx.AsyncClient(base_url=base) as http:
        (await http.post("/sim/faults", json={"jitter_ms": JITTER_MS})).raise_for_status()
    return rows


REDIS_URL = "redis://127.0.0.1:6379/0"


async def _redis_jitter(base: str, seconds: float, jitter_ms: float) -> list[dict[str, Any]]:
    """The Redis budget under jitter: two budgets sharing one Redis (as two processes on one
    IP would), three callers each, saturated for ``seconds`` while upstream latency varies
    by ``jitter_ms``; each widens its margin to the jitter it sees, Redis applies the widest."""
    import uuid

    from redis.asyncio import Redis

    from marketspine._budget.redis import RedisRateBudget

    label = f"Redis budget, 2 processes, {jitter_ms:g} ms jitter, {seconds:g} s saturated"
    probe = Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        await probe.ping()
    except OSError as exc:
        print(f"{label}: skipped, no Redis at {REDIS_URL} ({exc})", file=sys.stderr)
        return []
    finally:
        await probe.aclose()
    await _reset(base)
    async with httpx.AsyncClient(base_url=base) as http:
        (await http.post("/sim/faults", json={"jitter_ms": jitter_ms})).raise_for_status()
    prefix = f"marketspine-bench-{uuid.uuid4().hex[:8]}:"
    budgets = [RedisRateBudget(REDIS_URL, prefix=prefix, scope="bench") for _ in range(2)]
    stop_at = time.monotonic() + seconds

    async def caller(index: int, client: Client) -> None:
        to_ms = _HISTORY_TO_MS - index * 10**9
        while time.monotonic() < stop_at:
            page = await client.candles("KRW-BTC", "1m", count=200, to_ms=to_ms)
            to_ms = page[-1].start_ms

    started = time.monotonic()
    async with budgets[0], budgets[1], Client(base, budget=budgets[0]) as one:
        async with Client(base, budget=budgets[1]) as two, asyncio.TaskGroup() as tg:
            for index in range(6):
                tg.create_task(caller(index, one if index % 2 else two))
        elapsed = time.monotonic() - started
        shared = all(b.shared for b in budgets)
        margin = max(b.statistics().groups["candles"].margin for b in budgets)
    async with httpx.AsyncClient(base_url=base) as http:
        (await http.post("/sim/faults", json={"jitter_ms": JITTER_MS})).raise_for_status()
    upstream = await _sim_stats(base)
    served = upstream["requests"]["by_group"].get("candles", 0) - upstream["429"]
    if not shared:
        label += " (Redis lost during the run: fallback share)"
    return [
        _row(f"{label}: 429s", upstream["429"], "count", "0"),
        _row(f"{label}: req/s", round(served / elapsed, 2), "req/s", ">= 9"),
        _row(f"{label}: margin reached", round(margin * 1000, 1), "ms", ">= jitter spread"),
    ]


def _decode_speed() -> list[dict[str, Any]]:
    rows = [
        {
            "market": "KRW-BTC",
            "candle_date_time_utc": f"2026-07-30T{h:02d}:{m:02d}:00",
            "candle_date_time_kst": f"2026-07-30T{h:02d}:{m:02d}:00",
            "opening_price": 91180000.0 + m,
            "high_price": 91190000.0,
            "low_price": 91170000.0,
            "trade_price": 91185000.0,
            "timestamp": 1785394318967,
            "candle_acc_trade_price": 7467242.6316,
            "candle_acc_trade_volume": 0.08189562,
            "unit": 1,
        }
        for h in range(4)
        for m in range(50)
    ]
    body = msgspec.json.encode(rows)
    timeframe = parse_timeframe("1m")
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        decode_candles(body, timeframe)
    rate = rounds * len(rows) / (time.perf_counter() - started)
    need = LIMIT * 200
    return [
        _row(
            "decode_candles (200-candle pages)",
            round(rate),
            "candles/s",
            f">= {100 * need:,} (100x the {need:,}/s one group can fetch)",
        )
    ]


def run(seconds: float = 10.0) -> list[dict[str, Any]]:
    """Every row (see the module docstring); the sustained run lasts ``seconds``."""
    rows = _decode_speed()
    proc, base = _start_sim()
    try:
        rows += asyncio.run(_sustained(base, seconds))
        rows += asyncio.run(_urgent_behind_backfill(base, shared=False))
        rows += asyncio.run(_urgent_behind_backfill(base, shared=True))
        rows += asyncio.run(_paced(base, min(seconds, 5.0)))
        rows += asyncio.run(_coalescing(base))
        rows += asyncio.run(_margin(base, min(seconds, 5.0), jitter_ms=25.0))
        rows += asyncio.run(_redis_jitter(base, min(seconds, 10.0), jitter_ms=50.0))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


if __name__ == "__main__":
    for row in run(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0):
        value = row["value"]
        shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        print(f"{row['benchmark']:<66} {shown:>12} {row['unit']:<10} goal {row['goal']}")
