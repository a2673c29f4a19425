"""The rate budget on fake time: window cap at the ceiling, priorities, aging, reconciliation."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import pytest
from helpers import FakeTime
from hypothesis import given, settings
from hypothesis import strategies as st

from marketspine._budget.local import DEFAULT_MARGIN, GROUPS, LocalRateBudget, group_of
from marketspine._budget.rules import Priority
from marketspine.errors import InvalidRequestError

T = TypeVar("T")


def make_budget(fake: FakeTime, **kwargs: Any) -> LocalRateBudget:
    return LocalRateBudget(clock=fake.clock, sleep=fake.sleep, **kwargs)


def assert_window_cap(times: list[float], limit: int, span: float) -> None:
    ordered = sorted(times)
    for first, last in zip(ordered, ordered[limit:], strict=False):
        assert last - first >= span - 1e-9, f"{limit + 1} sends within {last - first:.3f} s"


async def test_sends_at_once_up_to_the_limit_then_waits_a_window() -> None:
    fake = FakeTime()
    budget = make_budget(fake, margin=0.0)
    start = fake.now
    for _ in range(10):
        await budget.acquire("candles")
    assert fake.now == start
    await fake.run(budget.acquire("candles"))
    assert fake.now == pytest.approx(start + 1.0)


async def test_groups_are_independent() -> None:
    fake = FakeTime()
    budget = make_budget(fake)
    for group in GROUPS:
        for _ in range(10):
            await budget.acquire(group)
    assert fake.now == 1000.0
    assert all(s.tokens == 0 for s in budget.statistics().groups.values())


@pytest.mark.parametrize("start", [1000.0, 1000.5, 1000.999, 1000.0001])
async def test_many_concurrent_callers_never_exceed_the_window_and_reach_the_ceiling(
    start: float,
) -> None:
    fake = FakeTime(start)
    budget = make_budget(fake)  # default margin
    grants: list[float] = []

    async def worker(priority: Priority) -> None:
        for _ in range(10):
            await budget.acquire("candles", priority)
            grants.append(fake.now)

    async def all_workers() -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(20):
                tg.create_task(worker(list(Priority)[i % 4]))

    await fake.run(all_workers())
    assert len(grants) == 200
    assert_window_cap(grants, 10, 1.0 + 0.02)
    ordered = sorted(grants)
    sustained = (len(ordered) - 11) / (ordered[-1] - ordered[10])  # after the first burst
    assert sustained >= 9.5, sustained


async def test_the_simulators_fixed_second_limiter_never_says_429() -> None:
    from marketspine.sim._limits import RateLimiter

    fake = FakeTime(5000.93)  # bursts start just before a second boundary
    budget = make_budget(fake)
    limiter = RateLimiter(clock=fake.clock)
    verdicts: list[int] = []

    async def worker(priority: Priority) -> None:
        for _ in range(15):
            await budget.acquire("candles", priority)
            verdicts.append(limiter.check("client", "candles", 10).status)
            await fake.sleep(0.03)  # the request's round trip

    async def all_workers() -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(12):
                tg.create_task(worker(Priority.NORMAL if i % 2 else Priority.HIGH))

    await fake.run(all_workers())
    assert verdicts.count(200) == len(verdicts) == 180


async def test_a_plain_burst_then_refill_would_break_a_fixed_second() -> None:
    # Why the window cap exists: the naive bucket's pattern (10 at once, then 1 per 100 ms)
    # puts 19 requests into one calendar second; the budget never does.
    from marketspine.sim._limits import RateLimiter

    fake = FakeTime(7000.0)
    limiter = RateLimiter(clock=fake.clock)
    naive = [7000.0] * 10 + [7000.0 + 0.1 * k for k in range(1, 10)]
    statuses = []
    for t in naive:
        fake.now = t
        statuses.append(limiter.check("c", "candles", 10).status)
    assert 429 in statuses

    fake = FakeTime(7000.0)
    budget = make_budget(fake)
    grants: list[float] = []

    async def burst() -> None:
        async def one() -> None:
            await budget.acquire("candles")
            grants.append(fake.now)

        async with asyncio.TaskGroup() as tg:
            for _ in range(19):
                tg.create_task(one())

    await fake.run(burst())
    assert max(sum(1 for t in grants if int(t) == s) for s in {int(t) for t in grants}) <= 10


async def test_critical_waits_at_most_one_token_interval_behind_a_low_backfill() -> None:
    fake = FakeTime()
    budget = make_budget(fake)
    interval = (1.0 + DEFAULT_MARGIN) / 10
    low_sent = 0
    stop = False

    async def backfill() -> None:
        nonlocal low_sent
        while not stop:
            await budget.acquire("candles", Priority.LOW)
            low_sent += 1

    async def scenario() -> list[float]:
        nonlocal stop
        async with asyncio.TaskGroup() as tg:
            for _ in range(16):
                tg.create_task(backfill())
            waits = []
            for _ in range(20):
                await fake.sleep(0.737)  # arrive at odd moments
                asked = fake.now
                await budget.acquire("candles", Priority.CRITICAL)
                waits.append(fake.now - asked)
            stop = True
        return waits

    waits = await fake.run(scenario())
    assert low_sent > 100  # the backfill really saturated the group
    assert max(waits) <= interval + 1e-9, waits


async def test_low_is_not_starved_by_endless_critical_demand() -> None:
    fake = FakeTime()
    budget = make_budget(fake)
    stop = False
    low_granted_after: list[float] = []

    async def critical() -> None:
        while not stop:
            await budget.acquire("ticker", Priority.CRITICAL)

    async def low() -> None:
        await fake.sleep(1.0)  # join once the group is saturated
        asked = fake.now
        await budget.acquire("ticker", Priority.LOW)
        low_granted_after.append(fake.now - asked)

    async def scenario() -> None:
        nonlocal stop
        async with asyncio.TaskGroup() as tg:
            for _ in range(30):
                tg.create_task(critical())
            tg.create_task(low())
            await fake.run_until(lambda: bool(low_granted_after), 120.0)
            stop = True

    await fake.run(scenario())
    (waited,) = low_granted_after
    # Overtaken while younger than its slack (30 s); then only the CRITICAL requests that
    # were already queued (at most one per worker) go first.
    interval = (1.0 + DEFAULT_MARGIN) / 10
    assert 30.0 <= waited <= 30.0 + 31 * interval, waited


async def test_observe_believes_upstream_when_others_spend() -> None:
    fake = FakeTime()
    budget = make_budget(fake, margin=0.0)
    await budget.acquire("trade")
    sent_at = fake.now
    fake.now += 0.03
    budget.observe("trade", 2, sent_at=sent_at)  # upstream counted 8 requests, we sent 1
    stats = budget.statistics().groups["trade"]
    assert stats.external == 7
    assert stats.tokens == 2
    await budget.acquire("trade")
    await budget.acquire("trade")
    before = fake.now
    await fake.run(budget.acquire("trade"))
    # Ten sends (ours and the booked ones) sit in the window; the oldest frees the slot.
    assert fake.now == pytest.approx(sent_at + 1.0)
    assert fake.now > before


async def test_observe_books_nothing_when_upstream_counts_only_our_sends() -> None:
    from marketspine.sim._limits import RateLimiter

    fake = FakeTime(3000.6)
    budget = make_budget(fake)
    limiter = RateLimiter(clock=fake.clock)
    statuses: list[int] = []

    async def worker() -> None:
        for _ in range(10):
            await budget.acquire("candles")
            sent_at = fake.now
            verdict = limiter.check("me", "candles", 10)
            statuses.append(verdict.status)
            await fake.sleep(0.03)
            budget.observe("candles", verdict.remaining, sent_at=sent_at)

    async def all_workers() -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(8):
                tg.create_task(worker())

    await fake.run(all_workers())
    assert statuses == [200] * 80
    assert budget.statistics().groups["candles"].external == 0


async def test_observe_with_matching_count_books_nothing() -> None:
    fake = FakeTime()
    budget = make_budget(fake)
    for used in range(1, 11):
        sent_at = fake.now
        await budget.acquire("orderbook")
        fake.now += 0.02
        budget.observe("orderbook", 10 - used, sent_at=sent_at)
    assert budget.statistics().groups["orderbook"].external == 0


async def test_penalize_stops_the_group_for_that_long() -> None:
    fake = FakeTime()
    budget = make_budget(fake)
    budget.penalize("candles", 2.5)
    await budget.acquire("ticker")  # other groups are unaffected
    assert fake.now == 1000.0
    stats = budget.statistics().groups["candles"]
    assert stats.penalties == 1 and stats.blocked_for == pytest.approx(2.5)
    await fake.run(budget.acquire("candles"))
    assert fake.now == pytest.approx(1002.5)


async def test_penalty_arriving_while_waiting_is_respected() -> None:
    fake = FakeTime()
    budget = make_budget(fake, margin=0.0)
    for _ in range(10):
        await budget.acquire("candles")
    waiter = asyncio.ensure_future(budget.acquire("candles"))
    await fake.settle()
    budget.penalize("candles", 5.0)
    await fake.run(waiter)
    assert fake.now == pytest.approx(1005.0)


async def test_cancelled_waiters_leave_the_queue_and_others_are_served() -> None:
    fake = FakeTime()
    budget = make_budget(fake, margin=0.0)
    for _ in range(10):
        await budget.acquire("candles")
    first = asyncio.ensure_future(budget.acquire("candles"))  # the sleeper
    second = asyncio.ensure_future(budget.acquire("candles", Priority.LOW))
    third = asyncio.ensure_future(budget.acquire("candles"))
    await fake.settle()
    assert budget.statistics().groups["candles"].waiting["NORMAL"] == 2
    first.cancel()
    second.cancel()
    await fake.run(third)
    assert first.cancelled() and second.cancelled()
    stats = budget.statistics().groups["candles"]
    assert stats.sent == 11
    assert sum(stats.waiting.values()) == 0


async def test_statistics_count_waiting_by_priority_and_throttled() -> None:
    fake = FakeTime()
    budget = make_budget(fake)
    for _ in range(10):
        await budget.acquire("market")
        # A slot of the window frees at a time: each waiter goes at a moment of its own.
        await fake.run(fake.sleep(0.01))
    tasks = [asyncio.ensure_future(budget.acquire("market", p)) for p in Priority]
    await fake.settle()
    stats = budget.statistics().groups["market"]
    assert dict(stats.waiting) == {"LOW": 1, "NORMAL": 1, "HIGH": 1, "CRITICAL": 1}
    assert stats.throttled == 4 and stats.tokens == 0
    order: list[Priority] = []

    async def record(task: asyncio.Future[None], priority: Priority) -> None:
        await task
        order.append(priority)

    await fake.run(asyncio.gather(*(record(t, p) for t, p in zip(tasks, Priority, strict=True))))
    assert order == [Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW]


def test_group_of_paths() -> None:
    assert group_of("/v1/market/all") == "market"
    assert group_of("/v1/candles/minutes/1") == "candles"
    assert group_of("/v1/candles/days") == "candles"
    assert group_of("/v1/trades/ticks") == "trade"
    assert group_of("/v1/ticker") == group_of("/v1/ticker/all") == "ticker"
    assert group_of("/v1/orderbook") == group_of("/v1/orderbook/instruments") == "orderbook"
    with pytest.raises(InvalidRequestError, match="no rate-limit group"):
        group_of("/v1/accounts")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        LocalRateBudget(limit=0)
    with pytest.raises(InvalidRequestError):
        LocalRateBudget(window=0)


def test_priority_order() -> None:
    assert Priority.CRITICAL > Priority.HIGH > Priority.NORMAL > Priority.LOW


@settings(max_examples=100, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(
            # Clustered moments (bursts, window edges) as well as scattered ones.
            st.one_of(
                st.sampled_from([0.0, 0.5, 0.999, 1.0, 1.02, 2.04]),
                st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
            ),
            st.sampled_from(list(Priority)),
        ),
        min_size=1,
        max_size=60,
    ),
    start=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    penalty=st.one_of(st.none(), st.floats(min_value=0.0, max_value=2.0, allow_nan=False)),
)
def test_any_arrival_pattern_keeps_the_cap_and_serves_everyone(
    arrivals: list[tuple[float, Priority]], start: float, penalty: float | None
) -> None:
    async def scenario() -> tuple[list[float], float]:
        fake = FakeTime(2000.0 + start)
        budget = make_budget(fake)
        grants: list[float] = []
        penalty_end = 0.0

        async def one(delay: float, priority: Priority) -> None:
            await fake.sleep(delay)
            await budget.acquire("candles", priority)
            grants.append(fake.now)

        async def everyone() -> None:
            nonlocal penalty_end
            async with asyncio.TaskGroup() as tg:
                for delay, priority in arrivals:
                    tg.create_task(one(delay, priority))
                if penalty is not None:
                    await fake.sleep(1.0)
                    budget.penalize("candles", penalty)
                    penalty_end = fake.now + penalty

        await fake.run(everyone())
        return grants, penalty_end

    grants, penalty_end = asyncio.run(scenario())
    assert len(grants) == len(arrivals)
    assert_window_cap(grants, 10, 1.0 + DEFAULT_MARGIN)
    if penalty is not None:
        assert not [t for t in grants if penalty_end - penalty < t < penalty_end - 1e-9]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_no_429_when_arrivals_jitter_more_than_the_default_margin(seed: int) -> None:
    """Upstream counts a request when it *arrives*: grant + latency + jitter. Two grants a
    span apart may arrive closer than a second when the first was delayed more, so the
    window must widen by the jitter the budget sees in its round trips."""
    import random

    from marketspine.sim._limits import RateLimiter

    fake = FakeTime(6000.0)
    budget = make_budget(fake)  # default margin (20 ms), far below the 50 ms jitter
    limiter = RateLimiter(clock=fake.clock)
    rng = random.Random(seed)
    verdicts: list[int] = []

    async def request(priority: Priority) -> None:
        await budget.acquire("candles", priority)
        granted = fake.now
        await fake.sleep(0.030 + rng.uniform(0.0, 0.050))  # to upstream
        verdict = limiter.check("client", "candles", 10)
        verdicts.append(verdict.status)
        await fake.sleep(0.002)  # the answer's way back
        budget.observe("candles", verdict.remaining, sent_at=granted)

    async def worker(priority: Priority) -> None:
        for _ in range(150):
            await request(priority)

    async def all_workers() -> None:
        async with asyncio.TaskGroup() as tg:
            # Not LOW: beside NORMAL work, LOW leaves the window's last slot free (the
            # reserve), which would cost rate here for a reason other than the margin.
            for i in range(6):
                tg.create_task(worker(Priority.HIGH if i % 2 else Priority.NORMAL))

    await fake.run(all_workers(), max_seconds=10_000)
    assert len(verdicts) == 900
    assert verdicts.count(429) == 0
    rate = len(verdicts) / (fake.now - 6000.0)
    assert rate >= 9.3, rate  # the wider window costs at most the jitter's share
    assert budget.statistics().groups["candles"].margin >= 0.045


async def _one_late_arrival_then_a_full_window(start: float) -> tuple[list[int], list[float]]:
    """What serve's budget met in test_four_clients_at_full_speed_cause_no_429: the group's
    first request reached upstream 83 ms after it was granted (queued behind a slow reply at
    the server), the next ones within 1 ms. Returns upstream's verdicts and the grant times."""
    from marketspine.sim._limits import RateLimiter

    fake = FakeTime(start)
    budget = make_budget(fake)  # default margin: 20 ms
    limiter = RateLimiter(clock=fake.clock)
    verdicts: list[int] = []
    grants: list[float] = []

    async def request(to_upstream: float) -> None:
        await budget.acquire("candles")
        granted = fake.now
        grants.append(granted)
        await fake.sleep(to_upstream)
        verdict = limiter.check("serve", "candles", 10)
        verdicts.append(verdict.status)
        await fake.sleep(0.001)  # the answer's way back
        budget.observe("candles", verdict.remaining, sent_at=granted)

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(request(0.083))
            await fake.sleep(0.09)  # its answer is in before the others go
            for _ in range(10):
                tg.create_task(request(0.001))

    await fake.run(scenario())
    return verdicts, grants


async def test_one_request_delayed_beyond_the_margin_cannot_make_eleven_in_a_second() -> None:
    """Upstream counts a request when it arrives. A single early request delayed far beyond
    the margin (before the margin has samples to learn from, or as the outlier a quantile
    leaves out) must still keep the 11th request out of its second, at every phase of
    upstream's calendar second."""
    over: list[float] = []
    for step in range(200):
        start = 7000.0 + step * 0.005
        verdicts, grants = await _one_late_arrival_then_a_full_window(start)
        assert len(verdicts) == 11
        if 429 in verdicts:
            over.append(round(start % 1, 3))
        # The cost is the late request's own delay beyond the margin, once: the 11th goes
        # a window + margin after the first *arrived* (less the fastest round trip).
        assert max(grants) - start <= 1.0 + 0.02 + 0.083 + 0.001, max(grants) - start
    assert over == [], f"429 at phases {over}"


async def test_wake_ups_a_little_late_do_not_slow_a_paced_backfill_send_by_send() -> None:
    """Every sleep ends 1 ms late (timer granularity, a busy event loop). Pacing counts
    from the slot a send was due at, so the lateness is paid once per window (where the
    window cap, on real sends, decides), not once per send (1% of the rate at 10/s)."""
    fake = FakeTime(8000.0)

    async def late_sleep(seconds: float) -> None:
        await fake.sleep(seconds + 0.001)

    budget = LocalRateBudget(clock=fake.clock, sleep=late_sleep)
    grants: list[float] = []

    async def worker() -> None:
        for _ in range(10):
            await budget.acquire("candles", Priority.LOW)
            grants.append(fake.now)

    async def workers() -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(6):
                tg.create_task(worker())

    await fake.run(workers())
    span = 1.0 + DEFAULT_MARGIN
    assert_window_cap(grants, 10, span)
    # 59 paced intervals, and a late wake-up at most once per window of ten.
    assert max(grants) - min(grants) <= 59 * span / 10 + 6 * 0.001 + 1e-9, grants


async def _saturate_after_learning(
    fake: FakeTime, budget: LocalRateBudget, rtts: list[float], sends: int, answer: bool
) -> list[float]:
    """Teach ``budget`` the round trips ``rtts`` (one send each, answered), then send
    ``sends`` LOW requests back to back, each answered 30 ms later when ``answer`` (else
    never: they stay in flight). Returns the grant times of those sends."""
    for rtt in rtts:  # LOW: a NORMAL request would make LOW keep the reserve (another test)
        await fake.run(budget.acquire("candles", Priority.LOW))
        sent_at = fake.now
        await fake.run(fake.sleep(rtt))
        budget.observe("candles", None, sent_at=sent_at)
        await fake.run(fake.sleep(0.2))  # nothing of these is in the window afterwards
    await fake.run(fake.sleep(2.0))
    grants: list[float] = []

    async def request() -> None:
        await budget.acquire("candles", Priority.LOW)
        grants.append(sent_at := fake.now)
        if answer:
            await fake.sleep(0.030)
            budget.observe("candles", None, sent_at=sent_at)

    async def requests() -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(sends):
                tg.create_task(request())

    await fake.run(requests())
    return grants


async def test_an_answered_send_counts_its_own_lateness_not_the_spread_of_others() -> None:
    """Three round trips in a hundred took 60 ms more (a busy moment): the learnt spread is
    60 ms. Requests that came back fast proved they arrived on time, so the window counts
    them at their grant: the spread is not charged to every window."""
    fake = FakeTime(9000.0)
    budget = make_budget(fake)
    rtts = [0.090 if i % 34 == 0 else 0.030 for i in range(100)]
    grants = await _saturate_after_learning(fake, budget, rtts, 41, answer=True)
    assert budget.statistics().groups["candles"].margin == pytest.approx(0.060)
    span = 1.0 + DEFAULT_MARGIN
    assert_window_cap(grants, 10, span)
    assert max(grants) - min(grants) == pytest.approx(4 * span)  # not 4 * 1.060


async def test_a_send_still_in_flight_counts_at_the_spread_of_recent_round_trips() -> None:
    """Until its answer tells, a send may have arrived as late as the learnt spread says."""
    fake = FakeTime(9000.0)
    budget = make_budget(fake)
    rtts = [0.090 if i % 34 == 0 else 0.030 for i in range(100)]
    grants = await _saturate_after_learning(fake, budget, rtts, 11, answer=False)
    assert max(grants) - min(grants) == pytest.approx(1.0 + 0.060)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("jitter", [0.010, 0.050, 0.150])
async def test_a_far_backfill_under_jitter_both_ways_meets_no_429(seed: int, jitter: float) -> None:
    """One market's backfill 300 ms from upstream: six LOW pages in flight, each way of
    every round trip jittered. Counting each answered send at its own latest arrival (and a
    send in flight at the learnt spread) keeps every upstream second at 10, at any phase."""
    import random

    from marketspine.sim._limits import RateLimiter

    fake = FakeTime(10_000.0 + seed * 0.37)
    budget = make_budget(fake)
    limiter = RateLimiter(clock=fake.clock)
    rng = random.Random(seed)
    verdicts: list[int] = []

    async def request() -> None:
        await budget.acquire("candles", Priority.LOW)
        granted = fake.now
        await fake.sleep(0.150 + rng.uniform(0.0, jitter))  # to upstream
        verdict = limiter.check("client", "candles", 10)
        verdicts.append(verdict.status)
        await fake.sleep(0.150 + rng.uniform(0.0, jitter))  # the answer's way back
        budget.observe("candles", verdict.remaining, sent_at=granted)

    async def worker() -> None:
        for _ in range(100):
            await request()

    async def workers() -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(6):
                tg.create_task(worker())

    await fake.run(workers(), max_seconds=10_000)
    assert len(verdicts) == 600 and verdicts.count(429) == 0
    rate = len(verdicts) / (fake.now - 10_000.0 - seed * 0.37)
    # A window costs at most the floor and one round trip's whole spread (both ways).
    assert rate >= 10 / (1.0 + DEFAULT_MARGIN + 2 * jitter), rate


async def _urgent_behind_a_jittery_backfill(
    seed: int, jitter: float, stall_every: int
) -> tuple[list[float], list[int], float, float]:
    """A budget that expects urgent work (as the bot's in ``bench client``) under eight LOW
    callers, each round trip 30 ms plus up to ``jitter`` each way, and every
    ``stall_every``-th answer seen 100 ms late (a busy event loop: the send counts that much
    later). An urgent request arrives 1.2 s after the previous one's answer (its reserve is
    back) plus 0.7 ms more each time, so 150 of them sweep every phase of a token interval
    (0.102 s): right after a LOW send took the window's last unreserved slot, across the
    window's edge, while the margin is widened. Returns each urgent request's wait for the
    budget, upstream's verdicts and the backfill's rate while they came."""
    import random

    from marketspine.sim._limits import RateLimiter

    fake = FakeTime(20_000.0 + seed * 0.291)
    budget = make_budget(fake, expect_urgent=True)
    limiter = RateLimiter(clock=fake.clock)
    rng = random.Random(seed)
    verdicts: list[int] = []
    waits: list[float] = []
    low_sent = 0
    stop = False
    answers = 0

    async def request(priority: Priority) -> None:
        nonlocal answers
        asked = fake.now
        await budget.acquire("candles", priority)
        granted = fake.now
        if priority > Priority.LOW:
            waits.append(granted - asked)
        await fake.sleep(0.015 + rng.uniform(0.0, jitter))  # to upstream
        verdict = limiter.check("client", "candles", 10)
        verdicts.append(verdict.status)
        answers += 1
        stalled = priority == Priority.LOW and answers % stall_every == 0
        await fake.sleep(0.015 + rng.uniform(0.0, jitter) + (0.100 if stalled else 0.0))
        budget.observe("candles", verdict.remaining, sent_at=granted)

    async def backfill() -> None:
        nonlocal low_sent
        while not stop:
            await request(Priority.LOW)
            low_sent += 1

    async def scenario() -> float:
        nonlocal stop
        async with asyncio.TaskGroup() as tg:
            for _ in range(8):
                tg.create_task(backfill())
            await fake.sleep(2.0)  # the backfill fills the group, the margin learns
            started, low_before = fake.now, low_sent
            for k in range(150):
                await fake.sleep(1.2 + 0.0007 * k)
                await request(Priority.CRITICAL if k % 2 else Priority.HIGH)
            rate = (low_sent - low_before) / (fake.now - started)
            stop = True
        return rate

    low_rate = await fake.run(scenario(), max_seconds=10_000)
    return waits, verdicts, low_rate, budget.statistics().groups["candles"].margin


@pytest.mark.parametrize(
    ("seed", "jitter", "stall_every"), [(1, 0.0, 10**9), (2, 0.003, 40), (3, 0.025, 15)]
)
async def test_an_urgent_request_behind_a_saturating_backfill_waits_at_most_the_reserve_wait(
    seed: int, jitter: float, stall_every: int
) -> None:
    from marketspine._budget.rules import WAIT_ORDER

    waits, verdicts, low_rate, margin = await _urgent_behind_a_jittery_backfill(
        seed, jitter, stall_every
    )
    assert verdicts.count(429) == 0
    late = [(k, round(w * 1000, 2)) for k, w in enumerate(waits) if w > WAIT_ORDER.reserve_wait]
    assert not late, late  # (index, ms): each was ~100 ms, the next paced slot, before
    # The backfill keeps 90% of what the budget allows with the margin it learnt (9.8/s
    # without jitter): the reserve costs it one slot a window, the urgent sends none.
    assert low_rate >= 0.9 * 10 / (1.0 + margin), (low_rate, margin)
