"""The budget's Lua scripts against the real Redis, on a clock the test drives by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from services import RedisSpace

from marketspine._budget.redis_lua import LATE_HOLD_S, AcquireReply, BudgetKeys, BudgetScripts
from marketspine._budget.rules import Priority

T0 = 1_800_000_000_000_000  # µs; large on purpose: Lua must keep every digit
SPAN = 1.02
INTERVAL_US = 102_000


@pytest.fixture
async def scripts(redis_space: RedisSpace) -> AsyncIterator[tuple[BudgetScripts, BudgetKeys]]:
    client = Redis.from_url(redis_space.url)
    try:
        yield BudgetScripts(client), BudgetKeys.of(redis_space.prefix, "ip", "candles")
    finally:
        await client.aclose()


async def ask(
    s: BudgetScripts,
    keys: BudgetKeys,
    now_us: int,
    *,
    priority: Priority = Priority.NORMAL,
    ticket: str = "a",
    burst: bool = True,
    limit: int = 10,
    next_priority: Priority | None = None,
) -> tuple[bool, float]:
    reply = await s.acquire(
        keys,
        limit=limit,
        span_s=SPAN,
        priority=priority,
        next_priority=next_priority,
        ticket=ticket,
        ticket_ttl_s=2.0,
        burst=burst,
        now_us=now_us,
    )
    assert reply.redis_now_us == now_us  # the clock the test drives, to the microsecond
    return reply.granted, reply.wait_s


async def test_any_span_holds_at_most_the_limit(
    scripts: tuple[BudgetScripts, BudgetKeys],
) -> None:
    s, keys = scripts
    grants = [await ask(s, keys, T0 + i) for i in range(10)]
    assert all(granted for granted, _ in grants)  # a burst when nobody waits
    granted, wait = await ask(s, keys, T0 + 50_000)
    assert not granted
    assert wait == pytest.approx(SPAN - 0.05, abs=1e-5)  # the oldest send leaves the span
    granted, _ = await ask(s, keys, T0 + 1_019_999)  # a microsecond short of a span
    assert not granted
    granted, _ = await ask(s, keys, T0 + 1_020_000)
    assert granted


async def test_queued_and_low_requests_are_paced(
    scripts: tuple[BudgetScripts, BudgetKeys],
) -> None:
    s, keys = scripts
    assert (await ask(s, keys, T0, priority=Priority.LOW))[0]
    granted, wait = await ask(s, keys, T0 + 1000, priority=Priority.LOW)
    assert not granted
    assert wait == pytest.approx((INTERVAL_US - 1000) / 1e6, abs=1e-5)
    granted, _ = await ask(s, keys, T0 + 5000, burst=False)  # a queued request is paced too
    assert not granted
    assert (await ask(s, keys, T0 + INTERVAL_US, burst=False))[0]


async def test_low_never_takes_the_slot_a_critical_waiter_elsewhere_needs(
    scripts: tuple[BudgetScripts, BudgetKeys],
) -> None:
    s, keys = scripts
    for i in range(10):
        assert (await ask(s, keys, T0 + i))[0]
    # Process B's CRITICAL request must wait for the window; it leaves its ticket.
    granted, _ = await ask(s, keys, T0 + 100, priority=Priority.CRITICAL, ticket="b")
    assert not granted
    # When the window has room, process A's LOW request is still refused: B goes first.
    later = T0 + 1_100_000
    granted, wait = await ask(s, keys, later, priority=Priority.LOW, ticket="a")
    assert not granted
    assert 0 < wait < 0.05  # ask again soon
    assert (await ask(s, keys, later + 10, priority=Priority.CRITICAL, ticket="b"))[0]
    assert (await ask(s, keys, later + 10 + INTERVAL_US, priority=Priority.LOW, ticket="a"))[0]


async def test_a_dead_waiters_ticket_expires(scripts: tuple[BudgetScripts, BudgetKeys]) -> None:
    s, keys = scripts
    for i in range(10):
        assert (await ask(s, keys, T0 + i))[0]
    assert not (await ask(s, keys, T0 + 100, priority=Priority.HIGH, ticket="dead"))[0]
    assert not (await ask(s, keys, T0 + 1_100_000, priority=Priority.LOW))[0]
    # "dead" never asks again: two seconds on, its ticket no longer holds anyone back.
    assert (await ask(s, keys, T0 + 2_100_001, priority=Priority.LOW))[0]


async def test_a_penalty_stops_every_process(scripts: tuple[BudgetScripts, BudgetKeys]) -> None:
    s, keys = scripts
    left = await s.penalize(keys, 60.0, now_us=T0)
    assert left == pytest.approx(60.0)
    assert await s.penalize(keys, 1.0, now_us=T0) == pytest.approx(60.0)  # the longer wins
    granted, wait = await ask(s, keys, T0 + 1_000_000, ticket="other", priority=Priority.CRITICAL)
    assert not granted
    assert wait == pytest.approx(59.0)
    assert (await ask(s, keys, T0 + 60_000_000, ticket="other"))[0]


async def test_remaining_req_books_sends_nobody_here_made(
    scripts: tuple[BudgetScripts, BudgetKeys],
) -> None:
    s, keys = scripts
    for i in range(3):
        assert (await ask(s, keys, T0 + i))[0]
    # Upstream says 2 left: 8 used, 3 of them ours -> 5 by hosts that do not share Redis.
    booked = await s.observe(
        keys, limit=10, span_s=SPAN, remaining=2, age_s=0.01, now_us=T0 + 20_000
    )
    assert booked == 5
    assert (
        await s.observe(keys, limit=10, span_s=SPAN, remaining=2, age_s=0.01, now_us=T0 + 20_000)
        == 0
    )
    for i in range(2):
        assert (await ask(s, keys, T0 + 30_000 + i))[0]
    assert not (await ask(s, keys, T0 + 40_000))[0]


async def test_sends_made_blind_are_booked_in_the_past(
    scripts: tuple[BudgetScripts, BudgetKeys],
) -> None:
    s, keys = scripts
    assert await s.book(keys, [0.5, 0.4, 0.3, 0.2, 0.1], now_us=T0) == 5
    for i in range(5):
        assert (await ask(s, keys, T0 + i))[0]
    granted, wait = await ask(s, keys, T0 + 10)
    assert not granted
    assert wait == pytest.approx(SPAN - 0.5 - 10e-6, abs=1e-5)  # the send booked 0.5 s ago


async def test_keys_expire_and_sit_under_the_prefix(
    redis_space: RedisSpace, scripts: tuple[BudgetScripts, BudgetKeys]
) -> None:
    s, keys = scripts
    assert (await ask(s, keys, T0, limit=1))[0]
    assert not (await ask(s, keys, T0 + 1, priority=Priority.HIGH, ticket="b", limit=1))[0]
    client = Redis.from_url(redis_space.url)
    try:
        names = {k.decode() async for k in client.scan_iter(match=f"{redis_space.prefix}*")}
        assert names and all(
            n.startswith(f"{redis_space.prefix}budget:{{ip:candles}}") for n in names
        )
        for name in names:
            assert 0 < await client.pttl(name) <= 60_000
    finally:
        await client.aclose()


async def test_the_widest_recent_in_flight_margin_applies_to_every_process(
    scripts: tuple[BudgetScripts, BudgetKeys],
) -> None:
    # Upstream counts arrivals: the process that sees 60 ms of round-trip jitter books its
    # sends 60 ms later while they are in flight, and the others' sends in flight must be
    # booked so too (they share the window); the window itself stays 1.02 s.
    s, keys = scripts

    async def acquire(now_us: int, late_s: float, ticket: str) -> AcquireReply:
        return await s.acquire(
            keys,
            limit=10,
            span_s=SPAN,
            late_s=late_s,
            priority=Priority.NORMAL,
            next_priority=None,
            ticket=ticket,
            ticket_ttl_s=2.0,
            burst=True,
            now_us=now_us,
        )

    first = await acquire(T0, 0.06, "jittery")
    assert first.granted and first.late_s == pytest.approx(0.06)
    assert first.score_us == T0 + 60_000
    for i in range(1, 10):
        calm = await acquire(T0 + i, 0.0, "calm")
        assert calm.granted and calm.score_us == T0 + i + 60_000  # the wider margin, in flight
    # By the grant the first send has left the window; in flight, it has not.
    refused = await acquire(T0 + 1_050_000, 0.0, "calm")
    assert not refused.granted and refused.late_s == pytest.approx(0.06)
    assert refused.wait_s == pytest.approx(0.03, abs=1e-5)
    # Answered on time, it counts at its grant: the slot is free at once.
    assert await s.move(keys, {first.member: (T0, first.score_us)}) == 1
    assert (await acquire(T0 + 1_050_000, 0.0, "calm")).granted
    # Once the jittery process has not asked for LATE_HOLD_S, the calm one's margin applies.
    later = await acquire(T0 + round(LATE_HOLD_S * 1e6) + 1, 0.0, "calm")
    assert later.granted and later.late_s == 0.0
    assert later.score_us == later.redis_now_us


async def test_a_move_takes_a_send_off_its_booking_either_way_then_only_later(
    redis_space: RedisSpace, scripts: tuple[BudgetScripts, BudgetKeys]
) -> None:
    s, keys = scripts
    booked = [
        await s.acquire(
            keys,
            limit=10,
            span_s=SPAN,
            late_s=0.05,
            priority=Priority.NORMAL,
            next_priority=None,
            ticket="a",
            ticket_ttl_s=2.0,
            burst=True,
            now_us=T0 + i,
        )
        for i in range(2)
    ]
    early, late = (reply.member for reply in booked)
    at_booking = booked[0].score_us
    client = Redis.from_url(redis_space.url)
    try:
        # Off its booking: earlier (answered on time) or later (held up beyond the margin).
        moves = {early: (T0 + 10_000, at_booking), late: (T0 + 1 + 80_000, booked[1].score_us)}
        assert await s.move(keys, moves) == 2
        assert await s.move(keys, moves) == 0  # sent twice: nothing more
        # Moved already: only later (a faster round trip seen since), never back earlier.
        assert await s.move(keys, {early: (T0 + 5_000, at_booking)}) == 0
        assert await s.move(keys, {early: (T0 + 20_000, at_booking)}) == 1
        assert await client.zscore(keys.sends, early) == T0 + 20_000
        assert await client.zscore(keys.sends, late) == T0 + 1 + 80_000
        # A send already trimmed stays trimmed.
        await client.zrem(keys.sends, early)
        assert await s.move(keys, {early: (T0 + 30_000, at_booking)}) == 0
        assert await client.zscore(keys.sends, early) is None
    finally:
        await client.aclose()
