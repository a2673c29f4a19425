"""Memory soak (issue 9 item 6), not part of the test suite or `make bench`: run a mixed
workload against a simulator with 250 markets for ``--minutes`` (default 30) and sample RSS;
once the memory budget is full, RSS must stay flat (the slope is printed as it goes).

    python -m bench.soak [--minutes 30] [--memory-mb 100] [--every-s 10] [--charts 1] [--trace]

Each second it opens a 1,000-candle chart of the next market, and every 10 s the tickers of
all; each pass over the markets takes the next of ``--timeframes`` (default 1m, 5m, 15m, 1h),
so there are more windows than the budget holds and it keeps evicting (one timeframe's
216 windows fit in 100 MiB once windows were charged what they take).
``--charts N`` opens N charts a second instead of one (a denser workload for shorter runs).
``--trace`` starts ``tracemalloc`` (10 frames) once the budget is full (tracing the fill
would slow it several times over) and prints the Python-level memory traced since then with
every sample; at the end, the top 10 allocation sites (by traceback, then by line) that grew
from a reference snapshot taken half way from full to the end, once what the budget holds has
turned over, to the end. Growth outside the budget shows up there; allocator noise shows as
RSS steps while traced memory stays flat. Tracing (and the snapshot it keeps) inflates RSS:
take the RSS figures from a run without ``--trace``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench._memprobe import malloc_trim, probe
from bench._sim import simulator
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._budget.local import LocalRateBudget
from marketspine._spine.spine import Spine

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


def print_growth(first: tracemalloc.Snapshot, last: tracemalloc.Snapshot, top: int = 10) -> None:
    """The `top` allocation sites that grew most from `first` to `last`: by traceback (where
    each came from), then by line (a leak reached through many call paths adds up there)."""
    skip = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen *>"),
    ]
    first, last = first.filter_traces(skip), last.filter_traces(skip)
    for key_type in ("traceback", "lineno"):
        stats = last.compare_to(first, key_type)
        growing = sorted((s for s in stats if s.size_diff > 0), key=lambda s: -s.size_diff)
        print(f"top {min(top, len(growing))} growing sites by {key_type}, reference -> end:")
        for stat in growing[:top]:
            print(
                f"  {stat.size_diff / 1024:+9.1f} KiB  {stat.count_diff:+7d} blocks  "
                f"(now {stat.size / 1024:.1f} KiB in {stat.count} blocks)"
            )
            for line in stat.traceback.format(limit=8, most_recent_first=True):
                print(f"    {line}")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"malloc": {"arena": 1.0}}`` -> ``{"malloc.arena": 1.0}``; list items by index."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            flat[name] = float(value)
    return flat


_BRIEF = {
    "smaps.heap": "heap",
    "smaps.anon": "anon",
    "malloc.uordblks": "malloc used",
    "malloc.fordblks": "free",
    "obmalloc.arenas": "ob arenas",
    "obmalloc.used": "ob used",
    "sqlite.used": "sqlite",
}


def brief(sample: dict[str, float]) -> str:
    """The sample's allocator figures on one line (MiB; arenas and counts as counts)."""
    figures = [f"{label} {sample[key]:.1f}" for key, label in _BRIEF.items() if key in sample]
    counts = ("live_trade_markets", "seq_ids", "series_locks", "queued", "windows")
    return "  ".join(figures + [f"{name} {sample[name]:.0f}" for name in counts])


def print_component_slopes(parts: list[tuple[float, dict[str, float]]]) -> None:
    """Per recorded figure: its change and slope once full, and over the last half."""
    if len(parts) < 4:
        return
    half = parts[len(parts) // 2 :]
    print("figure                          first      last   slope/min  last half/min")
    for name in parts[0][1]:
        if name == "t" or not all(name in p for _, p in parts):
            continue
        series = [(t, p[name]) for t, p in parts]
        tail = [(t, p[name]) for t, p in half]
        print(
            f"  {name:<26} {series[0][1]:9.2f} {series[-1][1]:9.2f} "
            f"{slope_per_minute(series):+10.4f} {slope_per_minute(tail):+12.4f}"
        )


def structures(spine: Spine) -> dict[str, int]:
    """Counts of what the live structures hold (private attributes: a benchmark's view)."""
    live = spine._live
    reader = spine._reader
    budget = spine._memory.budget
    holders: dict[str, int] = {}
    for holder, _ in budget._entries:
        holders[holder.split("-")[0]] = holders.get(holder.split("-")[0], 0) + 1
    stream: Any = spine._feed._stream
    tracks = stream._trades._tracks if stream is not None else {}
    listeners = stream._fanout._listeners if stream is not None else []
    return {
        "windows": len(spine._memory._windows),
        "live_tickers": len(live._tickers),
        "live_books": len(live._books),
        "live_trade_markets": len(live._trades),
        "live_trades": sum(len(held.rows) for held in live._trades.values()),
        "live_candles": len(live._candles),
        "live_tracked": len(live._tracked),
        "seq_markets": len(tracks),
        "seq_ids": sum(len(t.seen) for t in tracks.values()),
        "seq_pending": sum(len(t.pending or ()) for t in tracks.values()),
        "series_locks": 0 if reader is None else len(reader.series_locks),
        "queued": sum(listener.qsize() for listener in listeners),
        "budget_entries": len(budget._entries),
        **{f"budget_{name}": count for name, count in sorted(holders.items())},
        "flights": len(spine.client._flights._in_flight),
        "tasks": len(asyncio.all_tasks()),
    }


def traced_mib() -> float:
    return tracemalloc.get_traced_memory()[0] / MIB if tracemalloc.is_tracing() else 0.0


async def soak(
    url: str,
    db: Path,
    minutes: float,
    memory_mb: float,
    every_s: float,
    charts: int = 1,
    timeframes: tuple[str, ...] = ("1m",),
    trace: bool = False,
    record: Path | None = None,
    trim_every_s: float = 0.0,
) -> None:
    import psutil

    process = psutil.Process(os.getpid())
    budget = LocalRateBudget(limit=1000)  # the simulator runs with --rate-limit 0
    async with Spine(url, db, budget=budget, memory_mb=memory_mb, warmup_every_s=0) as spine:
        codes = [m.market for m in await spine.markets()]
        await spine.watch(["ticker", "orderbook", "trade"], codes)
        baseline = process.memory_info().rss / MIB
        print(
            f"baseline RSS {baseline:.1f} MiB, budget {memory_mb:g} MiB, {len(codes)} markets, "
            f"charts of {', '.join(timeframes)}"
        )
        started = time.monotonic()
        full_at: float | None = None
        settled_at: float | None = None  # once what the budget held when full has turned over
        turnover_at = 0  # the budget's eviction count that marks it
        samples: list[tuple[float, float]] = []
        next_sample = started
        reference: tracemalloc.Snapshot | None = None
        reference_at = started + minutes * 60  # set once the budget is full
        traced: list[tuple[float, float]] = []
        parts: list[tuple[float, dict[str, float]]] = []  # flattened probes once full
        out = record.open("w") if record is not None else None
        next_trim = started + trim_every_s
        tick = 0
        while (now := time.monotonic()) - started < minutes * 60:
            for chart in range(charts):
                opened = tick * charts + chart
                timeframe = timeframes[opened // len(codes) % len(timeframes)]
                await spine.candles(codes[opened % len(codes)], timeframe, count=1000)
            if tick % 10 == 0:
                await spine.tickers(quote="KRW", max_age_s=0)
            tick += 1
            if trim_every_s > 0 and now >= next_trim:
                next_trim += trim_every_s
                malloc_trim()
            if now >= next_sample:
                next_sample += every_s
                stats = spine.statistics()
                rss = process.memory_info().rss / MIB
                held = spine._memory.budget.statistics()
                if full_at is None and stats.memory_bytes >= 0.95 * stats.memory_limit_bytes:
                    full_at = now
                    turnover_at = held.evictions + held.entries
                    print(f"budget full after {now - started:.0f} s ({held.entries} entries)")
                    reference_at = now + (started + minutes * 60 - now) / 2
                    if trace:
                        tracemalloc.start(10)
                if full_at is not None:
                    samples.append((now - started, rss))
                    if settled_at is None and held.evictions >= turnover_at:
                        settled_at = now - started
                        print(f"held data turned over by {settled_at:.0f} s", flush=True)
                    if tracemalloc.is_tracing():
                        traced.append((now - started, traced_mib()))
                        if reference is None and now >= reference_at:
                            reference = tracemalloc.take_snapshot()
                            print(f"reference snapshot at {now - started:.0f} s", flush=True)
                print(
                    f"{now - started:7.0f} s  RSS {rss:7.1f} MiB  (+{rss - baseline:.1f})  "
                    f"held {stats.memory_bytes / MIB:6.1f} MiB  traced {traced_mib():6.1f} MiB  "
                    f"slope since full {slope_per_minute(samples):+.3f} MiB/min",
                    flush=True,
                )
                sample = {
                    "t": now - started,
                    "rss": rss,
                    "held": stats.memory_bytes / MIB,
                    "traced": traced_mib(),
                    **flatten(probe()),
                    **structures(spine),
                }
                print("         " + brief(sample), flush=True)
                if full_at is not None:
                    parts.append((now - started, sample))
                if out is not None:
                    out.write(json.dumps({"full": full_at is not None, **sample}) + "\n")
                    out.flush()
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        peak = max((m for _, m in samples), default=process.memory_info().rss / MIB)
        half = samples[len(samples) // 2 :]  # the first half still carries the fill's tail
        # Until every entry held at full has been evicted or used again, the allocator is
        # still placing the first replacements: RSS settles there, it does not grow.
        turned = [(t, m) for t, m in samples if settled_at is not None and t >= settled_at]
        print(
            f"done: {len(samples)} samples once full, slope {slope_per_minute(samples):+.3f} "
            f"MiB/min (last half {slope_per_minute(half):+.3f} MiB/min), "
            f"peak RSS {peak:.1f} MiB = baseline + {peak - baseline:.1f} MiB"
        )
        if len(turned) >= 2:
            print(
                f"once the held data turned over ({turned[0][0]:.0f} s, {len(turned)} samples): "
                f"slope {slope_per_minute(turned):+.3f} MiB/min, RSS {turned[0][1]:.1f} -> "
                f"{turned[-1][1]:.1f} MiB (range {min(m for _, m in turned):.1f}-"
                f"{max(m for _, m in turned):.1f})"
            )
        print_component_slopes(parts)
        if out is not None:
            out.close()
        if reference is not None:
            half = traced[len(traced) // 2 :]
            print(
                f"traced Python memory since full: {traced[0][1]:.1f} -> {traced[-1][1]:.1f} MiB, "
                f"slope {slope_per_minute(traced):+.3f} MiB/min "
                f"(last half {slope_per_minute(half):+.3f} MiB/min)"
            )
            end = tracemalloc.take_snapshot()
            tracemalloc.stop()  # comparing is slow enough without tracing itself
            print_growth(reference, end)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--memory-mb", type=float, default=100.0)
    parser.add_argument("--every-s", type=float, default=10.0)
    parser.add_argument("--charts", type=int, default=1, help="charts opened per second")
    parser.add_argument(
        "--timeframes", default="1m,5m,15m,1h", help="chart timeframes, one per pass"
    )
    parser.add_argument("--trace", action="store_true", help="tracemalloc growth report")
    parser.add_argument("--record", type=Path, help="write every sample as a JSON line here")
    parser.add_argument(
        "--trim-every-s", type=float, default=0.0, help="call glibc malloc_trim(0) this often"
    )
    args = parser.parse_args()
    if args.charts < 1:
        parser.error("--charts must be at least 1")
    unknown = [tf for tf in args.timeframes.split(",") if tf not in TIMEFRAMES]
    if unknown:
        parser.error(f"unknown --timeframes {', '.join(unknown)}: expected {', '.join(TIMEFRAMES)}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        simulator("--markets", "250", "--rate-limit", "0") as url,
    ):
        db = Path(tmp) / "soak.db"
        asyncio.run(
            soak(
                url,
                db,
                args.minutes,
                args.memory_mb,
                args.every_s,
                args.charts,
                tuple(args.timeframes.split(",")),
                args.trace,
                args.record,
                args.trim_every_s,
            )
        )


if __name__ == "__main__":
    main()
