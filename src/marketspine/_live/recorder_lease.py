"""``RecorderLease``: which of several recorders on one Redis writes into one database.

A lease of its own, not the live feed's: the process holding the upstream WebSocket (any
``serve --redis`` or ``Spine(redis=...)``) need not be a recorder, and a recorder writes
from whichever process holds the feed, through the Redis log. It is the same one-key lease
(``_live.lease.LiveLease``) under the keys ``{prefix}record:{NAME}:``, NAME derived from the
database, so recorders of different databases never wait on each other. Its generation,
bumped by every taking, fences the writes (``_store.recording.WriterFence``): the database
refuses a write of a generation older than one that wrote, so a holder that lost the lease
writes nothing more even if it has not noticed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

from redis import exceptions as redis_errors

from .._base.urls import redact_url
from .._budget.redis import connect_redis
from .._store.recording import WriterFence
from ..errors import ClosedError
from .lease import LiveLease

__all__ = ["RecorderLease", "recorder_name"]

log = logging.getLogger("marketspine.record")

_REDIS_ERRORS = (redis_errors.RedisError, OSError)


def recorder_name(db: str | Path) -> str:
    """The lease name of recordings into ``db``: a URL without its password, or a file's
    absolute path (``rec.db`` and ``./rec.db`` are one database)."""
    text = str(db)
    shown = redact_url(text) if "://" in text else str(Path(text).expanduser().resolve())
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


class RecorderLease:
    """The recorder lease ``name`` in the Redis at ``redis_url`` (keys under ``prefix``):
    held for ``lease_s`` past its last renewal, renewed and sought every ``poll_s``."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        *,
        prefix: str = "marketspine:",
        lease_s: float = 3.0,
        poll_s: float = 0.5,
    ) -> None:
        self.name = name
        self._redis_url = redis_url
        self._prefix = f"{prefix}record:{{{name}}}:"
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._stack = AsyncExitStack()
        self._lease: LiveLease | None = None
        self.token = ""
        self.takeovers = 0

    async def __aenter__(self) -> RecorderLease:
        redis = connect_redis(self._redis_url)
        self._stack.push_async_callback(redis.aclose)
        self._lease = LiveLease(redis, self._prefix, ttl_s=self._lease_s)
        self.token = self._lease.token
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lease is not None:  # a clean stop: the next recorder need not wait the TTL
            with contextlib.suppress(*_REDIS_ERRORS):
                await self._lease.release()
        await self._stack.aclose()

    async def acquire(self, stop: asyncio.Event) -> WriterFence | None:
        """Wait until this process holds the lease (its fence returned) or ``stop`` is set
        (None). An unreachable Redis is waited out: nobody can take the lease then."""
        lease = self._checked()
        said = unreachable = False
        while not stop.is_set():
            try:
                claim = await lease.claim()
            except _REDIS_ERRORS as exc:
                if not unreachable:  # once, not every poll
                    log.warning("recorder lease: Redis unreachable (%s); standing by", exc)
                unreachable = True
            else:
                unreachable = False
                if claim.held:
                    self.takeovers += 1
                    return WriterFence(self.name, claim.generation)
                if not said:
                    log.info("recorder lease held by %s: standing by", claim.holder)
                    said = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await stop.wait()
        return None

    async def keep(self, fence: WriterFence) -> str:
        """Renew the lease of ``fence`` every ``poll_s`` until it is lost; return why. With
        Redis unreachable for longer than the lease lasts, another process may hold it by
        now: lost too (the fence refuses this one's writes once the other wrote anyway)."""
        lease = self._checked()
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                claim = await lease.claim()
            except _REDIS_ERRORS as exc:
                if time.monotonic() - renewed > self._lease_s:
                    return f"Redis unreachable for longer than the lease lasts ({exc})"
                continue
            if not claim.held or claim.generation != fence.generation:
                return f"the lease passed to {claim.holder} (generation {claim.generation})"
            renewed = time.monotonic()

    def _checked(self) -> LiveLease:
        if self._lease is None:
            raise ClosedError("RecorderLease used outside async with")
        return self._lease
