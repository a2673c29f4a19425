"""pyupbit and ccxt themselves, pointed at the simulator: the comparison rows of the
benchmarks run the real libraries with their own pacing, not an imitation of it."""

from __future__ import annotations

import time
from typing import Any

from marketspine._base.time import MINUTE_MS, format_utc

MARKET = "KRW-BTC"


def pyupbit_ohlcv(base: str, until: int, count: int) -> tuple[float, int]:
    """``pyupbit.get_ohlcv`` of ``count`` 1m candles up to ``until``: (seconds, rows)."""
    import pyupbit  # type: ignore[import-untyped]
    import pyupbit.request_api  # type: ignore[import-untyped]
    import requests

    upbit = "https://api.upbit.com"

    class Redirect:  # pyupbit hard-codes Upbit's URL; send its GETs to the simulator
        @staticmethod
        def get(target: str, **kwargs: Any) -> Any:
            return requests.get(base + target[len(upbit) :], timeout=10, **kwargs)

    original = pyupbit.request_api.requests
    pyupbit.request_api.requests = Redirect
    try:
        started = time.perf_counter()
        frame = pyupbit.get_ohlcv(MARKET, "minute1", count=count, to=format_utc(until))
        elapsed = time.perf_counter() - started
    finally:
        pyupbit.request_api.requests = original
    rows = 0 if frame is None else len(frame)  # pyupbit returns None on any error
    return elapsed, rows


def ccxt_ohlcv(base: str, since: int, until: int) -> tuple[float, int]:
    """A ccxt ``fetch_ohlcv`` loop (rate limiter on) over [since, until): (seconds, rows)."""
    import ccxt  # type: ignore[import-untyped]

    exchange = ccxt.upbit({"timeout": 10_000, "enableRateLimit": True})
    exchange.urls["api"] = {"public": base, "private": base}
    exchange.load_markets()
    rows: dict[int, list[Any]] = {}
    cursor = since
    started = time.perf_counter()
    while cursor < until:
        page = exchange.fetch_ohlcv("BTC/KRW", "1m", since=cursor, limit=200)
        if not page:
            break
        rows.update((row[0], row) for row in page if row[0] < until)
        cursor = page[-1][0] + MINUTE_MS
    elapsed = time.perf_counter() - started
    return elapsed, len(rows)
