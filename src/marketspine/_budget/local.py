"""The request budget of Upbit's rate-limit groups: when a request may be sent.

Upbit allows 10 requests/s per group per IP and answers 429 above that. Its window may be
a fixed calendar second, so a plain token bucket (capacity 10, refilled at 10/s) is not
safe: it lets 10 go at the start of a second and 9 more refill inside the same second.
``LocalRateBudget`` therefore caps *any* window of ``window + margin`` seconds at ``limit``
sends — which bounds every calendar second and every sliding second alike — and counts a
request the moment it is allowed to be sent, not when its answer arrives.

Upstream counts a request when it *arrives*, a varying delay after it was allowed. Two sends
a window apart arrive closer than a window when the first was delayed more. What can put 11
arrivals in one upstream second is the way *there* of the earlier send taking longer than the
way there of the later one, so each send counts at the latest time it may have arrived:

* **Answered** — its round trip beyond the fastest recent one (``observe(..., sent_at=...)``):
  the way there took at most that much more than the least it can take, whatever of the
  excess was the way back (the server building the page, this event loop busy when the reply
  came). Only a late request pays, with its own lateness, once.
* **In flight** — its lateness is not known yet: the spread of the recent round trips (high
  quantile minus minimum, ``JitterMargin``) stands for it. With round trips under a window,
  the send ten back that decides a slot has always answered, so a jittery network or a
  loaded machine no longer widens every window by its worst round trips.

The margin's floor (20 ms) stays added to every window: a cushion that delay never spends
(the fastest round trip seen is only an estimate of the fastest possible).

Pacing counts from the slot a send was due at, so a wake-up a little late is not repeated
in every later slot, and while no urgent work may come, LOW catches up the slots left unused
within the last window (see ``_Group.record_send`` and ``rules.WaitOrder.catches_up``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from ..errors import InvalidRequestError
from .rules import (
    DEFAULT_AGE_STEP,
    BudgetStatistics,
    GroupCounters,
    Priority,
    WaitOrder,
    check_group,
    check_priority,
    check_settings,
)

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_MARGIN",
    "GROUPS",
    "JitterMargin",
    "LocalRateBudget",
    "group_of",
]


GROUPS = ("market", "candles", "trade", "ticker", "orderbook")

DEFAULT_LIMIT = 10  # requests per window per group, Upbit's quotation limit
# Added to the 1 s window: arrival times at the server vary (event-loop and network jitter),
# and two sends exactly one window apart may land in one server second. Measured against a
# loopback simulator with 30 ms latency + up to 25 ms jitter, 5 s saturated: margin 0 gave
# a 429 in one of two runs (and 8.2 req/s after the penalty); 20 ms gave none at 9.8 req/s.
DEFAULT_MARGIN = 0.02
# The margin follows the round-trip spread (high quantile minus minimum) of the last
# RTT_SAMPLES replies of a group, up to MAX_MARGIN (beyond that, pacing is too slow to pay).
RTT_SAMPLES = 200
MAX_MARGIN = 0.25
_MIN_SAMPLES = 10
_PATH_GROUPS = (
    ("/v1/market/", "market"),
    ("/v1/candles/", "candles"),
    ("/v1/trades/", "trade"),
    ("/v1/ticker", "ticker"),
    ("/v1/orderbook", "orderbook"),
)


def group_of(path: str) -> str:
    """The rate-limit group of an Upbit REST ``path`` (``/v1/candles/days`` → ``candles``).

    Raises InvalidRequestError for paths outside the quotation API.
    """
    for prefix, group in _PATH_GROUPS:
        if path.startswith(prefix):
            return group
    raise InvalidRequestError(
        f"no rate-limit group for path {path!r}: expected /v1/market/all, /v1/candles/..., "
        "/v1/trades/ticks, /v1/ticker[/all] or /v1/orderbook[/instruments]"
    )


class JitterMargin:
    """The margin for a send whose lateness is not known: ``floor`` at first, then the spread
    (high quantile minus minimum) of the last ``RTT_SAMPLES`` round trips once
    ``_MIN_SAMPLES`` are seen, never below ``floor`` nor above ``MAX_MARGIN``. The fastest
    round trip (``least``) tells how late an answered send may have arrived (see the module
    doc; ``RedisRateBudget`` counts its sends in Redis by the same two rules)."""

    __slots__ = ("_rtts", "floor", "least", "value")

    def __init__(self, floor: float) -> None:
        self.floor = floor
        self.value = floor
        self.least = float("inf")  # the fastest of the recent round trips
        self._rtts: deque[float] = deque(maxlen=RTT_SAMPLES)

    def beyond_least(self, rtt: float) -> float:
        """How much later than the fastest a request with round trip ``rtt`` may have
        reached upstream: its round trip beyond the fastest recent one (the least delay a
        request and its answer take together), the most its way there can have taken
        beyond the least."""
        return max(0.0, rtt - self.least)

    @property
    def in_flight(self) -> float:
        """How much later than its grant a send still in flight may reach upstream: the part
        of the margin learnt from jitter. The floor is left out on purpose: it is added to
        every window, a cushion that delay never spends."""
        return self.value - self.floor

    def saw(self, seconds: float) -> float:
        """Take one round trip (seconds); returns the margin now."""
        self._rtts.append(max(0.0, seconds))
        self.least = min(self._rtts)
        if len(self._rtts) >= _MIN_SAMPLES:
            ordered = sorted(self._rtts)
            spread = ordered[int(0.99 * (len(ordered) - 1))] - ordered[0]
            self.value = min(MAX_MARGIN, max(self.floor, spread))
        return self.value


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    since: float  # the budget clock when it started to wait
    seq: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    granted: bool = False


@dataclass(slots=True)
class _Send:
    at: float  # when the budget granted it
    answered: float | None = None  # when its reply was seen; None while in flight
    urgent: bool = False  # asked above LOW: it spends the reserve, not LOW's share


@dataclass
class _Group:
    limit: int
    span: float  # window + the margin's floor
    window: float = 1.0
    margin: float = DEFAULT_MARGIN  # the configured floor of the margin
    jitter: JitterMargin = field(init=False)
    sends: deque[_Send] = field(default_factory=deque)  # by grant time, ascending
    paced_from: float = float("-inf")  # the slot the last paced send counts from (sends
    # that went at once out of turn do not move it)
    blocked_until: float = float("-inf")
    waiters: list[_Waiter] = field(default_factory=list)  # arrival order; WaitOrder picks
    sleeping: bool = False  # one waiter sleeps until the next slot; the others wait on it
    wake_at: float = float("inf")  # when the sleeping waiter wakes
    urgent_at: float = float("-inf")  # when a request above LOW last asked (the reserve)
    counts: GroupCounters = field(default_factory=GroupCounters)

    def __post_init__(self) -> None:
        self.jitter = JitterMargin(self.margin)

    @property
    def interval(self) -> float:
        return self.span / self.limit

    def prune(self, now: float) -> None:
        # Keep a few windows: observe() looks back a window plus a round trip, and a reply
        # that comes back within them still moves its send to when it may have arrived.
        horizon = now - 3 * self.span
        while self.sends and max(self.sends[0].at, self.sends[0].answered or 0.0) <= horizon:
            self.sends.popleft()

    def in_window(self, now: float, since: float) -> int:
        """Sends granted in (since, now]."""
        return sum(1 for s in self.sends if since < s.at <= now)

    def counted_at(self, send: _Send) -> float:
        """When the window counts ``send``: the latest time it may have reached upstream
        (see the module doc). Answered, that is told by its own round trip; in flight, the
        spread of the recent round trips stands for it."""
        if send.answered is None:
            return send.at + self.jitter.in_flight
        return send.at + self.jitter.beyond_least(send.answered - send.at)

    def counted_in_window(self, now: float) -> int:
        return sum(1 for s in self.sends if now - self.span < self.counted_at(s))

    def next_send_at(
        self, now: float, *, paced: bool, keep: int = 0, keep_wait: float = 0.0
    ) -> float:
        """Earliest time at or after ``now`` a send is allowed. With ``keep`` (the reserve),
        the sends that are not urgent may hold only ``limit - keep`` slots of the window,
        unless one of them leaves within ``keep_wait``."""
        at = max(now, self.blocked_until)
        # The limit-th latest counted send must have left the window.
        if len(self.sends) >= self.limit:
            counted = heapq.nlargest(self.limit, map(self.counted_at, self.sends))
            at = max(at, counted[-1] + self.span)
        if keep:
            # The (limit - keep)-th latest bulk send must have left a window keep_wait
            # shorter: urgent sends in the window have spent the reserve, LOW keeps its share.
            cap = self.limit - keep
            bulk = heapq.nlargest(cap, (self.counted_at(s) for s in self.sends if not s.urgent))
            if len(bulk) >= cap:
                at = max(at, bulk[-1] + self.span - keep_wait)
        if paced:
            at = max(at, self.paced_from + self.interval)
        return at

    def saw_round_trip(self, seconds: float) -> None:
        """Learn the spread of recent round trips (see the module doc)."""
        self.jitter.saw(seconds)

    def saw_answer(self, sent_at: float, now: float) -> None:
        """The reply to the send made at ``sent_at`` came back ``now``. Replies are paired
        with the latest unanswered send granted no later than ``sent_at``: two sends granted
        before either left may swap replies, which ends in the same counted times."""
        for send in reversed(self.sends):
            if send.answered is None and send.at <= sent_at:
                send.answered = now
                return

    def record_send(self, now: float, *, urgent: bool, paced: bool, catch_up: bool = False) -> None:
        self.sends.append(_Send(now, urgent=urgent))
        if paced:
            # Pacing counts from the slot a send was due at, not from when the event loop got
            # round to it: a wake-up 1 ms late (timer granularity, a busy loop) would push
            # every later slot back as much, 1% of the rate at 10/s. Only a send up to a
            # quarter interval after its slot counts from the slot (the Redis budget's script
            # does the same); one that went before it or long after (the group was idle, or
            # held by the window cap or a penalty) counts from itself, so nothing bursts to
            # catch up. With ``catch_up`` (no urgent work may come: ``WaitOrder.catches_up``)
            # a send up to a window after its slot counts from it, so the slots left unused
            # within the last window go at once, and a send the window cap held does not
            # push the schedule back: only LOW asks, and the window cap, on real sends, is
            # what keeps upstream's limit.
            due = self.paced_from + self.interval
            behind = self.span if catch_up else self.interval / 4
            self.paced_from = due if due <= now <= due + behind else now
        self.counts.sent += 1
        self.prune(now)


class LocalRateBudget:
    """An in-process budget per rate-limit group, shared by every caller in the process.

    Rules, per group:

    * **Window cap** — at most ``limit`` sends in any interval of ``window + margin``
      seconds, each counted from the moment ``acquire`` returns, or later when it may have
      reached upstream later (see the module doc). This holds for any alignment of the
      server's window, fixed calendar second or sliding.
    * **Bursts only when nobody waits** — an ``acquire`` that finds no queue and room in the
      window returns at once, as does one more urgent than every waiter
      (``WaitOrder.goes_ahead``). Requests that queue are released one per token interval
      (``(window + margin) / limit``), so a saturated group sends evenly and a newcomer
      never waits behind a whole window's burst; one that went at once out of turn does not
      move that schedule, nor does a first waiter that would go ahead (alone, or more
      urgent than every other waiter): it found the window full and takes the first slot
      that frees. LOW requests are always paced, and while urgent work may come their
      sends hold at most ``limit - reserve`` slots of a window (``WaitOrder.keeps_reserve``;
      ``expect_urgent``: at any moment, not only a minute after a request above LOW), so a
      backfill cannot fill the window that a CRITICAL request needs.
    * **Priorities with aging** — who goes next is ``rules.WaitOrder``'s: most urgent first,
      FIFO within a priority, a waiter rising one level per ``age_step`` seconds waited
      (10 s: a LOW request is CRITICAL after 30 s and then ahead of any newcomer) — no
      priority starves. ``RedisRateBudget`` orders the same way.
    * **Reconciliation** — ``observe`` compares upstream's ``Remaining-Req`` ``sec`` with the
      sends this budget made in the window; when upstream counted more (other processes on
      the IP), the difference is booked as sends made now.
    * **Penalties** — ``penalize`` stops the group for a while after a 429 or 418.

    ``expect_urgent``: this process may send requests above LOW at any moment (a bot,
    Spine, serve): LOW keeps the reserve from the start, not only once such a request was
    seen in the group. ``clock`` (seconds, monotonic) and ``sleep`` are injectable so tests
    run on fake time.
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        limits: Mapping[str, int] | None = None,
        window: float = 1.0,
        margin: float = DEFAULT_MARGIN,
        age_step: float = DEFAULT_AGE_STEP,
        expect_urgent: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        check_settings(limit=limit, limits=limits, window=window, margin=margin, age_step=age_step)
        self._expect_urgent = expect_urgent
        self._limit = limit
        self._limits = dict(limits or {})
        self._window = window
        self._margin = margin
        self._span = window + margin
        self._order = WaitOrder(age_step)
        self._clock = clock
        self._sleep = sleep
        self._groups: dict[str, _Group] = {}
        self._seq = itertools.count()

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            check_group(name)
            group = _Group(
                self._limits.get(name, self._limit), self._span, self._window, self._margin
            )
            self._groups[name] = group
        return group

    async def acquire(self, group: str, priority: Priority = Priority.NORMAL) -> None:
        """Return when one request of ``group`` may be sent; it is counted as sent now."""
        priority = check_priority(priority)
        state = self._group(group)
        now = self._clock()
        if priority > Priority.LOW:
            state.urgent_at = now
        waiting = self._order.top_level(state.waiters, now)
        if self._order.goes_ahead(priority, waiting) and self._due(state, priority, now) <= now:
            # Out of turn (not paced) unless LOW, which is paced even with nobody waiting.
            urgent = priority > Priority.LOW
            paced = not self._order.may_burst(priority)
            state.record_send(
                now, urgent=urgent, paced=paced, catch_up=self._catches_up(state, now)
            )
            return
        state.counts.throttled += 1
        waiter = _Waiter(priority, now, next(self._seq))
        state.waiters.append(waiter)
        try:
            await self._wait_for_grant(state, waiter)
        except BaseException:
            if not waiter.granted:
                state.waiters.remove(waiter)
            self._hand_over(state)
            raise

    def expect_urgent(self) -> None:
        """From now on this process may send requests above LOW at any moment (a Spine
        joined a shared budget): LOW keeps the reserve from the start."""
        self._expect_urgent = True

    def _since_urgent(self, state: _Group, now: float) -> float:
        """Seconds since a request above LOW was seen in the group (0 while this process
        expects urgent work at any moment)."""
        return 0.0 if self._expect_urgent else now - state.urgent_at

    def _catches_up(self, state: _Group, now: float) -> bool:
        return self._order.catches_up(self._since_urgent(state, now))

    def _due(self, state: _Group, priority: Priority, now: float, *, queued: bool = False) -> float:
        """When a request competing at ``priority`` may go: paced when it queued or is LOW,
        leaving the reserve when ``WaitOrder.keeps_reserve`` says so."""
        order = self._order
        since_urgent = self._since_urgent(state, now)
        keep = order.reserve if order.keeps_reserve(priority, state.limit, since_urgent) else 0
        paced = queued or not order.may_burst(priority)
        return state.next_send_at(now, paced=paced, keep=keep, keep_wait=order.reserve_wait)

    def _head_due(self, state: _Group, now: float) -> tuple[float, bool]:
        """When the first waiter may go, and whether it goes paced. One more urgent than
        every other waiter (``WaitOrder.goes_ahead``, as it would on arriving now) is not
        paced: it queued only because the window was full, and takes the slot that frees
        first rather than the backfill's next paced slot — an urgent request that arrived
        just after LOW took the window's last unreserved slot waits the few ms until the
        oldest send leaves, not a token interval. As in ``RedisRateBudget``'s script."""
        best = self._order.first(state.waiters, now)
        if best is None:
            return now, False
        order = self._order
        level = order.level(best.priority, now - best.since)
        others = order.top_level((w for w in state.waiters if w is not best), now)
        paced = not (order.goes_ahead(best.priority, others) and order.may_burst(level))
        return self._due(state, level, now, queued=paced), paced

    async def _wait_for_grant(self, state: _Group, waiter: _Waiter) -> None:
        while not waiter.granted:
            now = self._clock()
            due, _ = self._head_due(state, now)
            if state.sleeping and due >= state.wake_at:
                await waiter.wake.wait()
                waiter.wake.clear()
                continue
            # Nobody sleeps, or the sleeper wakes later than the slot of a waiter that came
            # since (more urgent, or without the reserve): sleep until that slot too.
            early = state.sleeping
            later = state.wake_at
            state.sleeping, state.wake_at = True, due
            try:
                if due > now:
                    await self._sleep(due - now)
            finally:
                if early:
                    state.wake_at = later
                else:
                    state.sleeping, state.wake_at = False, float("inf")
            self._grant_ready(state)
        self._hand_over(state)

    def _grant_ready(self, state: _Group) -> None:
        now = self._clock()
        while state.waiters:
            due, paced = self._head_due(state, now)
            if due > now:
                return
            best = self._order.first(state.waiters, now)
            assert best is not None
            state.waiters.remove(best)
            best.granted = True
            # One that went ahead unpaced does not move the schedule (as in acquire).
            state.record_send(
                now,
                urgent=best.priority > Priority.LOW,
                paced=paced,
                catch_up=self._catches_up(state, now),
            )
            best.wake.set()

    @staticmethod
    def _hand_over(state: _Group) -> None:
        # Whoever leaves the queue makes sure someone is left to sleep for the next slot.
        if state.waiters and not state.sleeping:
            state.waiters[0].wake.set()

    def observe(
        self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
    ) -> None:
        """Count the answered send at the latest time it may have arrived (with ``sent_at``),
        and book sends that upstream counted but this budget did not make: when the reply's
        ``Remaining-Req`` ``sec`` says fewer are left than our own sends in the window
        explain, believe upstream (other processes on the IP are spending)."""
        state = self._group(group)
        now = self._clock()
        if sent_at is not None:
            state.saw_round_trip(now - sent_at)
            state.saw_answer(sent_at, now)
        if remaining_sec is None:
            return
        # Everything sent since a window (plus the round trip) before this request left
        # may have been counted with it upstream.
        since = now - state.span if sent_at is None else sent_at - state.span - (now - sent_at)
        ours = state.in_window(now, since)
        upstream_used = state.limit - max(remaining_sec, 0)
        extra = upstream_used - ours
        if extra > 0:
            # Counted upstream by now: booked as answered, never paired with a reply.
            state.sends.extend(_Send(now, now) for _ in range(extra))
            state.counts.external += extra
            state.prune(now)

    def set_limit(self, group: str, limit: int) -> None:
        """Allow ``limit`` sends per window in ``group`` from now on; the sends already made
        still count (``RedisRateBudget`` sets its fallback to this process's share)."""
        if limit < 1:
            raise InvalidRequestError("rate limits must be at least 1 request per window")
        self._group(group).limit = limit

    def penalize(self, group: str, seconds: float) -> None:
        """Let nobody in ``group`` send for ``seconds`` from now."""
        state = self._group(group)
        state.blocked_until = max(state.blocked_until, self._clock() + seconds)
        state.counts.penalties += 1

    def statistics(self) -> BudgetStatistics:
        """A snapshot of every group used so far (and the five Upbit groups)."""
        now = self._clock()
        for name in GROUPS:
            self._group(name)
        groups = {}
        for name, state in self._groups.items():
            groups[name] = state.counts.snapshot(
                tokens=state.limit - state.counted_in_window(now),
                waiting=(waiter.priority for waiter in state.waiters),
                blocked_for=state.blocked_until - now,
                margin=state.jitter.value,
            )
        return BudgetStatistics(groups)
