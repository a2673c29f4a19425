"""``RedisRateBudget``: one rate budget per (egress scope, group) for every process sharing
a Redis, with a local fallback while Redis is unreachable.

Inside a process, waiters of a group queue locally in ``rules.WaitOrder``'s order (most urgent
first, FIFO within a priority, rising a level per ``age_step`` waited — as in
``LocalRateBudget``) and only the head asks Redis, so N waiting callers cost one script run per
slot, not N. Across processes the script in ``redis_lua`` decides (window cap, pacing, priority
tickets, penalties — see there); the levels it compares are the aged ones computed here.

Upstream counts requests when they *arrive*, so, as in ``LocalRateBudget``, each send counts
at the latest time it may have arrived. Booked, it is in flight: Redis scores it at its grant
plus the in-flight margin (the spread of the round trips this process observes,
``observe(..., sent_at=...)``; the script applies the widest any process asked with lately).
Answered, it is moved in Redis to its grant plus its own lateness, its round trip (timed from
the ask, so a grant read late counts as sent late) beyond the fastest
(``JitterMargin.beyond_least``): a send that came back on time no longer holds the window's
end out by the widest margin, and one held up cannot put 11 in a second.

``observe`` and ``penalize`` are synchronous in the ``RateBudget`` protocol: they take effect
locally at once and are sent to Redis before this process's next acquisition (a 418 is
followed by a retry, so the block reaches the others before this process sends again).

Each process keeps a heartbeat in Redis (every ``heartbeat_every_s`` and at each ask,
lapsing after ``heartbeat_ttl_s``; see ``redis_lua``), and so knows how many processes share
the ceiling. When Redis cannot be reached, acquisitions fall back to a ``LocalRateBudget`` at
this process's share of each group's ceiling for the number last seen (``rules.share_of``:
10/s among 5 is 2/s each, never fewer than two), since every other process does the same; a
process that never saw Redis counts itself and one more, and one that another has not counted
yet (that one's latest count taken in is from before it joined) sends nothing until Redis is
back, since that one shares the ceiling without it (``rules.ProcessCount``).

The fallback starts a window and the widest margin (``MAX_MARGIN``) after Redis was lost: the
requests Redis granted before may fill upstream's current window, and once they have arrived
and a window has passed none of them counts any more. Redis is tried again every
``retry_every_s`` (and at each heartbeat, so an idle process notices too). On recovery the
sends made meanwhile are booked in Redis (those made while the recovery itself talks to Redis
too) and the rest of the window is counted as used; an acquisition that was still waiting for
its blind slot goes through Redis as well. For two windows more (plus ``retry_every_s`` and a
heartbeat) the local share still applies too, so neither this process's blind sends nor those
of processes not yet back push a window over the ceiling; and the number of the outage stays
the floor of the count until the others have registered again.

Redis lost is logged once at WARNING (``event`` ``redis_lost``, for the notifier), Redis back
once at INFO (``redis_back``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .._base.cancel import raise_if_cancelled
from ..errors import InvalidRequestError
from .local import (
    DEFAULT_LIMIT,
    DEFAULT_MARGIN,
    GROUPS,
    MAX_MARGIN,
    JitterMargin,
    LocalRateBudget,
)
from .redis_lua import PROCESS_TTL_S, AcquireReply, BudgetKeys, BudgetScripts
from .redis_unusable import UNREACHABLE
from .rules import (
    DEFAULT_AGE_STEP,
    NEVER_SEEN_PROCESSES,
    BudgetStatistics,
    GroupCounters,
    Priority,
    ProcessCount,
    WaitOrder,
    check_fallback_share,
    check_group,
    check_priority,
    check_settings,
    share_of,
)

__all__ = ["RedisRateBudget", "connect_redis"]

log = logging.getLogger("marketspine")

_POLL_CAP_S = 0.25  # longest sleep between two asks (renews the priority ticket, ttl 2 s)
# A send counted this much (µs) after the score it was booked with is logged: the others
# took it as arrived that much earlier until its answer came (20 ms: the margin's floor).
_LATE_TOLD_US = 20_000


def connect_redis(url: str) -> Redis:
    """A Redis client for ``url`` (``redis://host:port/db``) that fails fast: short
    timeouts and one immediate reconnect, so a dead server means fallback, not a stall.

    Raises InvalidRequestError for a URL that is not a Redis URL.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidRequestError(
            f"--redis {url!r} is not a Redis URL: expected redis://HOST:PORT[/DB] "
            "(or rediss:// or unix://)"
        )
    try:
        return Redis.from_url(
            url,
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 1),
        )
    except ValueError as exc:
        raise InvalidRequestError(f"--redis {url!r}: {exc}") from exc


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    since: float  # local clock when it started to wait
    seq: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    granted: bool = False
    asked: int = 0  # script runs made while it was the head
    throttled: bool = False  # counted as throttled already


@dataclass(slots=True)
class _Booked:
    """A send this process booked in Redis, to move to its own lateness once answered."""

    at: float  # local clock when it was asked for, no later than Redis granted it
    member: str
    granted_us: int  # Redis's clock at the grant
    booked_us: int  # its score as booked (in flight): the grant plus the in-flight margin
    answered: float | None = None  # local clock when its reply was seen
    moved_us: int | None = None  # the score it was last moved to; None: not yet


@dataclass
class _Group:
    keys: BudgetKeys
    limit: int
    jitter: JitterMargin  # this process's margin, widened to the round trips it sees
    late: float = 0.0  # the in-flight margin Redis applied at the last ask (maybe another's)
    waiters: list[_Waiter] = field(default_factory=list)  # arrival order; WaitOrder picks
    asking: bool = False  # one waiter talks to Redis; the others wait on it
    tokens: int = 0
    counts: GroupCounters = field(default_factory=GroupCounters)
    blocked_until: float = float("-inf")  # local clock
    # Said locally, not yet sent to Redis: penalty seconds with the local time they were said,
    # and Remaining-Req observations as (remaining, sent_at, observed_at).
    pending_penalties: list[tuple[float, float]] = field(default_factory=list)
    pending_observations: list[tuple[int, float | None, float]] = field(default_factory=list)
    blind_sends: deque[float] = field(default_factory=deque)  # local times, while on fallback
    booked: deque[_Booked] = field(default_factory=deque)  # recent grants, oldest first
    # member -> (new score, score as booked), us: answered sends to count at their lateness
    pending_moves: dict[str, tuple[int, int]] = field(default_factory=dict)
    pushing: asyncio.Task[None] | None = None  # sends pending_moves now, for every process
    late_sends: int = 0  # sends counted well after their booked score (``_tell_if_late``)
    late_told_at: float = float("-inf")  # local clock of the last such line


# Whether the others have counted a process is judged in one group's set of processes, the
# same for every process: each registers in every group, but two processes starting together
# may register in the groups in interleaved order, each then joining some group after the
# other's last count there. In one group, "every other process counted it after it joined"
# means every other process's count there includes it, and so every sender's does.
COUNTING_GROUP = GROUPS[0]


class RedisRateBudget:
    """A ``RateBudget`` shared through Redis by every process with the same ``scope``.

    ``redis`` is a URL or a client (a client passed in stays the caller's to close).
    Keys live under ``prefix`` (``marketspine:budget:{scope:group}:...``). Use as
    ``async with RedisRateBudget(url) as budget`` or call ``aclose()``.
    ``clock``/``sleep`` are injectable; Redis decides the window on its own clock (and
    lapses heartbeats on it, so the heartbeat runs on real time).
    ``fallback_share`` (a fraction of the ceiling) replaces the share by the number of
    processes seen; None (the default) divides by that number.
    ``expect_urgent``: this process may send requests above LOW at any moment (Spine,
    serve): every process's LOW keeps the reserve for it while its heartbeat lasts (and a
    minute after), not only once such a request was seen; its heartbeat starts on entering
    (``async with``), so the reserve is kept before its first request.
    """

    def __init__(
        self,
        redis: str | Redis,
        *,
        scope: str = "default",
        prefix: str = "marketspine:",
        limit: int = DEFAULT_LIMIT,
        limits: Mapping[str, int] | None = None,
        window: float = 1.0,
        margin: float = DEFAULT_MARGIN,
        fallback_share: float | None = None,
        retry_every_s: float = 0.25,
        heartbeat_every_s: float = 1.0,
        heartbeat_ttl_s: float = PROCESS_TTL_S,
        ticket_ttl_s: float = 2.0,
        age_step: float = DEFAULT_AGE_STEP,
        expect_urgent: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        check_settings(limit=limit, limits=limits, window=window, margin=margin, age_step=age_step)
        self._expect_urgent = expect_urgent
        if fallback_share is not None:
            check_fallback_share(fallback_share)
        if not 0 < heartbeat_every_s < heartbeat_ttl_s:
            raise InvalidRequestError(
                "heartbeat_every_s must be > 0 s and below heartbeat_ttl_s "
                f"(got {heartbeat_every_s!r} and {heartbeat_ttl_s!r})"
            )
        self._owns_client = isinstance(redis, str)
        self._redis = connect_redis(redis) if isinstance(redis, str) else redis
        self._scripts = BudgetScripts(self._redis)
        self._scope = scope
        self._prefix = prefix
        self._limit = limit
        self._limits = dict(limits or {})
        self._window = window
        self._margin = margin
        self._span = window + margin  # the least span: blind starts and recovery count it
        self._ticket = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._ticket_ttl = ticket_ttl_s
        self._retry_every = retry_every_s
        self._clock = clock
        self._sleep = sleep
        self._order = WaitOrder(age_step)
        self._fixed_share = fallback_share
        self._processes = ProcessCount()
        self._counts: dict[str, int] = {}  # processes seen, by group (the most is the count)
        # Whether the others counted this process is told in this group (``COUNTING_GROUP``).
        self._counting = BudgetKeys.of(prefix, scope, COUNTING_GROUP).processes
        # Redis's time of the latest count taken in, by group (told back with each ask).
        self._applied: dict[str, int] = {}
        self._holds_back = False  # lost Redis before all the others counted this process
        self._heartbeat_every = heartbeat_every_s
        self._heartbeat_ttl = heartbeat_ttl_s
        self._heartbeat: asyncio.Task[None] | None = None
        # The fallback's limits are set to this process's share when Redis is lost.
        share_limits = {
            name: self._share(self._limits.get(name, limit), NEVER_SEEN_PROCESSES)
            for name in {*GROUPS, *self._limits}
        }
        self._fallback = LocalRateBudget(
            limit=self._share(limit, NEVER_SEEN_PROCESSES),
            limits=share_limits,
            window=window,
            margin=margin,
            age_step=age_step,
            expect_urgent=expect_urgent,
            clock=clock,
            sleep=sleep,
        )
        self._groups: dict[str, _Group] = {}
        self._arrivals = itertools.count()
        self._down_since: float | None = None
        self._last_try = float("-inf")
        self._recovering = False  # a _try_recover is talking to Redis
        self._grace_until = float("-inf")
        self._fallbacks = 0
        self._closed = False

    async def __aenter__(self) -> RedisRateBudget:
        if self._expect_urgent:
            # Counted, and the reserve kept for this process, before its first request.
            self._keep_heartbeat()
            await self._beat()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Send what is still pending (best effort) and close a client this budget opened."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._down_since is None:
            try:
                for state in list(self._groups.values()):
                    await self._flush(state)
                if self._processes.seen is not None:  # leave: the others' share grows now
                    for keys in self._every_group_keys():
                        await self._scripts.leave(keys, self._ticket)
            except UNREACHABLE:
                pass
        for state in self._groups.values():
            if state.pushing is not None:
                state.pushing.cancel()
        if self._owns_client:
            await self._redis.aclose()

    @property
    def shared(self) -> bool:
        """False while Redis is unreachable and the local fallback decides."""
        return self._down_since is None

    @property
    def processes(self) -> int:
        """How many processes this one counts as sharing the budget: the heartbeats seen in
        Redis, or while Redis is lost the number it divides the ceiling by."""
        return self._processes.assumed(self._clock())

    @property
    def counted_by_all(self) -> bool:
        """Whether every other process sharing the budget had counted this one since it
        joined, as of this one's last ask or heartbeat. While Redis is lost, a process that
        was not sends nothing (``rules.ProcessCount``)."""
        return self._processes.seen is not None and not self._processes.unseen

    def _share(self, limit: int, processes: int) -> int:
        if self._fixed_share is not None:
            return max(1, math.floor(limit * self._fixed_share))
        return share_of(limit, processes)

    def _group(self, name: str) -> _Group:
        state = self._groups.get(name)
        if state is None:
            check_group(name)
            keys = BudgetKeys.of(self._prefix, self._scope, name)
            state = _Group(keys, self._limits.get(name, self._limit), JitterMargin(self._margin))
            state.tokens = state.limit
            self._groups[name] = state
        return state

    # -- acquisition ---------------------------------------------------------------------

    async def acquire(self, group: str, priority: Priority = Priority.NORMAL) -> None:
        """Return when one request of ``group`` may be sent by this process; counted now
        in Redis (or, while Redis is unreachable, in the local fallback at a safe share)."""
        priority = check_priority(priority)
        state = self._group(group)
        self._keep_heartbeat()
        while True:
            if self.shared and self._processes.seen is None:
                await self._beat()  # counted among the processes before the first send
            if not self.shared and not await self._try_recover():
                if self._holds_back:  # the others share the ceiling without this process
                    await self._sleep(self._retry_every)
                    continue
                await self._fallback.acquire(group, priority)
                if self.shared:
                    # Redis came back while this one waited for its blind slot: the blind
                    # sends are booked already, so this one must be booked in Redis too.
                    try:
                        await self._acquire_shared(state, priority)
                        return
                    except UNREACHABLE as exc:
                        # Lost again: the slot given before does not know what Redis granted
                        # the others meanwhile. Wait for blind sends to start afresh.
                        self._go_blind(exc)
                        continue
                state.blind_sends.append(self._clock())
                state.counts.sent += 1
                return
            try:
                if (now := self._clock()) < self._grace_until:
                    # Just back: others may still be blind, sending their share unbooked.
                    if self._holds_back:  # ... the whole ceiling among them
                        await self._sleep(self._grace_until - now)
                        continue
                    await self._fallback.acquire(group, priority)
                await self._acquire_shared(state, priority)
                return
            except UNREACHABLE as exc:
                self._go_blind(exc)

    async def _acquire_shared(self, state: _Group, priority: Priority) -> None:
        waiter = _Waiter(priority, self._clock(), next(self._arrivals))
        waiting = self._order.top_level(state.waiters, waiter.since)
        if not self._order.goes_ahead(priority, waiting):  # it cannot go at once
            waiter.throttled = True
            state.counts.throttled += 1
        state.waiters.append(waiter)
        try:
            while not waiter.granted:
                if state.asking and not self._goes_ahead(state, waiter):
                    await waiter.wake.wait()
                    waiter.wake.clear()
                    continue
                # Nobody asks, or the asker sleeps for a slot of waiters less urgent than
                # this one: ask now (Redis decides atomically; the head is granted first).
                alone = not state.asking
                state.asking = True
                try:
                    await self._ask(state)
                finally:
                    if alone:
                        state.asking = False
                        if state.waiters:
                            state.waiters[0].wake.set()  # someone asks next, for the head
                raise_if_cancelled()
        except BaseException:
            if not waiter.granted:
                state.waiters.remove(waiter)
                if state.waiters and not state.asking:
                    state.waiters[0].wake.set()
            raise

    def _goes_ahead(self, state: _Group, waiter: _Waiter) -> bool:
        """Whether ``waiter`` is more urgent than every other waiter of the group now (and
        may burst), so it need not wait for the asker's sleep (``WaitOrder.goes_ahead``)."""
        now = self._clock()
        others = self._order.top_level((w for w in state.waiters if w is not waiter), now)
        return others is not None and self._order.goes_ahead(waiter.priority, others)

    async def _ask(self, state: _Group) -> None:
        """One round for the head waiter (``WaitOrder``'s first): grant it, or sleep until
        Redis says to ask again. Redis compares levels across processes: this process asks
        at its head's aged level and leaves a ticket at the level of the next."""
        await self._flush(state)
        now = self._clock()
        head = self._order.first(state.waiters, now)
        assert head is not None  # the asker itself waits
        if state.blocked_until > now:  # a penalty said here: no need to ask
            self._throttled(state)
            await self._sleep(min(state.blocked_until - now, _POLL_CAP_S))
            return
        others = [w for w in state.waiters if w is not head]
        level = self._order.level(head.priority, now - head.since)
        behind = self._order.top_level(others, now)
        asked_at = self._clock()
        reply = await self._scripts.acquire(
            state.keys,
            limit=state.limit,
            span_s=self._span,
            late_s=state.jitter.in_flight,
            priority=level,
            next_priority=behind,
            ticket=self._ticket,
            ticket_ttl_s=self._ticket_ttl,
            burst=self._order.goes_ahead(head.priority, behind),
            urgent=self._expect_urgent or any(w.priority > Priority.LOW for w in state.waiters),
            urgent_send=head.priority > Priority.LOW,
            order=self._order,
            process_ttl_s=self._heartbeat_ttl,
            applied_us=self._applied.get(state.keys.processes),
        )
        self._saw_processes(state.keys, reply.processes, reply.unseen, reply.redis_now_us)
        state.tokens = reply.tokens
        state.late = reply.late_s
        head.asked += 1
        if reply.granted:
            self._remember(state, reply, asked_at)
            # The first now: maybe one that came (or rose a level) while Redis answered.
            best = self._order.first(state.waiters, self._clock())
            assert best is not None
            state.waiters.remove(best)
            best.granted = True
            best.wake.set()
            state.counts.sent += 1
            self._throttled(state)
            return
        self._throttled(state)
        await self._sleep(min(reply.wait_s, _POLL_CAP_S))

    @staticmethod
    def _throttled(state: _Group) -> None:
        """Every acquire still waiting after a round could not go at once: each is counted
        once, as ``LocalRateBudget`` counts one that queues."""
        for waiter in state.waiters:
            if not waiter.throttled:
                waiter.throttled = True
                state.counts.throttled += 1

    def _remember(self, state: _Group, reply: AcquireReply, asked_at: float) -> None:
        # Its lateness runs from the ask, the earliest Redis can have granted it: a process
        # that reads the grant late (its loop busy, or not scheduled) sends that much later
        # than Redis counted it, and a reply's round trip from then does not show that.
        now = self._clock()
        state.booked.append(_Booked(asked_at, reply.member, reply.redis_now_us, reply.score_us))
        # Redis keeps sends 5 s or 3 spans; a later move would find nothing to move.
        horizon = now - max(5.0, 3 * self._span)
        while state.booked and state.booked[0].at <= horizon:
            state.booked.popleft()

    @staticmethod
    def _count_answered(state: _Group, sent_at: float, now: float) -> _Booked | None:
        """Pair the reply with its send (as ``LocalRateBudget`` does) and queue moving every
        answered send to the latest time it may have arrived: its grant plus its round trip
        (from its ask) beyond the fastest. The first move may go either way (off the
        in-flight margin it was booked with); later ones only later, since each new round
        trip may lower the fastest one known, and so make earlier sends later."""
        paired = None
        for booked in reversed(state.booked):
            if booked.answered is None and booked.at <= sent_at:
                booked.answered = now
                paired = booked
                break
        for booked in state.booked:
            if booked.answered is None:
                continue
            late = state.jitter.beyond_least(booked.answered - booked.at)
            score_us = booked.granted_us + round(late * 1_000_000)
            if booked.moved_us is None or score_us > booked.moved_us:
                booked.moved_us = score_us
                if score_us != booked.booked_us or booked.member in state.pending_moves:
                    state.pending_moves[booked.member] = (score_us, booked.booked_us)
        return paired

    def _push_moves_soon(self, state: _Group) -> None:
        """The other processes decide on Redis's window too: send the moves now rather than
        at this process's next ask (``observe`` is synchronous, so in a task)."""
        if state.pushing is not None or not state.pending_moves or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next ask sends them
            return
        state.pushing = loop.create_task(self._push_moves(state))

    async def _push_moves(self, state: _Group) -> None:
        try:
            while state.pending_moves and self.shared:
                moves, state.pending_moves = state.pending_moves, {}
                try:
                    await self._scripts.move(state.keys, moves)
                except (redis_errors.RedisError, OSError):
                    # Kept for the next ask, which sends them or reports what is wrong.
                    state.pending_moves = {**moves, **state.pending_moves}  # newer ones win
                    return
        finally:
            state.pushing = None

    async def _flush(self, state: _Group) -> None:
        """Send the penalties, moves and observations said since the last ask. Flushes may
        overlap (ask, recovery, aclose): an item leaves its list before it is sent. Moves
        already on their way (``_push_moves``) land first, so an ask counts every reply
        seen before it (waited for, not awaited: a cancelled ask leaves them going)."""
        if state.pushing is not None:
            await asyncio.wait({state.pushing})
        while state.pending_penalties:
            seconds, said_at = penalty = state.pending_penalties.pop(0)
            try:
                if (left := seconds - (self._clock() - said_at)) > 0:
                    await self._scripts.penalize(state.keys, left)
            except BaseException:
                state.pending_penalties.insert(0, penalty)  # not sent: first again
                raise
        if state.pending_moves:
            moves, state.pending_moves = state.pending_moves, {}
            try:
                await self._scripts.move(state.keys, moves)
            except BaseException:
                state.pending_moves = {**moves, **state.pending_moves}
                raise
        while state.pending_observations:
            remaining, sent_at, observed_at = seen = state.pending_observations.pop(0)
            age = self._clock() - (sent_at if sent_at is not None else observed_at)
            try:
                state.counts.external += await self._scripts.observe(
                    state.keys, limit=state.limit, span_s=self._span, remaining=remaining, age_s=age
                )
            except BaseException:
                state.pending_observations.insert(0, seen)
                raise

    # -- heartbeat -----------------------------------------------------------------------

    def _keep_heartbeat(self) -> None:
        """Start the heartbeat at the first acquisition (it needs the running loop)."""
        if self._heartbeat is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._heartbeat = loop.create_task(self._heartbeats(), name="budget heartbeat")

    async def _heartbeats(self) -> None:
        """Until closed: renew this process's heartbeat, or while Redis is lost try to reach
        it again (so an idle process notices both too). Real time: Redis lapses the
        heartbeats on its own clock."""
        while not self._closed:
            await asyncio.sleep(self._heartbeat_every)
            try:
                if self.shared:
                    await self._beat()
                else:
                    await self._try_recover()
            except Exception as exc:  # not unreachable (handled inside): say it, beat again;
                # a heartbeat that ended would shrink every other process's count of this one
                log.warning("rate budget heartbeat failed: %s", exc)

    def _every_group_keys(self) -> list[BudgetKeys]:
        """Every group this process may send in: it counts in each from its first send."""
        names = sorted({*GROUPS, *self._limits, *self._groups})
        return [BudgetKeys.of(self._prefix, self._scope, name) for name in names]

    def _saw_processes(self, keys: BudgetKeys, count: int, unseen: int, redis_now_us: int) -> None:
        """Take in the count of the processes Redis gave at ``redis_now_us`` (one given
        earlier, read late, is older than the one taken in: left alone)."""
        if redis_now_us < self._applied.get(keys.processes, -1):
            return
        self._applied[keys.processes] = redis_now_us
        self._counts[keys.processes] = count
        if keys.processes != self._counting:
            unseen = self._processes.unseen  # told in the counting group only
        self._processes.saw(max(self._counts.values()), unseen)

    async def _renew(self) -> None:
        """Renew this process's heartbeat in every group and take the count."""
        for keys in self._every_group_keys():
            count, unseen, now_us = await self._scripts.heartbeat(
                keys,
                self._ticket,
                self._heartbeat_ttl,
                urgent=self._expect_urgent,
                applied_us=self._applied.get(keys.processes),
            )
            self._saw_processes(keys, count, unseen, now_us)

    async def _beat(self) -> None:
        try:
            await self._renew()
        except UNREACHABLE as exc:
            self._go_blind(exc)

    # -- fallback and recovery -----------------------------------------------------------

    def _go_blind(self, exc: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = self._last_try = self._clock()
        self._fallbacks += 1
        processes = self._processes.lost(self._down_since)
        # An operator's fixed share was sized for the whole fleet: it is kept as it is.
        self._holds_back = processes == 0 and self._fixed_share is None
        processes = self._processes.assumed(self._down_since)
        for name in {*GROUPS, *self._groups, *self._limits}:
            self._fallback.set_limit(
                name, self._share(self._limits.get(name, self._limit), processes)
            )
            # Redis may have granted a full window just before: upstream counts those until
            # they have all arrived and a window has passed. Start blind after it, with the
            # widest margin a budget allows (another process's requests may have been
            # held up longer than this one's margin tells).
            self._fallback.penalize(name, self._window + MAX_MARGIN)
        share = 0 if self._holds_back else self._share(self._limit, processes)
        why = (
            "sends nothing until it is back: it joined after another process last counted "
            "those sharing the budget, and that one shares the ceiling without it"
            if self._holds_back
            else "falls back to this process's share"
        )
        log.warning(
            "Redis unreachable (%s); the rate budget %s, %d of %d requests per window (%s)",
            exc,
            why,
            share,
            self._limit,
            _sharing(processes, self._processes.seen),
            extra={
                "event": "redis_lost",
                "key": "budget",
                "processes": processes,
                "share": share,
            },
        )

    async def _try_recover(self) -> bool:
        """Every ``retry_every_s`` while blind: reach Redis again and book the sends made
        meanwhile. True when the shared budget is back."""
        now = self._clock()
        if self._recovering or now - self._last_try < self._retry_every:
            return False  # one at a time: a second would book the blind sends twice
        self._last_try = now
        self._recovering = True
        try:
            for state in list(self._groups.values()):  # a group may be added meanwhile
                # The others may still be blind for a moment, sending their share unbooked:
                # count the window full for one span (its remaining slots as sent now).
                await self._book_blind(state, fill=True)
                await self._flush(state)
            # A restarted Redis forgot the others: count them anew.
            self._counts.clear()
            self._applied.clear()
            await self._renew()
        except UNREACHABLE:
            return False
        finally:
            self._recovering = False
        now = self._clock()
        lost_for = now - (self._down_since if self._down_since is not None else now)
        self._down_since = None
        # Until every other process has noticed too (each retries every retry_every_s, after
        # at most a window's wait in its fallback, or at its next heartbeat when idle), keep
        # to the local share as well.
        self._grace_until = now + 2 * self._span + self._retry_every + self._heartbeat_every
        # A restarted Redis is empty: the others register again as each comes back.
        self._processes.back(now, self._heartbeat_ttl + self._grace_until - now)
        log.info(
            "Redis reachable again after %.1f s; the rate budget is shared again",
            lost_for,
            extra={"event": "redis_back", "key": "budget", "lost_s": round(lost_for, 1)},
        )
        # Acquisitions that got their blind slot while the booking above was on its way went
        # blind too (shared only from here on): book them now, or none of the others sees
        # them. Unreachable again, they stay listed for the next recovery.
        try:
            for state in list(self._groups.values()):
                if state.blind_sends:
                    await self._book_blind(state, fill=False)
        except UNREACHABLE as exc:
            self._go_blind(exc)
            return False
        return True

    async def _book_blind(self, state: _Group, *, fill: bool) -> None:
        """Book in Redis the sends made blind within the last three spans (older ones no
        window counts any more), each at its age. They leave the list before the booking is
        sent, so a send made blind meanwhile stays listed for the next booking, and come back
        to it when the booking fails. With ``fill``, the rest of the window too, as sent
        now."""
        horizon = self._clock() - 3 * self._span
        sends = [t for t in state.blind_sends if t > horizon]
        state.blind_sends.clear()
        now = self._clock()
        ages = [now - t for t in sends]
        if fill:
            recent = sum(1 for age in ages if age < self._span)
            ages += [0.0] * max(0, state.limit - recent)
        if not ages:
            return
        try:
            await self._scripts.book(state.keys, ages)
        except BaseException:
            state.blind_sends.extendleft(reversed(sends))  # not booked: first again
            raise

    # -- feedback ------------------------------------------------------------------------

    def observe(
        self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
    ) -> None:
        """Reconcile with upstream's ``Remaining-Req`` ``sec`` (sent to Redis before the
        next acquisition; the local fallback learns it at once). ``sent_at`` also counts the
        answered send at its own lateness and learns the round-trip jitter that the sends
        still in flight are booked with, as ``LocalRateBudget`` does."""
        state = self._group(group)
        if sent_at is not None:
            state.jitter.saw(self._clock() - sent_at)
            paired = self._count_answered(state, sent_at, self._clock())
            if paired is not None:
                self._tell_if_late(group, state, paired)
            self._push_moves_soon(state)
        if remaining_sec is not None:
            state.pending_observations.append((remaining_sec, sent_at, self._clock()))
            del state.pending_observations[:-8]  # only the latest few matter
        self._fallback.observe(group, remaining_sec, sent_at=sent_at)

    def _tell_if_late(self, group: str, state: _Group, booked: _Booked) -> None:
        """Log (INFO, one line a second at most; no ``event``: nothing to alert on) a send
        counted well after the score it was booked with: until its answer, the other
        processes counted it as arrived earlier than it may have. Such a process runs late
        (CPU-starved, its loop busy); the line says when, for the rare 429 that may follow."""
        assert booked.moved_us is not None and booked.answered is not None
        over_us = booked.moved_us - booked.booked_us
        if over_us <= _LATE_TOLD_US:
            return
        state.late_sends += 1
        now = self._clock()
        if now - state.late_told_at < 1.0:
            return
        state.late_told_at = now
        log.info(
            "one %s send was counted %.0f ms later than booked: it reached upstream up to "
            "%.0f ms after its grant (answered %.3f s after the ask); %d such send(s) here so far",
            group, over_us / 1000, (booked.moved_us - booked.granted_us) / 1000,
            booked.answered - booked.at, state.late_sends,
        )  # fmt: skip

    def penalize(self, group: str, seconds: float) -> None:
        """Stop ``group`` for ``seconds`` here at once, and for every process sharing the
        Redis before this one sends again."""
        state = self._group(group)
        now = self._clock()
        state.blocked_until = max(state.blocked_until, now + seconds)
        state.pending_penalties.append((seconds, now))
        state.counts.penalties += 1
        self._fallback.penalize(group, seconds)

    def statistics(self) -> BudgetStatistics:
        """This process's view: its sends and waits, the window's tokens at its last ask.
        While Redis is unreachable, the local fallback's tokens and penalty, and its waiters
        counted with those still waiting on Redis."""
        now = self._clock()
        for name in GROUPS:
            self._group(name)
        blind = {} if self.shared else self._fallback.statistics().groups
        groups = {}
        for name, state in self._groups.items():
            stats = state.counts.snapshot(
                tokens=state.tokens,
                waiting=(waiter.priority for waiter in state.waiters),
                blocked_for=state.blocked_until - now,
                margin=self._margin + state.late,
            )
            if (local := blind.get(name)) is not None:
                stats = replace(
                    stats,
                    tokens=local.tokens,
                    waiting={p: n + local.waiting.get(p, 0) for p, n in stats.waiting.items()},
                    blocked_for=max(stats.blocked_for, local.blocked_for),
                )
            groups[name] = stats
        return BudgetStatistics(groups)


def _sharing(processes: int, counted: int | None) -> str:
    """Whom the ceiling is shared by while Redis is lost, saying when that is an assumption
    (an operator alone on the budget would otherwise read "2 processes" as a miscount)."""
    if counted is None:
        return f"{processes} processes assumed: Redis was never reached to count them"
    if counted < processes:
        return f"{processes} processes assumed, {counted} last counted"
    return f"{processes} process" if processes == 1 else f"{processes} processes"
