"""Writing through a full disk. A recorder holds what it has not written and tries again
until there is room, rather than stop and lose it: the store logs the disk full once (an
alert with ``--notify``) and once more when a write goes through again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import StoreFullError

__all__ = ["FULL_RETRY_S", "FullDisk", "write_when_room"]

log = logging.getLogger("marketspine.store")

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


class FullDisk:
    """A store's lack of room, said once when writes start being refused and once when one
    goes through again (``database_full`` / ``database_writable``; alerts with
    ``--notify``), not once per refused write. ``shown`` names the database."""

    def __init__(self, shown: str) -> None:
        self._shown = shown
        self._since: float | None = None  # writes refused for lack of room since then

    def refused(self, error: StoreFullError) -> None:
        """A write was refused with ``error``."""
        if self._since is None:
            self._since = time.monotonic()
            log.warning(
                "%s; writes are refused until there is room",
                error,
                extra={"event": "database_full", "key": self._shown},
            )

    def written(self) -> None:
        """A write went through."""
        if self._since is not None:
            full_for = time.monotonic() - self._since
            self._since = None
            log.info(
                "candle database %s written again after %.1f s without room",
                self._shown,
                full_for,
                extra={"event": "database_writable", "key": self._shown},
            )
