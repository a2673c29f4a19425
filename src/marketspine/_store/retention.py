"""Retention of a recording (``marketspine record --keep``): how long each kind is kept, and
the pruning that deletes what is older, beside the writers.

``--keep`` is one duration for every kind (``90d``) or ``KIND=DURATION`` pairs, comma
separated (``trade=90d,orderbook=7d,ticker=7d``); a kind not named is kept for ever, and
``0`` (or ``KIND=0``) keeps for ever too. Kinds take ``record --kinds``'s names.

Pruning never holds a writer up for long: it deletes at most ``batch`` rows per transaction
(one short transaction each; SQLite's writer runs the recorder's batches between them, a
PostgreSQL store takes them turn about on its connection) and yields between batches. The
known gaps of a market whose trades are pruned go once they end before the kept span.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .._base.durations import parse_duration
from ..errors import InvalidRequestError, StoreFullError
from .recording import RecordedKind, RecordingStore

__all__ = ["KEEP_KINDS", "PRUNE_BATCH", "PruneReport", "keep_pruning", "parse_keep", "prune"]

log = logging.getLogger("marketspine.record")

# ``record --kinds`` names → the tables that hold them.
KEEP_KINDS: dict[str, RecordedKind] = {
    "trade": "trades",
    "orderbook": "orderbooks",
    "ticker": "tickers",
}
PRUNE_BATCH = 5_000  # rows per transaction: a few ms of a writer's wait
PRUNE_EVERY_S = 60.0  # a pass a minute: a kept span is hours or days


@dataclass
class PruneReport:
    """What one pass deleted: rows per table, known gaps, transactions."""

    rows: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    batches: int = 0


def parse_keep(text: str, name: str = "--keep") -> dict[RecordedKind, int]:
    """``--keep`` (see the module docstring) as milliseconds kept per table; a table absent
    is kept for ever.

    Raises InvalidRequestError naming ``name`` for a bad duration, an unknown or repeated
    kind, or a mix of a bare duration and pairs."""
    value = text.strip()
    if not value:
        raise InvalidRequestError(f"{name} must be a duration such as 90d, or KIND=DURATION pairs")
    if "=" not in value:
        span = parse_duration(value, name)
        return {} if span == 0 else {table: span for table in KEEP_KINDS.values()}
    kept: dict[RecordedKind, int] = {}
    for part in value.split(","):
        kind, sep, duration = (p.strip() for p in part.partition("="))
        table = KEEP_KINDS.get(kind.lower())
        if not sep or table is None:
            raise InvalidRequestError(
                f"{name} takes one duration (90d) or KIND=DURATION pairs, comma separated, "
                f"KIND one of {', '.join(KEEP_KINDS)}; got {part.strip()!r} in {text!r}"
            )
        if table in kept:
            raise InvalidRequestError(f"{name} names {kind} twice in {text!r}")
        span = parse_duration(duration, f"{name} {kind}")
        kept[table] = span
    return {table: span for table, span in kept.items() if span > 0}


async def prune(
    recording: RecordingStore,
    keep_ms: Mapping[RecordedKind, int],
    markets: Sequence[str],
    now_ms: int,
    *,
    batch: int = PRUNE_BATCH,
    between: Callable[[], Awaitable[None]] = lambda: asyncio.sleep(0),
) -> PruneReport:
    """Delete the rows of ``markets`` older than ``now_ms`` minus their table's kept span,
    ``batch`` rows per transaction, awaiting ``between`` after each (the writers' turn);
    with the trades, the known gaps that end before the span."""
    report = PruneReport()
    for table, span in keep_ms.items():
        before = now_ms - span
        for market in markets:
            while True:
                gone = await recording.prune(table, market, before, batch)
                if gone == 0:
                    break
                report.rows[table] = report.rows.get(table, 0) + gone
                report.batches += 1
                await between()
            if table == "trades":
                report.gaps += await recording.prune_gaps(market, before)
    return report


async def keep_pruning(
    recording: RecordingStore,
    keep_ms: Mapping[RecordedKind, int],
    markets: Sequence[str],
    now_ms: Callable[[], int],
    *,
    every_s: float = PRUNE_EVERY_S,
    batch: int = PRUNE_BATCH,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """``prune`` every ``every_s`` until cancelled (the first pass at once)."""
    while True:
        try:
            report = await prune(recording, keep_ms, markets, now_ms(), batch=batch)
        except StoreFullError:  # logged by the store; the next pass tries again
            report = PruneReport()
        if report.batches or report.gaps:
            log.info(
                "record: pruned %s and %d known gap(s) older than the kept span",
                ", ".join(f"{n:,} {t}" for t, n in report.rows.items()) or "no rows",
                report.gaps,
            )
        await sleep(every_s)
