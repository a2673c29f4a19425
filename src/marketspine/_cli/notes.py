"""What ``marketspine collect`` tells beyond the counts (pure): the part of the range Upbit
does not serve, and the markets it delisted, so that nothing reads as "no trades"."""

from __future__ import annotations

from typing import Any

from .._base.time import format_utc
from .._store.backfill import CollectSummary

__all__ = ["EXIT_NOTHING_COLLECTABLE", "collect_notes", "collect_notes_json"]

EXIT_NOTHING_COLLECTABLE = 3  # nothing of the request can be collected (unserved, delisted)


def _utc(ms: int) -> str:
    return format_utc(ms) + "Z"


def collect_notes(summary: CollectSummary) -> list[str]:
    """One line per thing the user must know about what was *not* collected, and why."""
    notes: list[str] = []
    if summary.unserved is not None:
        start, end = summary.unserved
        notes.append(
            f"[{_utc(start)}, {_utc(end)}) is beyond what Upbit serves: it keeps "
            f"{summary.timeframe} candles for about the last three months only. Nothing was "
            "asked for it, and it is not recorded as collected (unknown, not empty)."
        )
    for market in summary.delisted:
        notes.append(
            f"{market} is no longer listed upstream (delisted): nothing new to collect; "
            "the candles already stored are kept and still served from the store."
        )
    if not summary.collectable:
        notes.append("nothing could be collected")
    return notes


def collect_notes_json(summary: CollectSummary) -> dict[str, Any]:
    """The same facts for ``collect --json``."""
    unserved = None if summary.unserved is None else [_utc(t) for t in summary.unserved]
    return {
        "unserved": unserved,
        "delisted": list(summary.delisted),
        "collectable": summary.collectable,
    }
