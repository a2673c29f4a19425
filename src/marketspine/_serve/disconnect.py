"""Work done for one HTTP request stops when its client leaves.

Starlette runs an endpoint to its end even after the client has hung up, so a long answer
(``/api/candles`` over many upstream pages) would go on fetching, at the shared budget's
expense, for nobody. ``unless_client_leaves`` races the work against the ASGI
``http.disconnect`` message and cancels the work when that comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

__all__ = ["ClientLeft", "unless_client_leaves"]

T = TypeVar("T")


class ClientLeft(Exception):
    """The client disconnected before its answer was ready; the work was cancelled."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """The result of ``work``, or ClientLeft once ``receive`` (the request's, whose body
    has been read or is empty) reports the client gone; ``work`` is then cancelled and
    awaited, so nothing of it runs on. ``work``'s own errors are raised as they are."""
    job = asyncio.ensure_future(work)
    left = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({job, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (job, left):
            task.cancel()  # a no-op for a finished one
        await asyncio.wait({job, left})
        if not left.cancelled():
            left.exception()  # retrieved: a failing receive must not be logged as lost
    if job.cancelled():
        raise ClientLeft("the client disconnected before its answer was ready")
    return job.result()
