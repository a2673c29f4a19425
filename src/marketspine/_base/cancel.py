"""A cancellation redis-py swallowed, raised again."""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled"]


def raise_if_cancelled() -> None:
    """Raise the CancelledError redis-py (8.1, on Python 3.11) swallows when a cancel lands
    just as a command's write finishes: it writes inside ``asyncio.wait_for``, which then
    returns the finished write. The task is still being cancelled (``Task.cancelling``), so
    a loop of Redis commands calls this after each one, or it goes on for ever: a budget
    waiter asking behind a full window, a lease renewed by a holder that was stopped."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
