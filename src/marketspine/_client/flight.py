"""In-flight request sharing: identical GETs made while one is in flight share its answer.

The caller that starts a request leads it; callers that join wait for its answer (or its
error) and may raise the priority it waits for the budget at, so a CRITICAL caller never
waits behind the LOW request it joined. A leader cancelled midway hands over to a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from typing import Any, TypeVar

from .._budget.rules import Priority, RateBudget

__all__ = ["Flight", "Flights", "acquire_at_flight_priority", "fetch_concurrently"]


T = TypeVar("T")
R = TypeVar("R")


class _LeaderGone(Exception):
    """The caller fetching a shared request was cancelled; a waiting caller takes over."""


class Flight:
    """A request in flight, shared by identical callers: its answer, and the priority it
    waits for the budget at — raised when a more urgent caller joins."""

    def __init__(self, priority: Priority) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.priority = priority
        self.raised = asyncio.Event()

    def join(self, priority: Priority) -> None:
        if priority > self.priority:
            self.priority = priority
            self.raised.set()


class Flights:
    """The requests in flight, by key; ``coalesced`` counts the calls that joined one."""

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, Flight] = {}
        self.coalesced = 0

    async def share(
        self, key: Hashable, priority: Priority, fetch: Callable[[Flight], Awaitable[bytes]]
    ) -> bytes:
        """The answer of the request ``key``: joined when one is in flight, else fetched by
        ``fetch`` (given the new flight) and shared with whoever joins meanwhile."""
        while (shared := self._in_flight.get(key)) is not None:
            self.coalesced += 1
            shared.join(priority)
            try:
                # shield: a waiting caller's cancellation must not cancel the shared request.
                return await asyncio.shield(shared.answer)
            except _LeaderGone:
                continue
        flight = self._in_flight[key] = Flight(priority)
        future = flight.answer
        try:
            body = await fetch(flight)
        except asyncio.CancelledError:
            future.set_exception(_LeaderGone())
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(body)
            return body
        finally:
            del self._in_flight[key]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" noise without followers


async def acquire_at_flight_priority(budget: RateBudget, group: str, flight: Flight) -> None:
    """Wait for ``budget`` at the flight's priority; when a more urgent caller joins
    meanwhile, leave the queue and wait again at the raised priority."""
    while True:
        flight.raised.clear()
        if flight.priority == Priority.CRITICAL:  # nothing can raise it further
            await budget.acquire(group, flight.priority)
            return
        acquiring = asyncio.ensure_future(budget.acquire(group, flight.priority))
        raised = asyncio.ensure_future(flight.raised.wait())
        try:
            await asyncio.wait((acquiring, raised), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            acquiring.cancel()
            raise
        finally:
            raised.cancel()
        if acquiring.done():
            acquiring.result()
            return
        acquiring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # we were cancelled meanwhile, not just raised
        if not acquiring.cancelled():
            acquiring.result()  # granted before the cancel landed: use that slot
            return


async def fetch_concurrently(
    parts: Sequence[T], fetch: Callable[[T], Coroutine[Any, Any, list[R]]]
) -> list[R]:
    """``fetch`` of every part at once (one task each), the records in the parts' order.
    The first failure is raised alone, as from a single request, and cancels the rest."""
    if len(parts) <= 1:
        return await fetch(parts[0]) if parts else []
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(fetch(part)) for part in parts]
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return [record for task in tasks for record in task.result()]
