"""Mutual exclusion per key over ranges: holders of overlapping ranges of one key take turns
in arrival order, holders of disjoint ranges never wait for each other.

A candle series is fetched under it: two requests missing the same pages take turns (the
second then finds them stored and fetches nothing), while a request missing the newest
page of a series is not held behind a months-long backfill of the same series further
back. Like ``KeyedLock``, the table holds only the keys in use, so its size is bounded by
the requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["RangeLock"]


@dataclass(eq=False, slots=True)
class _Turn:
    lo: int
    hi: int
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def _clear(turns: list[_Turn], turn: _Turn) -> bool:
    """Whether no turn that arrived before ``turn`` (held or waiting) overlaps it."""
    for other in turns:
        if other is turn:
            return True
        if other.lo < turn.hi and turn.lo < other.hi:
            return False
    return True


class RangeLock:
    """``async with locks.hold(key, lo, hi)`` waits while an earlier holder or waiter of
    ``key`` has a range overlapping ``[lo, hi)``. Not thread-safe: one event loop owns it."""

    def __init__(self) -> None:
        self._turns: dict[Hashable, list[_Turn]] = {}

    def __len__(self) -> int:
        """How many keys are held or waited for right now."""
        return len(self._turns)

    @asynccontextmanager
    async def hold(self, key: Hashable, lo: int, hi: int) -> AsyncIterator[None]:
        turns = self._turns.setdefault(key, [])
        turn = _Turn(lo, hi)
        turns.append(turn)
        try:
            while not _clear(turns, turn):
                turn.ready.clear()
                await turn.ready.wait()
            yield
        finally:
            # Also when cancelled while waiting: the turn leaves, the others look again.
            turns.remove(turn)
            if turns:
                for other in turns:
                    other.ready.set()
            else:
                del self._turns[key]
