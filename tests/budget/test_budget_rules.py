"""The rules both rate budgets share (``_budget.rules``): one set of cases — the checks of the
settings, the statistics after a known sequence, the order in which waiters go — run against
``LocalRateBudget`` on fake time and ``RedisRateBudget`` on the real Redis, with a clock the
test moves by hand (Redis keeps its window on its own clock; the waiters' ages are the
budget's)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from helpers import FakeTime, wait_until
from redis.asyncio import Redis
from services import RedisSpace

from marketspine._budget.local import GROUPS, LocalRateBudget
from marketspine._budget.redis import RedisRateBudget
from marketspine._budget.redis_lua import BudgetKeys, BudgetScripts
from marketspine._budget.rules import (
    DEFAULT_AGE_STEP,
    WAIT_ORDER,
    GroupStatistics,
    Priority,
    WaitOrder,
)
from marketspine.errors import InvalidRequestError

T = TypeVar("T")
Budget = LocalRateBudget | RedisRateBudget
START = 1000.0


@dataclass
class Subject:
    """One kind of budget, made on the test's ``FakeTime`` clock."""

    kind: str
    fake: FakeTime
    space: RedisSpace | None = None
    made: list[Budget] = field(default_factory=list)

    def make(self, **settings: Any) -> Budget:
        budget: Budget
        if self.space is None:
            budget = LocalRateBudget(clock=self.fake.clock, sleep=self.fake.sleep, **settings)
        else:
            # Redis decides the window on its own clock, so this one sleeps for real; the
            # clock the test moves by hand gives the waiters' ages and the local penalty.
            budget = RedisRateBudget(
                self.space.url, prefix=self.space.prefix, clock=self.fake.clock, **settings
            )
        self.made.append(budget)
        return budget

    async def drive(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` to its end: on fake time, or for Redis on real time."""
        if self.space is None:
            return await self.fake.run(awaitable)
        async with asyncio.timeout(20):
            return await awaitable


@pytest.fixture(params=["local", "redis"])
async def subject(
    request: pytest.FixtureRequest, redis_space: RedisSpace
) -> AsyncIterator[Subject]:
    # Both kinds take the Redis space (an async fixture cannot be asked for conditionally);
    # the local one leaves it unused.
    made = Subject(
        request.param, FakeTime(START), redis_space if request.param == "redis" else None
    )
    try:
        yield made
    finally:
        for budget in made.made:
            if isinstance(budget, RedisRateBudget):
                await budget.aclose()


def waiting(budget: Budget, group: str = "candles") -> int:
    return sum(budget.statistics().groups[group].waiting.values())


def _waits(budget: Budget, count: int) -> bool:
    return waiting(budget) == count


# -- the settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"limit": 0}, "rate limits must be at least 1 request per window"),
        ({"limits": {"candles": 0}}, "rate limits must be at least 1 request per window"),
        ({"window": 0}, r"window must be > 0 s and margin >= 0 s"),
        ({"margin": -0.01}, r"window must be > 0 s and margin >= 0 s"),
        ({"age_step": 0}, r"age_step must be > 0 s \(got 0\)"),
        ({"age_step": float("nan")}, r"age_step must be > 0 s"),
        ({"limits": {"candles}x": 5}}, "rate-limit group must be a name"),
    ],
)
async def test_bad_settings_are_refused_alike(
    subject: Subject, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        subject.make(**settings)


async def test_a_bad_priority_or_group_is_refused_alike(subject: Subject) -> None:
    budget = subject.make()
    for priority in (4, -1, "HIGH", True, 1.0):
        with pytest.raises(InvalidRequestError, match="priority must be a Priority"):
            await budget.acquire("candles", priority)  # type: ignore[arg-type]
    for group in ("", "a b", "candles}", "x:y"):
        with pytest.raises(InvalidRequestError, match="rate-limit group must be a name"):
            await budget.acquire(group)
    await subject.drive(budget.acquire("candles", 3))  # type: ignore[arg-type]  # CRITICAL
    assert budget.statistics().groups["candles"].sent == 1


def test_a_fallback_share_outside_0_1_is_refused() -> None:
    for share in (0.0, 1.5):
        with pytest.raises(InvalidRequestError, match=r"fallback_share must be in \(0, 1\]"):
            RedisRateBudget("redis://127.0.0.1:1/0", fallback_share=share)


# -- the statistics ------------------------------------------------------------------------


async def test_statistics_after_a_known_sequence_are_alike(subject: Subject) -> None:
    # A window far longer than the test: Redis's real clock frees nothing meanwhile.
    budget = subject.make(limit=3, window=60.0, margin=0.0)
    await budget.acquire("candles")
    await budget.acquire("candles")  # at once: the window has room and nobody waits
    budget.observe("candles", 0)  # upstream counted 3: one send made elsewhere
    tasks = [asyncio.create_task(budget.acquire("candles", p)) for p in Priority]

    def settled() -> bool:
        stats = budget.statistics().groups["candles"]
        # Redis books the observation at the next ask; tokens are as it last answered.
        return sum(stats.waiting.values()) == 4 and stats.external == 1 and stats.tokens == 0

    await wait_until(settled, 5.0, "four waiters and the external send counted")
    budget.penalize("candles", 5.0)
    stats = budget.statistics()
    assert set(stats.groups) == set(GROUPS)
    assert stats.groups["candles"] == GroupStatistics(
        tokens=0,
        waiting={"LOW": 1, "NORMAL": 1, "HIGH": 1, "CRITICAL": 1},
        sent=2,
        throttled=4,  # counted when they could not go, not when they are served
        penalties=1,
        blocked_for=pytest.approx(5.0),  # type: ignore[arg-type]
        external=1,
        margin=pytest.approx(0.0),  # type: ignore[arg-type]
    )
    assert stats.groups["ticker"] == GroupStatistics(
        tokens=3,
        waiting={"LOW": 0, "NORMAL": 0, "HIGH": 0, "CRITICAL": 0},
        sent=0,
        throttled=0,
        penalties=0,
        blocked_for=0.0,
        external=0,
        margin=0.0,
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    after = budget.statistics().groups["candles"]
    assert (after.sent, after.throttled, sum(after.waiting.values())) == (2, 4, 0)


# -- the wait order ------------------------------------------------------------------------


class Hold:
    """Keeps a group from sending while the test queues its waiters at chosen times, then
    lets it go at ``START + until``: the local budget by a penalty on its fake clock, the
    Redis one by a penalty in Redis that the test lifts by hand (a real one would last
    real seconds)."""

    def __init__(self, subject: Subject, budget: Budget, until: float) -> None:
        self.subject, self.budget, self.until = subject, budget, until

    async def __aenter__(self) -> Hold:
        if self.subject.space is None:
            self.budget.penalize("candles", self.until)
        else:
            self.client = Redis.from_url(self.subject.space.url)
            self.keys = BudgetKeys.of(self.subject.space.prefix, "default", "candles")
            await BudgetScripts(self.client).penalize(self.keys, 600.0)
        return self

    async def release(self) -> None:
        self.subject.fake.now = START + self.until
        if self.subject.space is not None:
            await self.client.hdel(self.keys.state, "blocked")

    async def __aexit__(self, *exc: object) -> None:
        if self.subject.space is not None:
            await self.client.aclose()


async def test_waiters_go_by_aged_priority_then_fifo_and_none_starves(subject: Subject) -> None:
    # One send per 50 ms: the seven grants take 0.35 s, far less than an age step (10 s).
    budget = subject.make(limit=1, window=0.05, margin=0.0)
    order: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def take(name: str, priority: Priority) -> None:
        await budget.acquire("candles", priority)
        order.append(name)

    # (name, priority, seconds after START it starts waiting); released at START + 36.
    queue = [
        ("low for 36 s", Priority.LOW, 0.0),  # risen to CRITICAL: ahead of a new CRITICAL
        ("normal for 16 s", Priority.NORMAL, 20.0),  # risen to HIGH, and the older HIGH
        ("low for 6 s", Priority.LOW, 30.0),  # still LOW: last
        ("high for 2 s", Priority.HIGH, 34.0),
        ("critical", Priority.CRITICAL, 35.0),
        ("normal a", Priority.NORMAL, 35.0),  # FIFO within a priority
        ("normal b", Priority.NORMAL, 35.0),
    ]
    async with Hold(subject, budget, until=36.0) as hold:
        for queued, (name, priority, at) in enumerate(queue, start=1):
            subject.fake.now = START + at
            tasks.append(asyncio.create_task(take(name, priority)))
            await wait_until(functools.partial(_waits, budget, queued), 5.0, f"{name} queued")
        await hold.release()
        await subject.drive(asyncio.gather(*tasks))
    assert order == [
        "low for 36 s",
        "critical",
        "normal for 16 s",
        "high for 2 s",
        "normal a",
        "normal b",
        "low for 6 s",
    ]


async def test_only_low_is_paced_when_nobody_waits(subject: Subject) -> None:
    # Nobody waits and the window has room: NORMAL bursts, LOW keeps one per token interval.
    budget = subject.make(limit=10, window=60.0, margin=0.0)  # interval 6 s
    for _ in range(3):
        await budget.acquire("ticker", Priority.NORMAL)
    assert budget.statistics().groups["ticker"].throttled == 0
    await budget.acquire("candles", Priority.LOW)  # nothing sent before it to pace it by
    low = asyncio.create_task(budget.acquire("candles", Priority.LOW))
    await wait_until(lambda: waiting(budget) == 1, 5.0, "the second LOW queued")
    assert not low.done()
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)
    assert budget.statistics().groups["candles"].throttled == 1


@pytest.fixture
def on_test_clock(subject: Subject, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis decides on the test's clock too (see ``_redis_on_test_clock``)."""
    _redis_on_test_clock(subject, monkeypatch)


def _redis_on_test_clock(subject: Subject, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis's acquire and heartbeat scripts take ``now_us`` from the test's clock (the
    local budget runs on the fake clock anyway)."""
    if subject.space is None:
        return
    acquire, heartbeat = BudgetScripts.acquire, BudgetScripts.heartbeat

    def now_us() -> int:
        return round(subject.fake.clock() * 1_000_000)

    async def acquire_now(self: BudgetScripts, keys: BudgetKeys, **kwargs: Any) -> Any:
        return await acquire(self, keys, **{**kwargs, "now_us": now_us()})

    async def heartbeat_now(
        self: BudgetScripts, keys: BudgetKeys, ticket: str, ttl_s: float, **kwargs: Any
    ) -> tuple[int, int, int]:
        return await heartbeat(self, keys, ticket, ttl_s, **{**kwargs, "now_us": now_us()})

    monkeypatch.setattr(BudgetScripts, "acquire", acquire_now)
    monkeypatch.setattr(BudgetScripts, "heartbeat", heartbeat_now)


async def _low_keeps_the_reserve_and_critical_takes_it(subject: Subject, budget: Budget) -> None:
    """With the reserve kept (limit 3, a 3 s window, no urgent send in it since START):
    LOW sends at START and START + 1 s, and a third LOW at START + 2 s waits — its
    window's last slot frees only at START + 3 s, later than 5 ms away — while a CRITICAL
    request at START + 2 s takes that slot at once, ahead of the waiting LOW, on no time."""
    before = budget.statistics().groups["candles"].sent
    for at in (0.0, 1.0):
        subject.fake.now = START + at
        await budget.acquire("candles", Priority.LOW)
    subject.fake.now = START + 2.0
    low = asyncio.create_task(budget.acquire("candles", Priority.LOW))
    await wait_until(lambda: waiting(budget) == 1, 5.0, "LOW waits, keeping the reserve")
    await budget.acquire("candles", Priority.CRITICAL)
    stats = budget.statistics().groups["candles"]
    assert (stats.sent - before, stats.waiting["LOW"], low.done()) == (3, 1, False)
    assert subject.fake.now == START + 2.0
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)


async def test_low_keeps_the_reserve_after_urgent_work_was_seen_and_critical_takes_it(
    subject: Subject, on_test_clock: None
) -> None:
    budget = subject.make(limit=3, window=3.0, margin=0.0)  # one slot a second
    # A group where only LOW asks: LOW fills the whole window.
    for at in (0.0, 1.0, 2.0):
        subject.fake.now = START + at
        await budget.acquire("trade", Priority.LOW)
    assert budget.statistics().groups["trade"].sent == 3
    # A NORMAL request seen in the group (3 s before: out of the window, not of the hold) ...
    subject.fake.now = START - 3.0
    await budget.acquire("candles", Priority.NORMAL)
    # ... and LOW keeps the window's last slot for urgent work.
    await _low_keeps_the_reserve_and_critical_takes_it(subject, budget)


async def test_a_budget_that_expects_urgent_work_keeps_the_reserve_before_any_came(
    subject: Subject, on_test_clock: None
) -> None:
    budget = subject.make(limit=3, window=3.0, margin=0.0, expect_urgent=True)
    await _low_keeps_the_reserve_and_critical_takes_it(subject, budget)


async def _sends(subject: Subject, budget: Budget, *sends: tuple[float, Priority]) -> None:
    """Acquire one candles slot for each (seconds after START, priority) in turn, moving
    the clock to each by hand."""
    for at, priority in sends:
        subject.fake.now = START + at
        await budget.acquire("candles", priority)


async def test_an_urgent_send_spends_the_reserve_and_low_keeps_its_share(
    subject: Subject, on_test_clock: None
) -> None:
    budget = subject.make(limit=3, window=3.0, margin=0.0, expect_urgent=True)
    # The HIGH send holds the reserved slot: LOW still has two of the three, at once.
    await _sends(subject, budget, (0.0, Priority.HIGH), (1.0, Priority.LOW), (2.0, Priority.LOW))
    stats = budget.statistics().groups["candles"]
    assert (stats.sent, stats.throttled) == (3, 0)


async def test_a_request_that_goes_at_once_does_not_move_the_low_pacing(
    subject: Subject, on_test_clock: None
) -> None:
    budget = subject.make(limit=10, window=10.0, margin=0.0)  # a LOW slot per second
    # CRITICAL goes at once, out of LOW's schedule; the second LOW takes its slot, a second
    # after the first.
    await _sends(
        subject, budget, (0.0, Priority.LOW), (0.5, Priority.CRITICAL), (1.0, Priority.LOW)
    )
    stats = budget.statistics().groups["candles"]
    assert (stats.sent, stats.throttled) == (3, 0)


@pytest.mark.parametrize("expect_urgent", [False, True], ids=["alone", "urgent-may-come"])
async def test_low_catches_up_its_unused_slots_in_one_process_while_no_urgent_work_may_come(
    subject: Subject, on_test_clock: None, expect_urgent: bool
) -> None:
    # A LOW slot per second. A backfill sends its first page at START and its next ones at
    # START + 3.5, when the first has answered: its slots of START + 1, 2 and 3 went unused.
    budget = subject.make(limit=10, window=10.0, margin=0.0, expect_urgent=expect_urgent)
    await _sends(subject, budget, (0.0, Priority.LOW), (3.5, Priority.LOW))
    # In one process alone (no urgent work may come), the slots of START + 2 and 3 go at
    # once too, as the window allows; the next waits for START + 4. With urgent work to
    # come, and across processes (the Redis budget), pacing restarts from START + 3.5 (the
    # Redis script catches up a quarter interval): nothing more goes at once.
    caught_up = 2 if subject.space is None and not expect_urgent else 0
    for _ in range(caught_up):
        await budget.acquire("candles", Priority.LOW)
    assert budget.statistics().groups["candles"].sent == 2 + caught_up
    late = asyncio.create_task(budget.acquire("candles", Priority.LOW))
    await wait_until(
        lambda: budget.statistics().groups["candles"].throttled == 1,
        5.0,
        "the next LOW refused a slot now",
    )
    if subject.space is None:  # on fake time: see when it goes
        await subject.drive(late)
        assert subject.fake.now - START == pytest.approx(4.5 if expect_urgent else 4.0)
    else:
        late.cancel()
        await asyncio.gather(late, return_exceptions=True)


async def _critical_behind_low(subject: Subject, budget: Budget, at: float) -> float:
    """A CRITICAL request at ``START + at`` while a LOW waits for its next paced slot;
    returns when (seconds after START) it was granted. On Redis the script refuses it with
    the wait left, and the test moves its clock to the window's slot by hand."""
    low = asyncio.create_task(budget.acquire("candles", Priority.LOW))
    await wait_until(lambda: waiting(budget) == 1, 5.0, "the next LOW waits for its slot")
    subject.fake.now = START + at
    critical = asyncio.create_task(budget.acquire("candles", Priority.CRITICAL))
    if subject.space is not None:
        await wait_until(
            lambda: budget.statistics().groups["candles"].throttled == 2, 5.0, "CRITICAL waits"
        )
        subject.fake.now = START + 3.0  # the window's oldest send leaves
    await subject.drive(critical)
    granted = subject.fake.now - START
    assert not low.done()  # the LOW keeps its own (later) slot
    low.cancel()
    await asyncio.gather(low, return_exceptions=True)
    return granted


@pytest.mark.parametrize(
    ("first", "last_low_at", "critical_at"),
    [
        # LOW keeps the reserve (limit 3: it holds 2 of a 3 s window unless one leaves within
        # 5 ms), so its third send goes at START + 2.996, 4 ms before the first leaves the
        # window. A CRITICAL request 2 ms later finds the window full for 2 ms more: it must
        # take the slot that frees at START + 3 s, not wait for the next paced slot (START +
        # 3.996, a whole token interval), which is what LOW's pacing would give it.
        pytest.param(Priority.LOW, 2.996, 2.998, id="right-after-low-took-its-last-slot"),
        # A HIGH send at START spent the window's reserve; LOW takes its two slots (the second
        # at START + 2.9). A CRITICAL request at START + 2.95 waits until the HIGH send leaves
        # the window (START + 3 s) — longer than 5 ms, since the reserve is spent — but no
        # longer: not until LOW's next paced slot (START + 3.9).
        pytest.param(Priority.HIGH, 2.9, 2.95, id="after-another-urgent-spent-the-reserve"),
    ],
)
async def test_critical_behind_low_waits_only_for_the_window(
    subject: Subject,
    on_test_clock: None,
    first: Priority,
    last_low_at: float,
    critical_at: float,
) -> None:
    budget = subject.make(limit=3, window=3.0, margin=0.0, expect_urgent=True)
    await _sends(subject, budget, (0.0, first), (1.0, Priority.LOW), (last_low_at, Priority.LOW))
    assert budget.statistics().groups["candles"].throttled == 0
    granted = await _critical_behind_low(subject, budget, critical_at)
    assert granted == pytest.approx(3.0)


async def test_the_reserve_lapses_when_no_urgent_request_came_for_the_hold(
    subject: Subject, on_test_clock: None
) -> None:
    budget = subject.make(limit=3, window=3.0, margin=0.0)
    await budget.acquire("candles", Priority.HIGH)
    hold = WAIT_ORDER.reserve_hold
    for at in (hold, hold + 1.0, hold + 2.0):  # the HIGH request is a hold ago: all of them
        subject.fake.now = START + at
        await budget.acquire("candles", Priority.LOW)
    assert budget.statistics().groups["candles"].sent == 4


async def test_low_keeps_the_reserve_for_another_process_that_expects_urgent_work(
    redis_space: RedisSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes on one Redis: the bot's has asked nothing yet, only entered (its
    # heartbeat says it expects urgent work); the backfill's LOW keeps the reserve for it.
    fake = FakeTime(START)
    subject = Subject("redis", fake, redis_space)
    _redis_on_test_clock(subject, monkeypatch)
    backfill = subject.make(limit=3, window=3.0, margin=0.0)
    bot = subject.make(limit=3, window=3.0, margin=0.0, expect_urgent=True)
    try:
        assert isinstance(bot, RedisRateBudget)
        await bot.__aenter__()
        for at in (0.0, 1.0):
            fake.now = START + at
            await backfill.acquire("candles", Priority.LOW)
        fake.now = START + 2.0
        low = asyncio.create_task(backfill.acquire("candles", Priority.LOW))
        await wait_until(lambda: waiting(backfill) == 1, 5.0, "LOW waits, keeping the reserve")
        await bot.acquire("candles", Priority.CRITICAL)
        assert (low.done(), bot.statistics().groups["candles"].throttled) == (False, 0)
        low.cancel()
        await asyncio.gather(low, return_exceptions=True)
    finally:
        for budget in subject.made:
            assert isinstance(budget, RedisRateBudget)
            await budget.aclose()


# -- when a send counts --------------------------------------------------------------------


def _learn_jitter(subject: Subject, budget: Budget) -> None:
    """Twenty replies before START, round trips of 30 ms and two of 80 ms: the fastest is
    30 ms and the spread 50 ms, the margin a send in flight is counted with."""
    for i in range(20):
        sent_at = START - 10.0 + i * 0.1
        subject.fake.now = sent_at + (0.08 if i % 10 == 0 else 0.03)
        budget.observe("candles", None, sent_at=sent_at)


async def _one_per_window_with_jitter_learnt(subject: Subject) -> Budget:
    """One send per 1 s window (no floor), after ``_learn_jitter``; a send granted at START."""
    budget = subject.make(limit=1, window=1.0, margin=0.0)
    _learn_jitter(subject, budget)
    subject.fake.now = START
    await budget.acquire("candles")
    assert budget.statistics().groups["candles"].margin == pytest.approx(0.05)
    return budget


async def _waits_at(subject: Subject, budget: Budget, at: float) -> bool:
    """Whether a NORMAL request at ``START + at`` waits (it is cancelled if it does). The
    times the tests ask at are a millisecond off each edge: clear of float rounding."""
    subject.fake.now = START + at
    task = asyncio.create_task(budget.acquire("candles"))
    await wait_until(lambda: task.done() or waiting(budget) == 1, 5.0, "granted or waiting")
    if task.done():
        await task
        return False
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return True


@pytest.mark.parametrize(
    ("answered_after", "counted_late"),
    [
        # Its round trip was the fastest: it reached upstream by its grant plus nothing
        # more, so the window it was counted in ends a window after it, whatever the
        # margin learnt.
        pytest.param(0.03, 0.0, id="answered-on-time"),
        # Its round trip was 70 ms beyond the fastest, more than the margin (50 ms): it is
        # counted 70 ms late (in flight it was counted 50 ms late).
        pytest.param(0.1, 0.07, id="answered-late"),
        # No reply yet: it may arrive as late as the spread of the round trips says.
        pytest.param(None, 0.05, id="in-flight"),
    ],
)
async def test_a_send_counts_at_the_latest_it_may_have_arrived(
    subject: Subject, on_test_clock: None, answered_after: float | None, counted_late: float
) -> None:
    budget = await _one_per_window_with_jitter_learnt(subject)
    if answered_after is not None:
        subject.fake.now = START + answered_after
        budget.observe("candles", None, sent_at=START)
    if counted_late:
        assert await _waits_at(subject, budget, 1.001)
    assert await _waits_at(subject, budget, 0.999 + counted_late)
    assert not await _waits_at(subject, budget, 1.001 + counted_late)


# -- the policy itself ---------------------------------------------------------------------


@dataclass(frozen=True)
class Waiter:
    priority: Priority
    since: float
    seq: int


def test_levels_rise_one_per_age_step_up_to_critical() -> None:
    order = WaitOrder(age_step=10.0)
    assert [order.level(Priority.LOW, w) for w in (0, 9.99, 10, 20, 30, 1e6)] == [
        Priority.LOW,
        Priority.LOW,
        Priority.NORMAL,
        Priority.HIGH,
        Priority.CRITICAL,
        Priority.CRITICAL,
    ]
    assert order.level(Priority.HIGH, -5.0) == Priority.HIGH  # a clock step back ages nothing
    assert WAIT_ORDER.age_step == DEFAULT_AGE_STEP == 10.0
    assert WaitOrder.may_burst(Priority.NORMAL) and not WaitOrder.may_burst(Priority.LOW)


def test_who_goes_ahead_and_who_keeps_the_reserve() -> None:
    order = WaitOrder()
    assert order.goes_ahead(Priority.LOW, None) and order.goes_ahead(Priority.HIGH, None)
    assert order.goes_ahead(Priority.CRITICAL, Priority.HIGH)
    assert not order.goes_ahead(Priority.HIGH, Priority.HIGH)  # behind its equals, FIFO
    assert not order.goes_ahead(Priority.LOW, Priority.LOW)  # LOW never skips a queue
    assert (order.reserve, order.reserve_wait, order.reserve_hold) == (1, 0.005, 60.0)
    assert order.keeps_reserve(Priority.LOW, 10, since_urgent=59.9)
    assert not order.keeps_reserve(Priority.LOW, 10, since_urgent=60.0)  # none came lately
    assert not order.keeps_reserve(Priority.NORMAL, 10, since_urgent=0.0)  # aged LOW too
    assert not order.keeps_reserve(Priority.LOW, 1, since_urgent=0.0)  # no slot to spare
    assert not WaitOrder(reserve=0).keeps_reserve(Priority.LOW, 10, since_urgent=0.0)


def test_low_is_served_once_it_has_waited_three_steps_under_endless_critical_demand() -> None:
    # One grant per 0.1 s; a new CRITICAL request arrives with each, so five always wait.
    order = WaitOrder(age_step=10.0)
    seq = iter(range(10**6))
    now = 0.0
    low = Waiter(Priority.LOW, now, next(seq))
    queue: list[Waiter] = [low, *(Waiter(Priority.CRITICAL, now, next(seq)) for _ in range(5))]
    while True:
        now += 0.1
        best = order.first(queue, now)
        assert best is not None
        queue.remove(best)
        if best is low:
            break
        queue.append(Waiter(Priority.CRITICAL, now, next(seq)))
    assert 30.0 <= now <= 30.0 + 0.1 + 1e-9, now
    assert order.first([], now) is None
