"""``marketspine record``: every trade, book and ticker of the markets named, kept until
stopped (SIGINT or SIGTERM: what is held is committed first, exit 0).

Everything the flags say is checked before anything is opened, so bad input is one line
and exit 2; an unknown market is caught once upstream's list is read, before recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .._base.durations import parse_duration
from .._base.urls import check_db, check_redis, check_upstream, redact_url
from .._spine.recording import RecordSummary, market_words, record, record_kinds
from .._store.recording import RecordedKind
from .._store.retention import parse_keep

__all__ = ["run_record", "summary_line"]


def run_record(
    markets: Sequence[str],
    *,
    quote: str | None,
    kinds: str,
    orderbook_every: str,
    orderbook_depth: int,
    backfill: str,
    db: str,
    upstream: str,
    json_output: bool,
    keep: str = "0",
    redis: str | None = None,
) -> None:
    """Record until SIGINT/SIGTERM, then print one summary line (``json_output``: JSON).
    With ``redis``, take turns with the other recorders of ``db`` on it (one writes).

    Raises InvalidRequestError (exit 2) for bad flags or markets, StoreError for an unusable
    ``db``, UpstreamError when upstream cannot be reached."""
    check_upstream(upstream, "--upstream")
    check_db(db, "--db")
    if redis is not None:
        check_redis(redis)
    market_words(markets, quote)
    kind_list = record_kinds(kinds)
    every_ms = parse_duration(orderbook_every, "--orderbook-every")
    backfill_ms = parse_duration(backfill, "--backfill")
    keep_ms = parse_keep(keep)
    summary = asyncio.run(
        _record(
            list(markets),
            quote,
            kind_list,
            every_ms,
            orderbook_depth,
            backfill_ms,
            db,
            upstream,
            keep_ms,
            redis,
        )
    )
    if json_output:
        print(json.dumps(_summary_json(summary), separators=(",", ":")), flush=True)
    else:
        print(summary_line(summary), flush=True)


def summary_line(summary: RecordSummary) -> str:
    """The run in one line: what came live, what the start's backfill stored (else a
    store holding thousands more trades than "recorded" would look wrong), the gaps."""
    counts = summary.counts
    backfilled = sum(report.trades for report in summary.backfill)
    trades = f"{counts.trades:,} trades"
    if backfilled:
        trades += f" live (and {backfilled:,} backfilled from REST)"
    return (
        f"recorded {trades}, {counts.orderbooks:,} books and {counts.tickers:,} tickers of "
        f"{len(summary.markets)} market(s) in {summary.seconds:.1f} s; "
        f"{counts.gaps} new known gap(s), {len(summary.gaps)} in all"
    )


def _summary_json(summary: RecordSummary) -> dict[str, Any]:
    counts = summary.counts
    return {
        "markets": summary.markets,
        "kinds": summary.kinds,
        "trades": counts.trades,
        "orderbooks": counts.orderbooks,
        "tickers": counts.tickers,
        "new_gaps": counts.gaps,
        "backfilled_trades": sum(r.trades for r in summary.backfill),
        "seconds": round(summary.seconds, 3),
        "gaps": [
            {"market": g.market, "from_seq": g.from_seq, "to_seq": g.to_seq,
             "from_ms": g.from_ms, "to_ms": g.to_ms, "reason": g.reason}
            for g in summary.gaps
        ],
    }  # fmt: skip


async def _record(
    markets: list[str],
    quote: str | None,
    kinds: list[str],
    orderbook_every_ms: int,
    orderbook_depth: int,
    backfill_ms: int,
    db: str,
    upstream: str,
    keep_ms: dict[RecordedKind, int],
    redis: str | None,
) -> RecordSummary:
    from .._spine.spine import Spine

    stop = asyncio.Event()

    def started(codes: list[str]) -> None:
        shown = ", ".join(codes) if len(codes) <= 5 else f"{len(codes)} markets"
        print(
            f"recording {','.join(kinds)} of {shown} into {redact_url(db)} "
            "(Ctrl-C or SIGTERM stops)",
            flush=True,
        )

    with _stopping_on_signals(stop):
        async with contextlib.AsyncExitStack() as stack:
            spine = await stack.enter_async_context(Spine(upstream, db=db, redis=redis))
            lease = None
            if redis is not None:
                from .._live.recorder_lease import RecorderLease, recorder_name

                lease = await stack.enter_async_context(RecorderLease(redis, recorder_name(db)))
            return await record(
                spine,
                markets,
                quote=quote,
                kinds=kinds,
                orderbook_every_ms=orderbook_every_ms,
                orderbook_depth=orderbook_depth,
                backfill_ms=backfill_ms,
                keep_ms=keep_ms,
                stop=stop,
                on_start=started,
                lease=lease,
            )


@contextmanager
def _stopping_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the recording commits what it holds and ends)."""
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # no signals here (Windows, a thread)
            continue
        handled.append(sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    if stop.is_set():
        print("marketspine: stopped; everything received was committed", file=sys.stderr)
