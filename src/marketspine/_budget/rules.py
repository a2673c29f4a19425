"""What every rate budget shares, whatever keeps its window: the priorities, the ``RateBudget``
protocol, the checks of the settings, the statistics and their counters, the wait order, and
the share of the ceiling one of several processes keeps on its own (``share_of``,
``ProcessCount``: the Redis budget's fallback). Pure: no I/O, no clock of its own (times are
passed in).

The wait order (``WaitOrder``), for ``LocalRateBudget`` and ``RedisRateBudget`` alike:

* **Strict priority** — of the requests waiting for a group, the most urgent goes next
  (CRITICAL > HIGH > NORMAL > LOW); within one priority, the one that has waited longest
  (FIFO).
* **Aging** — a waiter's priority rises one level for every ``age_step`` seconds it has
  waited (10 s by default), up to CRITICAL: a LOW request is NORMAL after 10 s, HIGH after
  20 s and CRITICAL after 30 s, and then goes before any CRITICAL request that arrived after
  it. No priority starves, however endless the demand above it.
* **Pacing** — a request that finds nobody waiting and room in the window goes at once,
  except LOW, which is always paced one per token interval (``may_burst``); a request
  that went at once does not move that schedule (an urgent send costs a backfill its slot,
  not an interval more). A paced send that goes late counts from the slot it was due at
  when it is at most a quarter interval late (a wake-up's delay is not repeated in every
  later slot), else from itself (nothing bursts after an idle spell). ``LocalRateBudget``
  alone: while no urgent work may come (no request above LOW lately, none expected; see
  the reserve), a send up to a window late counts from its slot (``catches_up``), so the
  slots left unused within the last window go at once, as the window allows, and a send
  the window cap held does not push the schedule back. A backfill that waited a round trip
  for its first page (to learn the market's density) then does not lose that round trip's
  slots. Across processes the Redis budget does not: there LOW asks of one process taking
  freed slots back to back would go ahead of another process's first urgent request, whose
  ticket is not registered yet.
* **Urgent goes ahead** — a request more urgent than every waiter (by level) goes at once
  when the window has room, past the queue and its pacing (``goes_ahead``): a bot's
  CRITICAL request never waits for the next paced slot of a queued backfill. When the
  window is full, it waits for the first slot that frees, still unpaced, as long as it is
  the most urgent waiter.
* **The reserve** — while more urgent work may come, LOW keeps ``reserve`` slots of every
  window for it: a request competing at LOW does not go while the LOW (bulk) sends of the
  last window already hold ``limit - reserve`` slots, unless one of them leaves within
  ``reserve_wait`` (5 ms). Sends above LOW in the window spend the reserve rather than
  push LOW further back, so an urgent request behind a saturating backfill finds a slot
  within 5 ms whenever no other urgent request took one in the last window (the rest of
  "a round trip + 10 ms" is the client's own work and the event loop), and the backfill
  keeps ``(limit - reserve) / (window + margin - reserve_wait)`` — 8.87 requests/s of the
  9.8 the budget allows (90.5%) — beside urgent traffic too (``keeps_reserve``). That is
  the most a backfill can keep: any stretch of ``window + margin - wait`` must hold at most
  ``limit - reserve`` sends for an urgent request to find a slot within ``wait``.
  "May come" means: the process said it may send urgent work at any moment (Spine and
  serve do: ``expect_urgent``), or a request above LOW was seen in the group within
  ``reserve_hold`` (60 s). A backfill alone (``collect``) keeps the whole ceiling.

Why levels and not the local budget's former deadlines (enqueue time + a slack per priority):
the Redis budget orders processes by *level* — each waiting process registers a ticket at
the level of its most urgent waiter, and a request is refused while a higher ticket waits
(``redis_lua``). An aged level is a level like any other, so the same policy reaches across
processes exactly: the process computes its waiters' levels here and Lua only compares them,
with no second clock to agree on. Across processes, FIFO within a level is not kept (the first
process to ask for a free slot takes it); within a process it is. The default step keeps the
former guarantee that a LOW request is ahead of every newcomer once it has waited 30 s.

``WaitOrder`` is the one place for the rules on who goes next; the budgets apply them to
their own windows (``LocalRateBudget`` in memory, ``RedisRateBudget`` in its Lua script).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import InvalidRequestError

__all__ = [
    "DEFAULT_AGE_STEP",
    "DEFAULT_RESERVE",
    "DEFAULT_RESERVE_HOLD",
    "DEFAULT_RESERVE_WAIT",
    "NEVER_SEEN_PROCESSES",
    "WAIT_ORDER",
    "BudgetStatistics",
    "GroupCounters",
    "GroupStatistics",
    "Priority",
    "ProcessCount",
    "Queued",
    "RateBudget",
    "WaitOrder",
    "check_fallback_share",
    "check_group",
    "check_priority",
    "check_settings",
    "share_of",
]


class Priority(enum.IntEnum):
    """How urgent a request is; a larger value is more urgent (``CRITICAL > LOW``)."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


# A waiter rises one priority level per this many seconds waited: LOW is CRITICAL after 30 s.
DEFAULT_AGE_STEP = 10.0
# LOW leaves this many slots of a window free while urgent work may come ...
DEFAULT_RESERVE = 1
# ... unless they free again within this many seconds (an urgent request waits no longer) ...
DEFAULT_RESERVE_WAIT = 0.005
# ... and "may come" means: a request above LOW was seen in the group this recently.
DEFAULT_RESERVE_HOLD = 60.0


# -- the settings --------------------------------------------------------------------------


def check_settings(
    *, limit: int, limits: Mapping[str, int] | None, window: float, margin: float, age_step: float
) -> None:
    """Refuse a budget's settings that cannot work (InvalidRequestError)."""
    if limit < 1 or any(n < 1 for n in (limits or {}).values()):
        raise InvalidRequestError("rate limits must be at least 1 request per window")
    for name in limits or {}:
        check_group(name)
    if window <= 0 or margin < 0:
        raise InvalidRequestError("window must be > 0 s and margin >= 0 s")
    if not age_step > 0:  # NaN too
        raise InvalidRequestError(f"age_step must be > 0 s (got {age_step!r})")


def check_fallback_share(share: float) -> None:
    """A share of the ceiling kept while the shared budget is unreachable."""
    if not 0 < share <= 1:
        raise InvalidRequestError("fallback_share must be in (0, 1]")


def check_group(group: str) -> str:
    """A group name: a non-empty string of letters, digits, ``_`` or ``-`` (it is part of
    the Redis budget's key, between braces)."""
    if (
        not isinstance(group, str)
        or not group
        or not group.replace("_", "").replace("-", "").isalnum()
    ):
        raise InvalidRequestError(
            f"rate-limit group must be a name of letters, digits, '_' or '-' (got {group!r})"
        )
    return group


def check_priority(priority: Priority | int) -> Priority:
    """The ``Priority`` of ``priority`` (its members or their int values 0..3)."""
    if isinstance(priority, Priority):
        return priority
    if isinstance(priority, int) and not isinstance(priority, bool):
        try:
            return Priority(priority)
        except ValueError:
            pass
    raise InvalidRequestError(
        f"priority must be a Priority (LOW, NORMAL, HIGH, CRITICAL), not {priority!r}"
    )


# -- the share of a process while the shared budget is unreachable ------------------------

# A process that never saw the shared budget counts itself and one more: the processes
# already running know nothing of it, so it cannot know how many they are either.
NEVER_SEEN_PROCESSES = 2


def share_of(limit: int, processes: int) -> int:
    """Sends per window one of ``processes`` processes may make on its own so that all of
    them together stay within ``limit``: ``limit // processes``, and 1 when there are more
    processes than the limit (then the ceiling can be passed: a process cannot send less
    than one request without agreeing with the others on whose turn it is)."""
    return max(1, limit // max(1, processes))


class ProcessCount:
    """How many processes share the budget, as the heartbeats in Redis last said, and the
    number a process goes by while Redis is lost. Pure: times are passed in.

    * ``saw(count, unseen)`` after each heartbeat or ask (``count`` includes this process;
      ``unseen``: the others whose latest count taken in is from before this process joined,
      judged in one group's set of processes, the same for all: ``redis.COUNTING_GROUP``);
    * ``lost(now)`` when Redis is lost: the number to share the ceiling by from now on, the
      last count seen. Each process shares by its own last count, so the shares stay within
      the ceiling only if every process that sends counted every other. Hence:

      - never fewer than ``NEVER_SEEN_PROCESSES``: a process that never saw a count
        (started while Redis was down) cannot know the others and counts itself and one
        more, and so one that saw itself alone must leave it room (a whole ceiling beside
        it would be half a ceiling over);
      - a process that another has not counted yet (``unseen``: that one's latest count is
        from before it joined) sends nothing until Redis is back (``lost`` returns 0): that
        one shares the ceiling without it. Three processes, the third registered just
        before the loss: the first two keep 5 each, the third waits, where it sent 3 beside
        them; two started together, the second before the first counted it: 5 and none;
      - except while settling after an outage (``back``): a restarted Redis holds no
        heartbeat, every process joins anew, and the outage's number, which each of them
        counted, stays the floor;
    * ``back(now, settle_s)`` when Redis answers again: the number of the outage is kept as
      a floor for ``settle_s`` (in case Redis is lost again meanwhile).
    """

    __slots__ = ("_held", "_held_until", "seen", "unseen")

    def __init__(self) -> None:
        self.seen: int | None = None
        self.unseen = 0
        self._held = 0
        self._held_until = float("-inf")

    def saw(self, count: int, unseen: int = 0) -> None:
        self.seen = max(1, count)
        self.unseen = max(0, unseen)

    def assumed(self, now: float) -> int:
        """The number of processes to share the ceiling by, were Redis lost at ``now``."""
        count = NEVER_SEEN_PROCESSES if self.seen is None else self.seen
        if now < self._held_until:
            count = max(count, self._held)
        return count

    def lost(self, now: float) -> int:
        """Redis is lost at ``now``: the number to go by until it is back, or 0 when this
        process must send nothing until then (see the class)."""
        settling = now < self._held_until
        self._held = max(NEVER_SEEN_PROCESSES, self.assumed(now))
        self._held_until = float("inf")
        return 0 if self.unseen and not settling else self._held

    def back(self, now: float, settle_s: float) -> None:
        """Redis answers again at ``now``: keep the outage's number ``settle_s`` longer."""
        self._held_until = now + settle_s


# -- the statistics ------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupStatistics:
    """One group's budget at the moment of asking."""

    tokens: int  # sends the window still allows right now
    waiting: Mapping[str, int]  # queued acquires per priority name
    sent: int  # acquires granted (each one a request sent)
    throttled: int  # acquires that could not go at once and queued
    penalties: int  # penalize() calls (after 429/418)
    blocked_for: float  # seconds of penalty left
    external: int  # sends by others on this IP, learnt from Remaining-Req
    margin: float = 0.0  # seconds added to the window now (grows with round-trip jitter)


@dataclass(frozen=True)
class BudgetStatistics:
    """Every known group's budget, by group name."""

    groups: Mapping[str, GroupStatistics]


@dataclass(slots=True)
class GroupCounters:
    """What a budget counts per group, the same way in every budget: a send when an acquire
    returns, a throttle when an acquire cannot go at once (counted when it starts to wait,
    whether or not it is granted later), a penalty per ``penalize`` call, and the sends that
    upstream counted but no budget here made (``external``)."""

    sent: int = 0
    throttled: int = 0
    penalties: int = 0
    external: int = 0

    def snapshot(
        self, *, tokens: int, waiting: Iterable[Priority], blocked_for: float, margin: float
    ) -> GroupStatistics:
        """The group's statistics, with ``waiting`` the priorities of its queued acquires."""
        by_name = {p.name: 0 for p in Priority}
        for priority in waiting:
            by_name[priority.name] += 1
        return GroupStatistics(
            tokens=max(0, tokens),
            waiting=by_name,
            sent=self.sent,
            throttled=self.throttled,
            penalties=self.penalties,
            blocked_for=max(0.0, blocked_for),
            external=self.external,
            margin=margin,
        )


# -- the wait order ------------------------------------------------------------------------


class Queued(Protocol):
    """A waiting acquire, as the wait order sees it."""

    @property
    def priority(self) -> Priority: ...

    @property
    def since(self) -> float: ...  # the budget's clock when it started to wait

    @property
    def seq(self) -> int: ...  # arrival order, for waiters with the same ``since``


Q = TypeVar("Q", bound=Queued)


@dataclass(frozen=True, slots=True)
class WaitOrder:
    """Which waiting request goes next (see the module doc)."""

    age_step: float = DEFAULT_AGE_STEP
    reserve: int = DEFAULT_RESERVE
    reserve_wait: float = DEFAULT_RESERVE_WAIT
    reserve_hold: float = DEFAULT_RESERVE_HOLD

    def level(self, priority: Priority, waited: float) -> Priority:
        """The priority a request of ``priority`` competes at after waiting ``waited`` s."""
        steps = int(max(0.0, waited) // self.age_step)
        return Priority(min(int(Priority.CRITICAL), int(priority) + steps))

    def rank(self, waiter: Queued, now: float) -> tuple[int, float, int]:
        """Sort key at ``now``: the smallest goes first."""
        return (-self.level(waiter.priority, now - waiter.since), waiter.since, waiter.seq)

    def first(self, waiters: Iterable[Q], now: float) -> Q | None:
        """The waiter that goes next at ``now`` (None when nobody waits). Levels change as
        time passes, so the order is decided at each grant, not kept in a heap."""
        return min(waiters, key=lambda w: self.rank(w, now), default=None)

    def top_level(self, waiters: Iterable[Queued], now: float) -> Priority | None:
        """The level of the most urgent waiter at ``now`` (None when nobody waits)."""
        best = self.first(waiters, now)
        return None if best is None else self.level(best.priority, now - best.since)

    @staticmethod
    def may_burst(priority: Priority) -> bool:
        """Whether a request that finds nobody waiting may skip pacing (go at once while the
        window has room): every priority but LOW, which is always paced."""
        return priority != Priority.LOW

    def goes_ahead(self, priority: Priority, waiting: Priority | None) -> bool:
        """Whether a request of ``priority`` arriving now may go at once when the window has
        room, with ``waiting`` the level of the most urgent waiter (None: nobody waits):
        nobody waits, or it bursts and is more urgent than every waiter."""
        return waiting is None or (self.may_burst(priority) and priority > waiting)

    def catches_up(self, since_urgent: float) -> bool:
        """Whether a paced send may count from the slot it was due at up to a window late
        (``LocalRateBudget``), ``since_urgent`` seconds after the group last saw a request
        above LOW (0 while the process expects urgent work): when no urgent work may come
        (see ``keeps_reserve``)."""
        return not 0 <= since_urgent < self.reserve_hold

    def keeps_reserve(self, level: Priority, limit: int, since_urgent: float) -> bool:
        """Whether a request competing at ``level`` must keep ``reserve`` slots of a
        ``limit``-slot window for urgent work (its LOW sends may hold ``limit - reserve``),
        ``since_urgent`` seconds after the group last saw a request above LOW (0 while the
        process expects urgent work): LOW while that is within ``reserve_hold`` (and the
        window has more slots than the reserve)."""
        return (
            level == Priority.LOW
            and 0 < self.reserve < limit
            and 0 <= since_urgent < self.reserve_hold
        )


WAIT_ORDER = WaitOrder()


# -- the protocol --------------------------------------------------------------------------


class RateBudget(Protocol):
    """When requests to a rate-limited group may be sent. Implementations may share the
    budget across processes (e.g. through Redis); callers only need these four methods."""

    async def acquire(self, group: str, priority: Priority = Priority.NORMAL) -> None:
        """Return when one request of ``group`` may be sent, counting it as sent now."""
        ...

    def observe(
        self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
    ) -> None:
        """A reply came back: reconcile with the ``sec`` of its ``Remaining-Req`` header
        (None: it had none). ``sent_at`` (the budget clock when the request was granted)
        sharpens the reconciliation and tells how late the request may have arrived."""
        ...

    def penalize(self, group: str, seconds: float) -> None:
        """Let nobody send in ``group`` for ``seconds`` (after a 429 or 418)."""
        ...

    def statistics(self) -> BudgetStatistics:
        """A snapshot of the budget."""
        ...
