"""Memory soak (issue 9 item 6), not part of the test suite or `make bench`: run a mixed
workload against a simulator with 250 markets for ``--minutes`` (default 30) and sample RSS;
once the memory budget is full, RSS must stay flat (the slope is printed as it goes).

    python -m bench.soak [--minutes 30] [--memory-mb 100] [--every-s 10]

Workload: every market watched live (ticker, orderbook, trade); a chart of 1,000 1m candles
every second on a rotating market (so candle windows keep cycling through the budget); all
KRW tickers every 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench._sim import simulator
from marketspine._ratebudget import LocalRateBudget
from marketspine._spine import Spine

MIB = 2**20


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return 0.0 if var == 0 else cov / var * 60


async def soak(url: str, db: Path, minutes: float, memory_mb: float, every_s: float) -> None:
    import psutil

    process = psutil.Process(os.getpid())
    budget = LocalRateBudget(limit=1000)  # the simulator runs with --rate-limit 0
    async with Spine(url, db, budget=budget, memory_mb=memory_mb, warmup_every_s=0) as spine:
        codes = [m.market for m in await spine.markets()]
        await spine.watch(["ticker", "orderbook", "trade"], codes)
        baseline = process.memory_info().rss / MIB
        print(f"baseline RSS {baseline:.1f} MiB, budget {memory_mb:g} MiB, {len(codes)} markets")
        started = time.monotonic()
        full_at: float | None = None
        samples: list[tuple[float, float]] = []
        next_sample = started
        tick = 0
        while (now := time.monotonic()) - started < minutes * 60:
            await spine.candles(codes[tick % len(codes)], "1m", count=1000)
            if tick % 10 == 0:
                await spine.tickers(quote="KRW", max_age_s=0)
            tick += 1
            if now >= next_sample:
                next_sample += every_s
                stats = spine.statistics()
                rss = process.memory_info().rss / MIB
                if full_at is None and stats.memory_bytes >= 0.95 * stats.memory_limit_bytes:
                    full_at = now
                    print(f"budget full after {now - started:.0f} s")
                if full_at is not None:
                    samples.append((now - started, rss))
                print(
                    f"{now - started:7.0f} s  RSS {rss:7.1f} MiB  (+{rss - baseline:.1f})  "
                    f"held {stats.memory_bytes / MIB:6.1f} MiB  "
                    f"slope since full {slope_per_minute(samples):+.3f} MiB/min",
                    flush=True,
                )
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        peak = max((m for _, m in samples), default=process.memory_info().rss / MIB)
        settled = samples[len(samples) // 2 :]  # the first half still carries the fill's tail
        print(
            f"done: {len(samples)} samples once full, slope {slope_per_minute(samples):+.3f} "
            f"MiB/min (last half {slope_per_minute(settled):+.3f} MiB/min), "
            f"peak RSS {peak:.1f} MiB = baseline + {peak - baseline:.1f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--memory-mb", type=float, default=100.0)
    parser.add_argument("--every-s", type=float, default=10.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator("--markets", "250", "--rate-limit", "0") as url,
    ):
        asyncio.run(soak(url, Path(tmp) / "soak.db", args.minutes, args.memory_mb, args.every_s))


if __name__ == "__main__":
    main()
