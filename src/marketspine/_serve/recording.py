"""``serve --record``: the recorder of ``marketspine record`` run inside serve, on serve's own
Spine (its live feed, rate budget and store), so one process serves and keeps the markets
named. With ``--redis`` it takes turns under the same recorder lease as ``record --redis``
into the same database: of every serve and record process on that Redis and database, one
writes at a time.

A recording that fails (the store refused a write, upstream unreachable at start) is logged
as an error and tried again after a pause; serving goes on meanwhile. A pair it streams stays
watched when serve's own clients (REST on demand, the WebSocket gateway) let it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from pathlib import Path

from .._live.recorder_lease import RecorderLease, recorder_name
from .._spine.recording import RecordPlan, RecordSummary, record
from .._spine.spine import Spine
from ..errors import MarketspineError

__all__ = ["ServeRecording"]

logger = logging.getLogger("marketspine.serve")

RETRY_AFTER_S = 5.0  # pause before a failed recording starts again


class ServeRecording:
    """Records ``plan`` into ``spine``'s store until ``stop``; with ``redis`` under the
    recorder lease of ``db`` (keys under ``redis_prefix``)."""

    def __init__(
        self,
        spine: Spine,
        plan: RecordPlan,
        *,
        db: str | Path,
        redis: str | None = None,
        redis_prefix: str | None = None,
    ) -> None:
        self._spine = spine
        self._plan = plan
        self._db = db
        self._redis = redis
        self._redis_prefix = redis_prefix or "marketspine:"
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self.summaries: list[RecordSummary] = []
        self.recording = False  # this process writes now
        self._markets: set[str] = set()  # what it records (once it started)

    def streams(self, kind: str, market: str) -> bool:
        """Whether the recording streams ``kind`` of ``market`` now (so the rest of serve
        leaves it watched when its own clients let it go)."""
        return self.recording and kind in self._plan.kinds and market in self._markets

    async def run(self) -> None:
        """Record until ``stop``, starting again after a failure."""
        try:
            while not self._stop.is_set():
                try:
                    await self._record()
                except MarketspineError as exc:
                    logger.error(
                        "serve --record: the recording stopped (%s); starting again in %.0f s",
                        exc, RETRY_AFTER_S,
                        extra={"event": "record_failed"},
                    )  # fmt: skip
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RETRY_AFTER_S):
                            await self._stop.wait()
                finally:
                    self.recording = False
        finally:
            self._done.set()

    async def stop(self, within_s: float = 10.0) -> None:
        """Commit what is held and end ``run`` (waited for at most ``within_s``)."""
        self._stop.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self._done.wait()

    async def _record(self) -> None:
        plan = self._plan
        async with AsyncExitStack() as stack:
            lease = None
            if self._redis is not None:
                lease = await stack.enter_async_context(
                    RecorderLease(self._redis, recorder_name(self._db), prefix=self._redis_prefix)
                )

            def started(codes: list[str]) -> None:
                self.recording = True
                self._markets = set(codes)
                logger.info("serve --record: recording %s of %d market(s)",
                            ",".join(plan.kinds), len(codes))  # fmt: skip

            summary = await record(
                self._spine,
                plan.markets,
                quote=plan.quote,
                kinds=plan.kinds,
                orderbook_every_ms=plan.orderbook_every_ms,
                stop=self._stop,
                on_start=started,
                lease=lease,
            )
        self.summaries.append(summary)
