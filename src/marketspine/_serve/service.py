"""The ``serve`` service object: one ``Spine`` and what is built around it for every HTTP
client on the host — the fair request gate, on-demand live watching, backfill jobs, the
warmup schedule and the metrics. Route modules (``_serve.upbit_rest``, ``_serve.api``, the admin
page) take this object; ``_serve.create_service_app`` mounts them.

Background work runs in one task group owned by ``async with ServeService(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from prometheus_client.core import Metric
from starlette.requests import Request

from .._base.memory import DEFAULT_MEMORY_MB, CandleMemory, MemoryBudget
from .._base.urls import without_db_urls
from .._client.connections import Transports
from .._client.retry import RetryPolicy
from .._spine.recording import RecordPlan
from .._spine.spine import Spine
from .._store.sqlite import CandleStore, RunRecord
from .._upbit.limits import remaining_req
from .._upbit.rest_rows import CandleRows, ClosedAnswers
from ..records import Instrument
from .admin_auth import LoginThrottle
from .history import keep_run, warmup_run
from .jobs import DEFAULT_MAX_RUNNING, BackfillJobs
from .metrics import CallCount, ServeMetrics, counter, gauge, spine_figures
from .recording import ServeRecording
from .security import peer_of

__all__ = ["FairGate", "LiveDemand", "ServeService", "client_of"]

logger = logging.getLogger("marketspine.serve")

WARMUP_EVERY_S = 6 * 3600  # the design documents' schedule
_INSTRUMENTS_TTL_S = 60.0


def client_of(request: Request) -> tuple[str, str]:
    """Whose line a request waits in: its peer address (the proxy's client only when the
    proxy is trusted: ``--forwarded-allow-ips``), and within it the name the client gives
    itself (``X-Marketspine-Client``), else its User-Agent (bots on one host differ by it)."""
    address = peer_of(request)
    named = request.headers.get("x-marketspine-client")
    return address, named or request.headers.get("user-agent", "")


@dataclass(slots=True)
class _Line:
    """One client's line at the gate: its places inside, and the requests holding or
    waiting for one."""

    places: asyncio.Semaphore
    users: int = 0


class FairGate:
    """At most ``per_client`` requests of one client inside the Spine at a time; the rest
    of that client's requests wait in its own line. A client flooding requests then holds
    a bounded share of the shared upstream budget's queue, so another client's request is
    never stuck behind all of them.

    A client is a peer address and a name it gives; names cost nothing, so one address
    holds at most ``lines_per_address`` named lines at once, and a request naming yet
    another waits in that address's one overflow line. Rotating names therefore gets an
    address at most ``(lines_per_address + 1) * per_client`` requests inside, and the
    gate's own bookkeeping stays that small per address."""

    OVERFLOW = "\x00overflow"  # no header value can hold a NUL: never a client's own name

    def __init__(self, per_client: int = 8, lines_per_address: int = 16) -> None:
        self._per_client = per_client
        self._lines_per_address = lines_per_address
        self._lines: dict[str, dict[str, _Line]] = {}  # address -> name -> its line

    @contextlib.asynccontextmanager
    async def slot(
        self, client: tuple[str, str], *, wait_s: float | None = None
    ) -> AsyncIterator[None]:
        """A place inside for ``client`` (peer address, name) while the block runs; with
        ``wait_s``, TimeoutError when none was free within that long (the block's own
        run time is not bounded)."""
        address, name = client
        lines = self._lines.setdefault(address, {})
        if name not in lines and len(lines) >= self._lines_per_address + (self.OVERFLOW in lines):
            name = self.OVERFLOW
        line = lines.get(name)
        if line is None:
            line = lines[name] = _Line(asyncio.Semaphore(self._per_client))
        line.users += 1
        try:
            async with asyncio.timeout(wait_s):
                await line.places.acquire()
            try:
                yield
            finally:
                line.places.release()
        finally:
            line.users -= 1
            if not line.users:  # forget idle lines and addresses
                del lines[name]
                if not lines:
                    del self._lines[address]

    def has_place(self, client: tuple[str, str]) -> bool:
        """Whether a request of ``client`` would get its place inside at once (``slot``
        would not wait): an answer given without waiting then keeps the limit as one that
        took the place and gave it back would."""
        address, name = client
        lines = self._lines.get(address)
        if lines is None:
            return True
        if name not in lines and len(lines) >= self._lines_per_address + (self.OVERFLOW in lines):
            name = self.OVERFLOW
        line = lines.get(name)
        return line is None or not line.places.locked()

    def busy(self, address: str) -> bool:
        """Whether any request of ``address`` holds or waits for a place now."""
        return address in self._lines

    def waiting(self) -> int:
        return sum(line.users for lines in self._lines.values() for line in lines.values())

    def lines(self, address: str) -> int:
        """Lines an address holds now (the overflow line included)."""
        return len(self._lines.get(address, {}))


class LiveDemand:
    """Watches what clients ask for: a ticker, book, trade list or forming candle asked for
    is watched live from then on (one shared upstream WebSocket); a kind not asked for in
    ``idle_s`` is unwatched again."""

    def __init__(
        self,
        spine: Spine,
        spawn: Callable[[Any], Any],
        *,
        idle_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spine = spine
        self._spawn = spawn
        self._idle_s = idle_s
        self._clock = clock
        self._asked: dict[tuple[str, str], float] = {}
        self._live: set[tuple[str, str]] = set()
        self._starting: set[tuple[str, str]] = set()
        self.enabled = True
        # Whether another user (the WebSocket gateway) streams a pair: it is then kept.
        self.in_use: Callable[[str, str], bool] = lambda kind, market: False

    def want(self, kind: str, market: str) -> None:
        key = (kind, market)
        self._asked[key] = self._clock()
        if not self.enabled or key in self._live or key in self._starting:
            return
        self._starting.add(key)
        self._spawn(self._start(key))

    @property
    def idle_s(self) -> float:
        """How long a pair stays watched after it was last asked for."""
        return self._idle_s

    def is_live(self, kind: str, market: str) -> bool:
        return (kind, market) in self._live

    def watched(self) -> list[tuple[str, str]]:
        return sorted(self._live)

    async def _start(self, key: tuple[str, str]) -> None:
        kind, market = key
        try:
            await self._spine.watch([kind], [market])
        except Exception as exc:  # the answer came from REST anyway; try again when asked
            logger.warning("cannot watch %s %s live: %s", kind, market, exc)
        else:
            self._live.add(key)
        finally:
            self._starting.discard(key)

    async def reap(self) -> None:
        """Unwatch, every so often, what has not been asked for in ``idle_s``."""
        while True:
            await asyncio.sleep(max(self._idle_s / 4, 0.05))
            cutoff = self._clock() - self._idle_s
            idle = [
                key
                for key in self._live
                if self._asked.get(key, 0.0) < cutoff and not self.in_use(*key)
            ]
            for kind, market in idle:
                self._live.discard((kind, market))
                self._asked.pop((kind, market), None)
                try:
                    await self._spine.unwatch([kind], [market])
                except Exception as exc:
                    logger.warning("cannot unwatch %s %s: %s", kind, market, exc)


class ServeService:
    """Everything ``serve`` answers from. ``upstream``/``db``/``transport``/``ws_url`` go to
    the ``Spine``; ``admin_token`` guards the admin API and ``/api``, ``read_token`` (if
    any) opens ``/api``'s reads only; ``max_wait_s`` bounds how long a request may wait for
    its turn before it gets Upbit's 429; ``per_client`` and ``lines_per_address`` shape the
    fair gate (``FairGate``); ``max_jobs`` backfill jobs run at most at once;
    ``warmup_every_s`` is the warmup schedule (0: only at start; negative: never); ``retry``
    how upstream requests are retried (by default a 418 is never waited out); ``record``
    what to record into the Spine's store (``serve --record``)."""

    def __init__(
        self,
        upstream: str,
        db: str | Path | CandleStore | None = None,
        *,
        admin_token: str,
        read_token: str | None = None,
        transport: Transports = None,
        ws_url: str | None = None,
        max_wait_s: float = 8.0,
        per_client: int = 8,
        lines_per_address: int = 16,
        warmup_every_s: float = WARMUP_EVERY_S,
        idle_unwatch_s: float = 300.0,
        live_on_demand: bool = True,
        redis: str | None = None,
        redis_prefix: str | None = None,
        max_jobs: int = DEFAULT_MAX_RUNNING,
        retry: RetryPolicy | None = None,
        record: RecordPlan | None = None,
    ) -> None:
        self.metrics = ServeMetrics()
        # One memory budget over the Spine's candles and live state and serve's kept answers.
        self.memory = MemoryBudget.megabytes(DEFAULT_MEMORY_MB)
        self.spine = Spine(
            upstream,
            db,
            memory=CandleMemory(budget=self.memory),
            redis=redis,  # budget, pages and catalog shared with every process using it
            redis_prefix=redis_prefix,
            transport=self.metrics.transport(transport),
            ws_url=ws_url,
            warmup_every_s=0,  # the service schedules warmups itself, to report them
            # A 418 is never waited out while a client waits: it opens the circuit for the
            # block, and clients get what serve holds (marked stale) or a 503 at once;
            # backfill jobs wait it out themselves (``jobs``).
            retry=retry or RetryPolicy(max_ban_wait=0.0),
        )
        self.admin_token = admin_token
        self.read_token = read_token
        # Failed logins and wrong bearer tokens, by client address: one count for both.
        self.login_throttle = LoginThrottle()
        self.max_wait_s = max_wait_s
        self.gate = FairGate(per_client, lines_per_address)
        self.candle_rows = CandleRows()
        self.closed_answers = ClosedAnswers(budget=self.memory)
        self.demand = LiveDemand(self.spine, self.spawn, idle_s=idle_unwatch_s)
        self.demand.enabled = live_on_demand
        self.jobs = BackfillJobs(
            self.spine, self.spawn, on_end=self.keep_run_later, max_running=max_jobs
        )
        # ``serve --record``: kept into the Spine's store, under the recorder lease with redis.
        self.recording = (
            None
            if record is None
            else ServeRecording(
                self.spine, record, db=str(db), redis=redis, redis_prefix=redis_prefix
            )
        )
        self.gateway: Any = None  # the WebSocket gateway (``_serve_ws.WsGateway``) once mounted
        self.warmup_report: dict[str, Any] | None = None
        self.warmup_at: float | None = None  # wall time the last warmup finished
        self.started_at = time.time()
        self._warmup_every_s = warmup_every_s
        self._warmup_lock = asyncio.Lock()
        self._instruments: dict[str, tuple[Instrument, float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remaining: dict[str, tuple[str, float]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self.metrics.add_live(self._budget_figures)
        self.metrics.add_live(self._gateway_figures)
        self.metrics.add_live(lambda: spine_figures(self.spine))

    # -- life cycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.spine)
            self._group = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._cancel_tasks)
            self._stack = stack.pop_all()
        if self._warmup_every_s >= 0:
            self.spawn(self._warmup_schedule())
        self.spawn(self.demand.reap())
        if self.recording is not None:
            self.spawn(self.recording.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the gateway, stop jobs and background work, close the Spine."""
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await self.gateway.aclose()
        if self.recording is not None:  # what it holds is committed before the Spine closes
            await self.recording.stop()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._group = None

    def spawn(self, work: Any) -> asyncio.Task[Any]:
        """Run the coroutine ``work`` in the service's task group."""
        if self._group is None:
            work.close()
            raise RuntimeError("use ServeService as `async with ServeService(...)`")
        task = self._group.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- helpers for the routes -----------------------------------------------------------------

    def upstream_calls(self) -> contextlib.AbstractContextManager[CallCount]:
        """Counts the upstream requests made inside the block."""
        return self.metrics.calls()

    def remaining_req(self, group: str) -> str:
        """Upbit's ``Remaining-Req`` value (pyupbit parses it with a regex): what the shared
        budget still allows this second."""
        now = time.monotonic()
        held = self._remaining.get(group)
        if held is not None and now - held[1] < 0.02:  # read the budget at most 50 times/s
            return held[0]
        stats = self.spine.client.statistics().budget.groups.get(group)
        sec = 9 if stats is None else max(0, min(9, stats.tokens))
        header = remaining_req(group, sec)
        self._remaining[group] = (header, now)
        return header

    async def instruments(self, codes: Sequence[str]) -> list[Instrument]:
        """Instruments of ``codes``, each fetched at most once a minute."""
        now = time.monotonic()
        # What is held is taken now: a warmup may clear it while the fetch is on its way.
        held = {c: self._instruments.get(c) for c in codes}
        found = {c: h[0] for c, h in held.items() if h and now - h[1] <= _INSTRUMENTS_TTL_S}
        missing = [c for c in codes if c not in found]
        if missing:
            for item in await self.spine.client.instruments(missing):
                self._instruments[item.market] = (item, now)
                found[item.market] = item
        return [found[c] for c in codes if c in found]

    # -- warmup ----------------------------------------------------------------------------------

    async def warmup(self, max_age_s: float = 0.0, *, trigger: str = "manual") -> dict[str, Any]:
        """Run a warmup now (one at a time); returns and keeps the warmup dictionary. With
        Redis, one another process finished within ``max_age_s`` is taken instead.
        ``trigger`` (start, scheduled, manual) is what the run history records."""
        async with self._warmup_lock:
            started = time.perf_counter()
            started_ms = round(time.time() * 1000)
            try:
                report = await self.spine.warmup(max_age_s=max_age_s)
            except Exception as exc:
                report = {
                    "success": False,
                    "refreshed_exchanges": [],
                    "total_markets": 0,
                    "execution_time": round(time.perf_counter() - started, 3),
                    # Shown on /api/warmup: a failing database is said, not where it is.
                    "exchange_details": {"error": without_db_urls(str(exc))},
                }
            self.metrics.warmup_duration.set(time.perf_counter() - started)
            self.metrics.warmup_success.set(1 if report.get("success") else 0)
            self.metrics.warmups.labels("success" if report.get("success") else "failure").inc()
            if report.get("success"):
                self.metrics.warmup_last_success.set_to_current_time()
            self._instruments.clear()
            self.warmup_report = report
            self.warmup_at = time.time()
            took_ms = round((time.perf_counter() - started) * 1000)
            self.keep_run_later(warmup_run(report, trigger, started_ms, took_ms))
            return report

    def keep_run_later(self, run: RunRecord) -> None:
        """Write ``run`` to the run history in the background (never delaying the caller)."""
        try:
            self.spawn(keep_run(self.spine.store, run))
        except RuntimeError as exc:  # outside ``async with``: nothing runs in the background
            logger.warning("cannot keep the %s run in the history: %s", run.kind, exc)

    async def _warmup_schedule(self) -> None:
        trigger = "start"
        while True:
            await self.warmup(
                self._warmup_every_s if self._warmup_every_s > 0 else WARMUP_EVERY_S,
                trigger=trigger,
            )
            if self._warmup_every_s <= 0:
                return
            trigger = "scheduled"
            await asyncio.sleep(self._warmup_every_s)

    # -- figures read at scrape time ---------------------------------------------------------------

    def _budget_figures(self) -> Iterable[Metric]:
        groups = self.spine.client.statistics().budget.groups
        yield gauge(
            "marketspine_budget_remaining",
            "Requests the shared upstream budget still allows this second, by group.",
            {(name,): float(g.tokens) for name, g in groups.items()},
            ["group"],
        )
        yield gauge(
            "marketspine_live_watched",
            "Kinds of markets watched live on demand.",
            {(): float(len(self.demand.watched()))},
            [],
        )

    def _gateway_figures(self) -> Iterator[Metric]:
        stats = self.gateway.statistics() if self.gateway is not None else None
        for name, field, doc in (
            ("marketspine_websocket_clients", "clients", "Downstream WebSocket clients."),
            ("marketspine_websocket_subscriptions", "subscriptions", "Downstream subscriptions."),
            (
                "marketspine_websocket_upstream_pairs",
                "upstream_pairs",
                "(type, market) pairs fed from the shared upstream WebSocket.",
            ),
        ):
            value = float(getattr(stats, field, 0) or 0) if stats is not None else 0.0
            yield gauge(name, doc, {(): value}, [])
        for name, field, doc in (
            (
                "marketspine_websocket_dropped_clients",
                "dropped_clients",
                "Slow WebSocket clients closed.",
            ),
            (
                "marketspine_websocket_connections",
                "connections",
                "WebSocket connections accepted.",
            ),
            ("marketspine_websocket_frames_sent", "frames_sent", "WebSocket frames sent."),
            ("marketspine_websocket_refused_clients", "refused_clients", "Over --ws-max-per-ip."),
            ("marketspine_websocket_idle_closed", "idle_closed", "Closed: never subscribed."),
            (
                "marketspine_websocket_snapshot_joins",
                "snapshot_joins",
                "REST walks joining a fetched trade snapshot to the live stream.",
            ),
            (
                "marketspine_websocket_snapshot_join_trades",
                "snapshot_join_trades",
                "Trades those walks filled in between snapshot and stream.",
            ),
            (
                "marketspine_websocket_snapshot_joins_incomplete",
                "snapshot_joins_incomplete",
                "Trade snapshot joins that left trades out: the walk failed or took too long.",
            ),
        ):
            value = float(getattr(stats, field, 0) or 0) if stats is not None else 0.0
            yield counter(name, doc, value)
