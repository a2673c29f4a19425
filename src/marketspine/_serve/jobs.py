"""Backfill jobs of ``serve``'s ``/api/backfill``: the backtester's path. A job collects the
closed candles of some markets over a range at LOW priority in the background, so it never
blocks a request, reports progress per market, and can be cancelled; what it stored stays.

Jobs share one LOW-priority budget, so more of them at once fetch nothing faster, but each
holds pages and progress in memory: at most ``max_running`` run at a time, and a start
beyond that is refused (``JobLimitError``, a 429) until one ends or is cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._base.args import markets_arg, time_arg, timeframe_arg
from .._base.time import format_utc
from .._base.timeframes import Timeframe
from .._base.urls import without_db_urls
from .._budget.rules import Priority
from .._store.backfill import ProgressEvent, collect
from .._store.sqlite import RunRecord
from ..errors import (
    BannedError,
    CircuitOpenError,
    InvalidRequestError,
    RetryLaterError,
    UnknownMarketError,
)

log = logging.getLogger("marketspine.serve")

if TYPE_CHECKING:
    from .._spine.spine import Spine

__all__ = ["DEFAULT_MAX_RUNNING", "BackfillJob", "BackfillJobs", "JobLimitError"]

State = Literal["running", "done", "failed", "cancelled"]
_KEEP_FINISHED = 100
DEFAULT_MAX_RUNNING = 4
# A job pauses over a ban or an open circuit this many times at most, each pause at most
# this long (Upbit's bans grow to ten minutes).
_RESUMES = 20
_MAX_PAUSE_S = 600.0


class JobLimitError(RetryLaterError):
    """As many backfill jobs as allowed are running: start another once one has ended."""


@dataclass
class BackfillJob:
    id: str
    markets: list[str]
    timeframe: Timeframe
    since_ms: int
    until_ms: int
    state: State = "running"
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    progress: dict[str, ProgressEvent] = field(default_factory=dict)
    task: asyncio.Task[Any] | None = None
    cancel_requested: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    reported: bool = False  # its end was handed to ``on_end`` (the run history)

    def as_dict(self) -> dict[str, Any]:
        markets = {}
        for market in self.markets:
            event = self.progress.get(market)
            markets[market] = {
                "pages": event.pages if event else 0,
                "candles_written": event.candles_written if event else 0,
                "done_ms": event.done_ms if event else 0,
                "total_ms": event.total_ms if event else 0,
                "finished": bool(event and event.finished),
            }
        done = sum(m["done_ms"] for m in markets.values())
        total = sum(m["total_ms"] for m in markets.values())
        finished = self.state == "done"
        return {
            "id": self.id,
            "state": self.state,
            "markets": self.markets,
            "timeframe": self.timeframe.name,
            "since": format_utc(self.since_ms) + "Z",
            "until": format_utc(self.until_ms) + "Z",
            "progress": 1.0 if finished else (round(done / total, 4) if total else 0.0),
            "per_market": markets,
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
        }

    def as_run(self) -> RunRecord:
        """The history entry of a backfill job that has ended (done, failed or cancelled)."""
        finished = self.finished if self.finished is not None else self.created
        results = []
        for market in self.markets:
            event = self.progress.get(market)
            done = bool(event and event.finished)
            results.append(
                {
                    "market": market,
                    "ok": done,
                    "candles": event.candles_written if event else 0,
                    "error": None if done or self.state == "done" else self.error or self.state,
                }
            )
        return RunRecord(
            "backfill",
            "job",
            round(self.created * 1000),
            max(0, round((finished - self.created) * 1000)),
            self.state == "done",
            len(self.markets),
            tuple(results),
            self.error or (None if self.state == "done" else self.state),
            f"{self.id} {self.timeframe.name}",
        )


class BackfillJobs:
    """Running and recently finished jobs; ``spawn`` runs work in the service's task group;
    ``on_end`` hears of each job once, as it ends (done, failed or cancelled)."""

    def __init__(
        self,
        spine: Spine,
        spawn: Callable[[Any], asyncio.Task[Any]],
        *,
        on_end: Callable[[RunRecord], None] | None = None,
        max_running: int = DEFAULT_MAX_RUNNING,
    ) -> None:
        self._spine = spine
        self.max_running = max_running
        self._spawn = spawn
        self._on_end = on_end
        self._jobs: dict[str, BackfillJob] = {}
        self._ids = itertools.count(1)

    async def start(
        self, markets: object, timeframe: object, since: object, until: object
    ) -> BackfillJob:
        """Start a job. The arguments come from a JSON body, so they are checked as the
        Spine's are (a code or a list of codes; a timeframe name; an ISO 8601 time or epoch
        milliseconds, never seconds). Raises InvalidRequestError naming the bad argument,
        UnknownMarketError for a code neither listed upstream nor held in the store (before
        any job exists, so a typo is answered at once rather than as a job that fails later),
        JobLimitError when ``max_running`` jobs are running already."""
        self._check_room()
        codes = markets_arg(markets)
        tf = timeframe_arg(timeframe)
        since_ms = time_arg(since, "since")
        if since_ms is None:
            raise InvalidRequestError("since is required, e.g. 2026-01-01 (ISO 8601, UTC)")
        now = self._spine.client.upstream_now_ms()
        until_ms = time_arg(until, "until") or now
        if since_ms >= until_ms:
            raise InvalidRequestError(
                f"since ({format_utc(since_ms)}Z) must be before until ({format_utc(until_ms)}Z)"
            )
        known = {m.market for m in await self._spine.markets(include_delisted=True)}
        for code in codes:
            if code not in known:
                raise UnknownMarketError(
                    code,
                    f"unknown market {code!r}: not listed upstream and nothing of it is stored "
                    "(GET /v1/market/all lists the codes)",
                )
        self._check_room()  # again: another start may have taken the room meanwhile
        job = BackfillJob(f"job-{next(self._ids)}", codes, tf, since_ms, until_ms)
        self._jobs[job.id] = job
        job.task = self._spawn(self._run(job))
        self._forget_old()
        return job

    def running(self) -> int:
        return sum(job.state == "running" for job in self._jobs.values())

    def _check_room(self) -> None:
        if self.running() >= self.max_running:
            raise JobLimitError(
                f"{self.max_running} backfill jobs are running, as many as serve runs at "
                "once: start this one when one has ended, or cancel one "
                "(DELETE /api/backfill/{id})"
            )

    def get(self, job_id: str) -> BackfillJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[BackfillJob]:
        return list(self._jobs.values())

    def cancel(self, job_id: str) -> BackfillJob | None:
        job = self._jobs.get(job_id)
        if job is not None and job.state == "running":
            job.cancel_requested = True
            job.state = "cancelled"
            job.finished = time.time()
            job.done.set()
            if job.task is not None:  # a task cancelled before it ran never runs
                job.task.cancel()
            self._ended(job)
        return job

    def _ended(self, job: BackfillJob) -> None:
        if job.reported or self._on_end is None:
            return
        job.reported = True
        self._on_end(job.as_run())

    async def _run(self, job: BackfillJob) -> None:
        def progress(event: ProgressEvent) -> None:
            job.progress[event.market] = event

        try:
            await self._collect_waiting_out_blocks(job, progress)
        except asyncio.CancelledError:
            if job.cancel_requested:  # the user's cancel: the job ends here
                return
            job.state = "cancelled"  # shutdown: let it through
            job.finished = time.time()
            job.done.set()
            self._ended(job)
            raise
        except Exception as exc:
            job.state = "failed"
            job.error = without_db_urls(str(exc))  # shown to /api clients
            log.error(
                "backfill job %s (%s %s) failed: %s",
                job.id, ",".join(job.markets), job.timeframe.name, exc,
                extra={"event": "backfill_failed", "key": job.id},
            )  # fmt: skip
        else:
            job.state = "done"
        if job.cancel_requested:  # cancelled as it finished: the user's word stands
            job.state = "cancelled"
        job.finished = job.finished or time.time()
        job.done.set()
        self._ended(job)

    async def _collect_waiting_out_blocks(
        self, job: BackfillJob, progress: Callable[[ProgressEvent], None]
    ) -> None:
        """``collect`` the job; a 418 block or an open circuit (serve fails fast on both, so
        its clients are answered at once) is waited out, and the job goes on where it
        stopped (every page is stored as it comes), at most ``_RESUMES`` times."""
        for resume in itertools.count():
            try:
                now = await self._spine.client.synced_now_ms(job.markets[0], priority=Priority.LOW)
                await collect(
                    _Source(self._spine),
                    self._spine.store,
                    job.markets,
                    job.timeframe,
                    since_ms=job.since_ms,
                    until_ms=min(job.until_ms, now),
                    now_ms=now,
                    priority=Priority.LOW,
                    progress=progress,
                )
            except (BannedError, CircuitOpenError) as exc:
                if resume >= _RESUMES:
                    raise
                wait = min(_MAX_PAUSE_S, max(1.0, exc.retry_after or 0.0))
                log.info(
                    "backfill job %s pauses %.0f s: %s", job.id, wait, exc,
                    extra={"event": "backfill_paused", "key": job.id},
                )  # fmt: skip
                await asyncio.sleep(wait)
            else:
                return

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for job in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._jobs[job.id]


class _Source:
    """The collector's view of the Spine: its client for pages, its cached market list."""

    def __init__(self, spine: Spine) -> None:
        self._spine = spine

    async def candles(
        self,
        market: str,
        timeframe: Timeframe | str,
        *,
        count: int = 200,
        to_ms: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Any]:
        return await self._spine.client.candles(
            market, timeframe, count=count, to_ms=to_ms, priority=priority
        )

    async def markets(self) -> list[Any]:
        return await self._spine.markets()
