"""What a ``Spine`` holds while it is open, and its one-way life: made, opened once with
``async with``, closed for good by ``aclose()``.

Opening enters, in order, the task group every background task runs in, the store (SQLite
at a path, or the one given), the backends ``resolve_backends`` made, and the client, all
on one ``AsyncExitStack`` that closes them in reverse. Until then and from ``aclose()`` on,
asking for any of them raises ``ClosedError``, which is how every data method of the Spine
refuses to run outside ``async with``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from .._client.client import Client
from .._store.default_path import default_db_path
from .._store.sqlite import CandleStore, SQLiteStore
from ..errors import ClosedError
from .backends import enter_owned

__all__ = ["Lifetime"]

_NOT_OPEN = "this Spine is not open: use it as `async with Spine(...) as spine`"


class Lifetime:
    """The resources of one Spine on ``upstream``: ``db`` (a path, None for the default
    path, or a store), ``owned`` (further things to enter if ``resolve_backends`` made
    them) and ``new_client`` (called once, on opening)."""

    def __init__(
        self,
        upstream: str,
        db: str | Path | CandleStore | None,
        owned: object,
        new_client: Callable[[], Client],
    ) -> None:
        self._upstream = upstream
        self._db = db
        self._owned = owned
        self._new_client = new_client
        self._tasks: asyncio.TaskGroup | None = None
        self._started: dict[str, asyncio.Task[None]] = {}
        self._stack: AsyncExitStack | None = None
        self._client: Client | None = None
        self._store: CandleStore | None = None
        self.closed = False  # aclose() was called: done for good

    async def open(self, prepare: Callable[[Path | None, Client], Awaitable[None]]) -> None:
        """Enter everything, then ``prepare(the SQLite path or None, the client)``; on any
        failure close what was entered and raise. Raises ClosedError once closed."""
        if self.closed:
            raise ClosedError("this Spine is closed and cannot be reopened: make a new Spine")
        stack = AsyncExitStack()
        try:
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            path = None
            if self._db is None or isinstance(self._db, str | Path):
                path = Path(self._db) if self._db is not None else default_db_path(self._upstream)
                path = path.expanduser()
                path.parent.mkdir(parents=True, exist_ok=True)
                self._store = await stack.enter_async_context(SQLiteStore(path))
            else:
                self._store = self._db
            await enter_owned(stack, self._store, self._owned)
            self._client = await stack.enter_async_context(self._new_client())
            await prepare(path, self._client)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def aclose(self) -> None:
        """Cancel the background tasks, close what was entered (idempotent)."""
        self.closed = True
        for task in self._started.values():
            task.cancel()
        self._started.clear()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as the background task ``name`` in the task group, once."""
        if name in self._started:
            coro.close()
            return
        if self._tasks is None or self.closed:
            coro.close()
            raise ClosedError(_NOT_OPEN)
        self._started[name] = self._tasks.create_task(coro, name=f"marketspine {name}")

    def check_open(self) -> None:
        """Raises ClosedError unless open and not closed."""
        if self.closed:
            raise ClosedError("this Spine is closed (aclose() was called): make a new Spine")
        if self._stack is None:
            raise ClosedError(_NOT_OPEN)

    @property
    def stack(self) -> AsyncExitStack:
        """The stack closed on ``aclose()``, for things opened later (the live stream)."""
        self.check_open()
        assert self._stack is not None
        return self._stack

    @property
    def client(self) -> Client:
        self.check_open()
        assert self._client is not None
        return self._client

    @property
    def store(self) -> CandleStore:
        self.check_open()
        assert self._store is not None
        return self._store
