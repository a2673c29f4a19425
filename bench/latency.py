"""Far from Upbit (issue 22): per simulator latency (30, 100, 200, 300 ms, up to 10 ms of
jitter, Upbit's 10 requests/s), marketspine beside pyupbit and ccxt in the same run:

* a cold chart — 1,000 1m candles of a dense market with nothing stored: Spine's
  ``candles(count=1000)``, pyupbit's ``get_ohlcv(count=1000)``, a ccxt ``fetch_ohlcv`` loop
  over the same 1,000 minutes — time and candle calls, the median of three runs each, after
  a throwaway read has warmed the simulator's series so every client meets the same upstream;
* a one-market week backfill — 10,080 1m candles: marketspine's ``collect`` (LOW, pages
  pipelined), ``get_ohlcv(count=10080)``, the ccxt loop — candles/s, its share of the
  ceiling (10 pages of 200 a second = 2,000 candles/s) and 429s. marketspine's rate is given
  over the whole run (which includes the first page, asked alone, with the market list, to
  learn the market's density, and the last page's round trip: fixed costs of a 5 s run) and
  from the first page stored to the last (the rate it keeps);
* a one-market month backfill — 43,200 1m candles, marketspine's ``collect`` alone (the
  libraries would take minutes): the same rates over a 22 s run, where the fixed costs
  weigh a quarter as much.

Each latency gets its own simulator process (``marketspine sim --latency-ms L --jitter-ms
10``), so the libraries meet the same upstream in the same run.

``python -m bench latency`` (or ``python -m bench.latency [LATENCY_MS ...]``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench._libs import ccxt_ohlcv, pyupbit_ohlcv
from bench._sim import simulator
from marketspine._base.time import DAY_MS, MINUTE_MS, now_ms
from marketspine._base.timeframes import parse_timeframe
from marketspine._budget.local import DEFAULT_LIMIT, DEFAULT_MARGIN
from marketspine._budget.process import forget_process_budgets
from marketspine._client.client import Client
from marketspine._spine.spine import Spine
from marketspine._store.backfill import ProgressEvent, collect
from marketspine._store.sqlite import SQLiteStore

Row = dict[str, Any]
LATENCIES_MS = (30, 100, 200, 300)
JITTER_MS = 10
MARKET = "KRW-BTC"  # trades every second in the simulator
CHART = 1_000
WEEK = 7 * 1440
MONTH = 30 * 1440
CEILING = 10 * 200  # candles/s: 10 pages of 200 a second
_MINUTE = parse_timeframe("1m")


def row(name: str, value: float, unit: str, goal: str) -> Row:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


def _stats(base: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(base + "/sim/stats", timeout=10).json()
    return stats


def _calls(base: str) -> int:
    return int(_stats(base)["requests"]["by_group"].get("candles", 0))


def _reset(base: str) -> None:
    httpx.post(base + "/sim/reset", timeout=10).raise_for_status()
    time.sleep(1.1)  # a fresh upstream second: one run's tail must not cost the next a 429


async def _spine_chart(base: str, db: Path) -> tuple[float, int]:
    forget_process_budgets()  # a new Spine stands for a new process: a budget of its own
    async with Spine(base, db, warmup_every_s=0) as spine:
        started = time.perf_counter()
        result = await spine.candles(MARKET, "1m", count=CHART)
        elapsed = time.perf_counter() - started
    assert len(result) == CHART, len(result)
    return elapsed, len(result)


def _round_trip_ms(base: str, until: int) -> float:
    """One warm page's round trip as a client sees it (the simulator's latency, its jitter
    and its own time to answer), the median of five: the unit of the cold chart's goal."""
    to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until / 1000))
    params = {"market": MARKET, "count": "200", "to": to}
    times: list[float] = []
    _reset(base)
    with httpx.Client(base_url=base, timeout=10) as http:
        for _ in range(5):  # five pages fit in one upstream second
            started = time.perf_counter()
            http.get("/v1/candles/minutes/1", params=params).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[2]


def _median_chart(base: str, chart: Callable[[int], tuple[float, int]]) -> tuple[float, int]:
    """The median of three cold charts: (ms, candle calls of that run)."""
    runs: list[tuple[float, int]] = []
    for run in range(3):
        _reset(base)
        before = _calls(base)
        elapsed, got = chart(run)
        assert got >= CHART - 40, got  # ccxt's minutes may miss the few without trades
        runs.append((elapsed * 1000, _calls(base) - before))
    return sorted(runs)[1]


async def _collect_range(
    base: str, db: Path, since: int, until: int
) -> tuple[float, int, float, int]:
    """(seconds, candles written, candles/s from the first page stored to the last, calls)."""
    stored: list[tuple[float, int]] = []

    def progress(event: ProgressEvent) -> None:
        stored.append((time.perf_counter(), event.candles_written))

    forget_process_budgets()  # as a new `collect` process would start
    async with Client(base) as client, SQLiteStore(db) as store:
        summary = await collect(
            client,
            store,
            [MARKET],
            _MINUTE,
            since_ms=since,
            until_ms=until,
            now_ms=now_ms(),
            progress=progress,
        )
    (first_at, first), (last_at, last) = stored[0], stored[-1]
    steady = (last - first) / (last_at - first_at)
    return summary.seconds, summary.candles_written, steady, summary.upstream_calls


def one_latency(latency_ms: int, folder: Path) -> list[Row]:
    rows: list[Row] = []
    label = f"{latency_ms} ms"
    with simulator(
        "--latency-ms", str(latency_ms), "--jitter-ms", str(JITTER_MS), "--rate-limit", "10"
    ) as base:
        until = _MINUTE.floor(now_ms()) - DAY_MS  # closed, and not in the simulator's recent cache
        chart_since = until - CHART * MINUTE_MS
        # -- cold chart: time and calls, the median of three runs per client ---------------
        # The simulator builds a series' history on first demand, which made its first page
        # twice as slow as later ones: a throwaway chart warms it, so marketspine, pyupbit
        # and ccxt all meet the same warm upstream (each measured chart's database is new).
        asyncio.run(_spine_chart(base, folder / f"warm-{latency_ms}.db"))
        charts: dict[str, Callable[[int], tuple[float, int]]] = {
            "marketspine": lambda run: asyncio.run(
                _spine_chart(base, folder / f"chart-{latency_ms}-{run}.db")
            ),
            "pyupbit": lambda run: pyupbit_ohlcv(base, until, CHART),
            "ccxt": lambda run: ccxt_ohlcv(base, chart_since, until),
        }
        round_trip = _round_trip_ms(base, until)
        rows.append(row(f"{label}: one page's round trip (median of 5)", round_trip, "ms", "-"))
        for name, chart in charts.items():
            elapsed, calls = _median_chart(base, chart)
            if name == "marketspine":
                goal = f"≤ 2 RTT + 50 = {2 * round_trip + 50:.0f} ms"
                calls_goal = "≤ 6"
                rows.append(row(f"{label}: cold chart 1,000 1m, marketspine", elapsed, "ms", goal))
            else:
                goal = calls_goal = "compare"
                rows.append(row(f"{label}: cold chart, {name}", elapsed, "ms", goal))
            rows.append(row(f"{label}: cold chart, {name} calls", calls, "calls", calls_goal))
        # -- one-market week backfill: candles/s ----------------------------------------------
        week_since = until - WEEK * MINUTE_MS
        _reset(base)
        week = asyncio.run(
            _collect_range(base, folder / f"week-{latency_ms}.db", week_since, until)
        )
        rows += _collect_rows(f"{label}: week backfill", base, latency_ms, *week)
        _reset(base)
        elapsed, written = pyupbit_ohlcv(base, until, WEEK)
        rows.append(
            row(
                f"{label}: week backfill, pyupbit ({written:,})",
                written / elapsed,
                "candles/s",
                "compare",
            )
        )
        _reset(base)
        elapsed, written = ccxt_ohlcv(base, week_since, until)
        rows.append(
            row(
                f"{label}: week backfill, ccxt ({written:,})",
                written / elapsed,
                "candles/s",
                "compare",
            )
        )
        # -- one-market month backfill: marketspine alone -----------------------------------
        _reset(base)
        month = asyncio.run(
            _collect_range(
                base, folder / f"month-{latency_ms}.db", until - MONTH * MINUTE_MS, until
            )
        )
        rows += _collect_rows(f"{label}: month backfill", base, latency_ms, *month)
    return rows


def _collect_rows(
    label: str, base: str, latency_ms: int, seconds: float, written: int, steady: float, calls: int
) -> list[Row]:
    # The most a whole run can reach: at exactly 10/s (no margin), the last of ``calls``
    # pages goes (calls - 1) / 10 s after the first, and is answered a round trip later;
    # with the budget's margin floor (10 sends in any 1.02 s), (calls - 1) / 10 * 1.02 s.
    round_trip = (latency_ms + JITTER_MS / 2) / 1000
    windows = (calls - 1) / DEFAULT_LIMIT
    bound = written / (windows + round_trip)
    with_margin = written / (windows * (1 + DEFAULT_MARGIN) + round_trip)
    margin = f"{with_margin:,.0f} with the {DEFAULT_MARGIN * 1000:.0f} ms margin"
    rows: list[Row] = []
    for what, rate, goal in (
        ("whole run", written / seconds, f"≥ 1,900 (bound {bound:,.0f}; {margin})"),
        ("first to last page", steady, "≥ 1,900"),
    ):
        share = f"{100 * rate / CEILING:.0f}% of {CEILING:,}"
        name = f"{label}, marketspine collect, {what} ({share})"
        rows.append(row(name, rate, "candles/s", goal))
    rows.append(row(f"{label}, marketspine 429s", _stats(base)["429"], "count", "0"))
    return rows


def run(latencies: tuple[int, ...] = LATENCIES_MS) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as name:
        for latency_ms in latencies:
            rows += one_latency(latency_ms, Path(name))
    return rows


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    latencies = tuple(int(a) for a in sys.argv[1:]) or LATENCIES_MS
    table = Table(title="marketspine far from Upbit")
    for column in ("benchmark", "value", "unit", "goal"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for r in run(latencies):
        table.add_row(r["benchmark"], f"{r['value']:,}", r["unit"], r["goal"])
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
