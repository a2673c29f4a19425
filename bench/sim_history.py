"""Simulator history speed: candle pages straight from ``History`` (no HTTP).

* ``cold page``: a 200-candle page of every timeframe, at many points in history, of liquid
  and sparse markets, each with every cache cleared first (goal <= 5 ms, worst case).
* ``warm small page``: count=1..10 near a moving "now" (the WebSocket and polling pattern),
  caches warm (goal: well under 1 ms so the app can serve >= 1,000 requests/s).
* ``ticker`` / ``orderbook`` / ``trades``: the other per-request calls near now.

Timings are process CPU time (``time.process_time``), the best of three runs of each case
with the garbage collector paused (as ``timeit`` does), so a busy shared machine disturbs
the figures less; the worst case over all cases is what the goal is checked against.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from marketspine._base.time import DAY_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES, Timeframe
from marketspine.sim._history import History

NOW = parse_time("2026-11-20T13:47:21.345Z")
MARKETS = ("KRW-BTC", "KRW-XRP", "KRW-SHIB", "KRW-AHT", "KRW-META", "BTC-LINK", "KRW-MIRA")
# Points in history: near now, a month, a year, several years back, right after listing.
AGES_DAYS = (0, 3, 31, 200, 400, 1500, 3000)


def _best_ms(call: Callable[[], object], before: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        before()
        gc.disable()  # as timeit does: a collection pause is not the call's cost
        try:
            start = time.process_time()
            call()
            best = min(best, time.process_time() - start)
        finally:
            gc.enable()
    return best * 1000


def _row(name: str, value: float, unit: str, goal: str) -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


def cold_pages(history: History) -> list[float]:
    """Milliseconds of each cold 200-candle page."""
    # The process's first pages pay for numpy's first calls and the allocator's first
    # arenas (KRW-BTC's 1s page, timed first, took 8, 6 then 3 ms in a row): warm those on
    # a market and a day no case times.
    for tf in TIMEFRAMES.values():
        history.candles("KRW-ETH", tf, before_ms=NOW - 10 * DAY_MS, now_ms=NOW, count=200)
    history.clear_caches()
    times = []
    for code in MARKETS:
        for tf in TIMEFRAMES.values():
            for age in AGES_DAYS:
                before = NOW - age * DAY_MS

                def page(before: int = before, code: str = code, tf: Timeframe = tf) -> object:
                    return history.candles(code, tf, before_ms=before, now_ms=NOW, count=200)

                times.append(_best_ms(page, history.clear_caches))
    return times


def warm_small_pages(history: History) -> list[float]:
    """Milliseconds of count=1..10 pages as "now" advances by 250 ms steps."""
    times = []
    for code in MARKETS[:4]:
        for name in ("1s", "1m", "5m", "1h", "1d"):
            tf = TIMEFRAMES[name]
            for step in range(40):
                now = NOW + step * 250
                count = 1 + step % 10

                def page(
                    now: int = now, count: int = count, code: str = code, tf: Timeframe = tf
                ) -> object:
                    return history.candles(code, tf, before_ms=now + 1, now_ms=now, count=count)

                page()  # warm
                times.append(_best_ms(page, lambda: None))
    return times


def near_now(history: History, call: Callable[[str, int], object]) -> list[float]:
    times = []
    for code in MARKETS:
        for step in range(20):
            now = NOW + step * 250

            def once(code: str = code, now: int = now) -> object:
                return call(code, now)

            once()  # warm
            times.append(_best_ms(once, lambda: None))
    return times


def run() -> list[dict[str, Any]]:
    history = History(1)
    cold = cold_pages(history)
    warm = warm_small_pages(history)
    tickers = near_now(history, history.ticker)
    books = near_now(history, history.orderbook)
    trades = near_now(history, lambda code, now: history.trades(code, before_ms=now, count=50))
    return [
        _row("history cold 200-candle page, worst", max(cold), "ms", "<= 5"),
        _row("history cold 200-candle page, median", statistics.median(cold), "ms", "<= 5"),
        _row("history warm count<=10 page near now, worst", max(warm), "ms", "< 1"),
        _row("history warm count<=10 page near now, median", statistics.median(warm), "ms", "< 1"),
        _row("history ticker near now, median", statistics.median(tickers), "ms", "< 1"),
        _row("history orderbook near now, median", statistics.median(books), "ms", "< 1"),
        _row("history 50 trades near now, median", statistics.median(trades), "ms", "< 1"),
    ]


if __name__ == "__main__":
    rows = run()
    width = max(len(row["benchmark"]) for row in rows)
    print(f"{'benchmark':<{width}}  {'value':>9}  unit  goal")
    for row in rows:
        print(f"{row['benchmark']:<{width}}  {row['value']:>9}  {row['unit']:<4}  {row['goal']}")
