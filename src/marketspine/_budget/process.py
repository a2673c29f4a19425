"""One budget per upstream for everything in the process that brings none of its own.

Upbit limits an IP, not a client object: two ``Spine``s in one program (a notebook's cells,
one per strategy) each with a budget of their own sent twice the ceiling between them, and
met 429s and 418 bans (three Spines reading history at once: 28 × 429 and a ban). Every
``Client`` and ``Spine`` made without a budget shares this one for its upstream's origin.

A budget is asyncio state, used by one event loop at a time: there is one per thread, which
is where a loop runs (loops run one after another in a thread share it, as they share the
IP's window). ``ProcessBudget`` finds the calling thread's at each call, so a Spine made in
one thread and run in another uses the budget of the thread it runs in. Budgets on injected
time (tests' fake clocks) stay their callers' own.
"""

from __future__ import annotations

import threading

import httpx

from .local import LocalRateBudget
from .rules import BudgetStatistics, Priority

__all__ = ["ProcessBudget", "forget_process_budgets", "process_budget"]

_BUDGETS: dict[tuple[int, str], LocalRateBudget] = {}
_LOCK = threading.Lock()  # threads make their own budgets, but share the dict


def process_budget(upstream: str, *, expect_urgent: bool = False) -> LocalRateBudget:
    """The budget this thread's clients of ``upstream`` (its scheme, host and port) share.
    ``expect_urgent``: a caller that may send urgent requests at any moment (a Spine) is
    among them, so its LOW work keeps the reserve from the start (``LocalRateBudget``)."""
    return _thread_budget(_origin(upstream), expect_urgent)


def forget_process_budgets() -> None:
    """Drop every shared budget: the next client starts a new one (tests, one per test)."""
    with _LOCK:
        _BUDGETS.clear()


class ProcessBudget:
    """The ``RateBudget`` of a Client or Spine made without one: at each call, the calling
    thread's ``process_budget(upstream)``."""

    def __init__(self, upstream: str, *, expect_urgent: bool = False) -> None:
        self._origin = _origin(upstream)  # parsed once: the lookup runs at every send
        self._expect_urgent = expect_urgent

    def _budget(self) -> LocalRateBudget:
        return _thread_budget(self._origin, self._expect_urgent)

    async def acquire(self, group: str, priority: Priority = Priority.NORMAL) -> None:
        await self._budget().acquire(group, priority)

    def observe(
        self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
    ) -> None:
        self._budget().observe(group, remaining_sec, sent_at=sent_at)

    def penalize(self, group: str, seconds: float) -> None:
        self._budget().penalize(group, seconds)

    def statistics(self) -> BudgetStatistics:
        return self._budget().statistics()


def _thread_budget(origin: str, expect_urgent: bool) -> LocalRateBudget:
    key = (threading.get_ident(), origin)
    with _LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = LocalRateBudget(expect_urgent=expect_urgent)
    if expect_urgent:
        budget.expect_urgent()
    return budget


def _origin(upstream: str) -> str:
    url = httpx.URL(upstream)
    return f"{url.scheme}://{url.host}:{url.port or ''}"
