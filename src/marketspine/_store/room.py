"""Writing through a full disk. A recorder holds what it has not written and tries again
until there is room, rather than stop and lose it: the store logs the disk full once (an
alert with ``--notify``) and once more when a write goes through again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import StoreFullError

__all__ = ["FULL_RETRY_S", "write_when_room"]

FULL_RETRY_S = 5.0  # between tries while the disk is full: a refused write costs little

T = TypeVar("T")


async def write_when_room(
    write: Callable[[], Awaitable[T]],
    *,
    give_up: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``write()``, tried again every ``FULL_RETRY_S`` while it raises StoreFullError;
    the StoreFullError is raised once ``give_up()`` says so (a recorder that is stopping).
    Any other error is raised at once."""
    while True:
        try:
            return await write()
        except StoreFullError:
            if give_up():
                raise
        await sleep(FULL_RETRY_S)
