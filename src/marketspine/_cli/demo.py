"""`make demo`: the product end to end against the built-in simulator, with no network.

Starts a simulator on a free loopback port, warms up, collects a little history with a
progress bar, asks Spine for candles the way a chart and a bot would (memory, database,
upstream), streams live trades and tickers for a few seconds, prints a table, exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .._base.time import DAY_MS, format_utc
from .._base.timeframes import parse_timeframe
from .._spine.spine import Spine
from .._store.backfill import collect
from ..records import Ticker, Trade
from ..sim import SimConfig, running
from .commands import progress_bar
from .demo_serve import serve_tour

console = Console()
MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-XRP")


async def tour(base_url: str, db: Path) -> None:
    async with Spine(base_url, db, warmup_every_s=0) as spine:
        report = await spine.warmup()
        console.print(
            f"[bold]warmup[/]: {report['total_markets']} markets with tick sizes "
            f"in {report['execution_time']:.2f} s"
        )

        # A backtester's backfill: a few days of 5m candles, resumable, at the ceiling.
        now = spine.client.upstream_now_ms()
        with progress_bar(console) as on_progress:
            summary = await collect(
                spine.client,
                spine.store,
                MARKETS,
                parse_timeframe("5m"),
                since_ms=now - 3 * DAY_MS,
                until_ms=now,
                now_ms=now,
                progress=on_progress,
            )
        console.print(
            f"collected {summary.candles_written:,} candles with {summary.upstream_calls} "
            f"upstream calls in {summary.seconds:.1f} s"
        )

        # A chart viewer: the same history again costs nothing upstream.
        table = Table(title="Spine.candles: where answers come from")
        for column in ("request", "candles", "source", "upstream calls", "ms"):
            table.add_column(column)
        closed_end = now - now % 300_000  # the forming 5m window is never stored
        three_days = now - 3 * DAY_MS
        for label, call in (
            (
                "KRW-BTC 5m, 3 days (stored)",
                spine.candles("KRW-BTC", "5m", start=three_days, end=closed_end),
            ),
            (
                "KRW-BTC 5m, 3 days (again)",
                spine.candles("KRW-BTC", "5m", start=three_days, end=closed_end),
            ),
            (
                "KRW-BTC 1h, 3 days (new series)",
                spine.candles("KRW-BTC", "1h", start=three_days, end=closed_end),
            ),
            ("KRW-ETH 1d, last 200 + forming", spine.candles("KRW-ETH", "1d", count=200)),
            ("KRW-ETH 1d, last 200 again", spine.candles("KRW-ETH", "1d", count=200)),
        ):
            result = await call
            table.add_row(
                label,
                f"{len(result):,}",
                result.meta.source,
                str(result.meta.upstream_calls),
                f"{result.meta.elapsed_ms:.1f}",
            )
        console.print(table)

        # A bot: live tickers and trades from the WebSocket-fed state.
        await spine.watch(["ticker", "trade"], MARKETS)
        counts: Counter[str] = Counter()
        last_trade: dict[str, Trade] = {}

        async def listen() -> None:
            async for event in spine.stream(["trade", "ticker"], MARKETS):
                if isinstance(event, Trade):
                    counts[f"{event.market} trades"] += 1
                    last_trade[event.market] = event
                elif isinstance(event, Ticker):
                    counts[f"{event.market} tickers"] += 1

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await listen()
        live = Table(title="3 s of live data")
        for column in ("market", "price", "change", "trades", "tickers", "last trade (UTC)"):
            live.add_column(column)
        for market in MARKETS:
            ticker = await spine.ticker(market)
            trade = last_trade.get(market)
            live.add_row(
                market,
                f"{ticker.price:,}",
                f"{ticker.change_rate:+.2%}",
                str(counts[f"{market} trades"]),
                str(counts[f"{market} tickers"]),
                format_utc(trade.ms) if trade else "-",
            )
        console.print(live)
        stats = spine.statistics()
        console.print(
            f"answered by layer: {stats.answered_by}; upstream calls made "
            f"{stats.upstream_calls}, saved {stats.upstream_calls_saved}"
        )


def main() -> None:
    # Sixty times faster than real time so a few seconds of streaming show plenty of trades.
    with (
        running(SimConfig(seed=7, speed=60.0)) as base_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        console.print(f"simulator at {base_url} (offline, deterministic)")
        asyncio.run(tour(base_url, Path(tmp) / "demo.db"))
        serve_tour(console, base_url, Path(tmp) / "serve.db")
    console.print("[green]demo finished[/]")


if __name__ == "__main__":
    main()
