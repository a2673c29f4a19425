"""RedisRateBudget: several budgets (as several processes would) sharing the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any, cast

import pytest
from helpers import wait_until
from redis.asyncio import Redis
from services import PrivateRedis, RedisSpace

from marketspine._budget.local import MAX_MARGIN
from marketspine._budget.redis import RedisRateBudget
from marketspine._budget.redis_lua import BudgetKeys
from marketspine._budget.rules import Priority

WINDOW = 0.25  # a short window keeps these tests fast; the rules do not depend on it
MARGIN = 0.02
SPAN = WINDOW + MARGIN


def budget(space: RedisSpace, **kwargs: object) -> RedisRateBudget:
    return RedisRateBudget(
        space.url,
        prefix=space.prefix,
        scope="ip",
        window=WINDOW,
        margin=MARGIN,
        **kwargs,  # type: ignore[arg-type]
    )


Scored = list[tuple[bytes, float]]  # a sorted set read with its scores


async def booked_sends(space: RedisSpace, group: str = "candles") -> list[float]:
    """Send times (s, Redis clock) as Redis booked them for the group."""
    client = Redis.from_url(space.url)
    try:
        keys = BudgetKeys.of(space.prefix, "ip", group)
        # withscores=True: (member, score) pairs, which redis-py's return type does not say.
        rows = cast(Scored, await client.zrange(keys.sends, 0, -1, withscores=True))
    finally:
        await client.aclose()
    return sorted(score / 1e6 for _, score in rows)


def assert_each_send_booked_once(sends: list[float], *, blind: int, after: int) -> None:
    """``sends`` (a group's booked times) hold one recovery's rest of the window (the most
    common time: slots counted as sent at the recovery's instant, 10 less the blind sends
    within a span) and each send once: ``blind`` made before Redis came back (one may have
    aged out of the three spans a recovery books, when the window is then whole) and
    ``after`` since."""
    rest_at, rest = Counter(sends).most_common(1)[0]
    own = [round(t - sends[0], 3) for t in sends if t != rest_at]
    report = f"rest of the window {rest} at {rest_at - sends[0]:.3f}, own sends at {own}"
    assert 10 - blind <= rest <= 10, report
    kept = len(own) - after
    assert kept == blind or (kept == blind - 1 and rest == 10), report


async def back_but_paused(a: RedisRateBudget, server: PrivateRedis, pause_s: float) -> None:
    """One send shared, Redis lost, one blind send, then Redis back (empty) but holding every
    command for ``pause_s`` (CLIENT PAUSE), so the recovery that follows waits on it."""
    await a.acquire("candles")
    server.stop()
    await a.acquire("candles", Priority.LOW)  # blind from here: 1 send
    server.start()
    pauser = Redis.from_url(server.url)
    try:
        await pauser.client_pause(round(pause_s * 1000), all=True)
    finally:
        await pauser.aclose()


def max_in_any_span(times: list[float], span: float) -> int:
    best = 0
    for i, t in enumerate(times):
        best = max(best, sum(1 for u in times[i:] if u - t < span))
    return best


async def test_two_processes_share_one_ceiling(redis_space: RedisSpace) -> None:
    async with budget(redis_space) as a, budget(redis_space) as b:
        await asyncio.gather(
            *(x.acquire("candles", Priority.LOW) for x in (a, b) for _ in range(15))
        )
    sends = await booked_sends(redis_space)
    assert len(sends) == 30
    assert max_in_any_span(sends, SPAN) <= 10  # never over the ceiling, together
    assert a.statistics().groups["candles"].sent == b.statistics().groups["candles"].sent == 15


async def test_low_elsewhere_never_takes_a_critical_requests_slot(
    redis_space: RedisSpace,
) -> None:
    order: list[str] = []
    saturated = asyncio.Event()

    async def take(x: RedisRateBudget, name: str, priority: Priority) -> None:
        await x.acquire("candles", priority)
        order.append(name)
        if len(order) == 12:
            saturated.set()

    async with budget(redis_space) as a, budget(redis_space) as b:
        # b registers first (its first acquisition beats every group, five round trips,
        # which under load outlast a token interval): the CRITICAL request below is one ask.
        await b.acquire("ticker")
        flood = [asyncio.create_task(take(a, f"low{i}", Priority.LOW)) for i in range(25)]
        async with asyncio.timeout(5):
            await saturated.wait()  # the window is full, LOW is paced
        before = len(order)
        await take(b, "critical", Priority.CRITICAL)
        await asyncio.gather(*flood)
    # The CRITICAL request took the next free slot or the one after (one LOW may have been
    # granted while its ask was in flight), never waiting behind the LOW queue.
    assert order.index("critical") <= before + 1


async def test_a_penalty_seen_by_one_process_pauses_the_others(redis_space: RedisSpace) -> None:
    keys = BudgetKeys.of(redis_space.prefix, "ip", "candles")
    client = Redis.from_url(redis_space.url)
    async with budget(redis_space) as a, budget(redis_space) as b:
        await b.acquire("candles")  # b can send
        a.penalize("candles", 0.5)  # a 429/418 seen by a
        said = time.monotonic()
        retry = asyncio.create_task(a.acquire("candles"))  # a's retry carries it to Redis
        while await client.hget(keys.state, "blocked") is None:
            assert time.monotonic() - said < 2, "the penalty never reached Redis"
            await asyncio.sleep(0.002)
        await b.acquire("candles", Priority.CRITICAL)
        # b, which never saw the 429, still waited out the block.
        assert time.monotonic() - said >= 0.45
        await retry
    await client.aclose()


@pytest.mark.process
async def test_unreachable_redis_falls_back_to_a_share_and_recovers(
    private_redis: PrivateRedis,
) -> None:
    space = RedisSpace(private_redis.url, "fb:")
    async with budget(space, fallback_share=0.5, retry_every_s=0.05) as a:
        await a.acquire("candles")
        assert a.shared
        private_redis.stop()
        started = time.monotonic()
        for _ in range(8):
            await a.acquire("candles", Priority.LOW)
        blind = time.monotonic() - started
        assert not a.shared
        # 5 per span while blind (half the ceiling): 8 sends need more than one span.
        assert blind > SPAN
        private_redis.start()  # an empty Redis, as after a restart
        deadline = time.monotonic() + 5
        while not a.shared:
            assert time.monotonic() < deadline, "the budget never went back to Redis"
            await a.acquire("candles", Priority.LOW)
        # The sends made blind within the last spans were booked, so the window counts them.
        assert len(await booked_sends(space)) >= 2


@pytest.mark.process
async def test_a_budget_whose_redis_is_down_from_the_start_still_works(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    private_redis.stop()
    space = RedisSpace(private_redis.url, "down:")
    async with budget(space, fallback_share=0.5, retry_every_s=10) as a:
        for _ in range(5):
            await a.acquire("candles")
        assert not a.shared
        assert a.statistics().groups["candles"].sent == 5
    # Nobody was counted: the warning says its number of processes is an assumption.
    (lost,) = [r.getMessage() for r in caplog.records if "Redis unreachable (" in r.getMessage()]
    assert "(2 processes assumed: Redis was never reached to count them)" in lost


async def test_the_margin_follows_round_trip_jitter_and_holds_for_every_process(
    redis_space: RedisSpace,
) -> None:
    # Same argument as LocalRateBudget's: upstream counts arrivals, so sends a span apart
    # land in one window when the first was delayed more. The margin widens to the spread
    # of the round trips this process sees, and Redis applies it to the other processes (to
    # their sends in flight: an answered send counts at its own lateness).
    clock = [100.0]
    jittery, calm = budget(redis_space, clock=lambda: clock[0]), budget(redis_space)
    async with jittery, calm:
        for i in range(50):
            sent_at = clock[0]
            clock[0] += 0.030 + (0.050 if i % 10 == 0 else 0.0)  # p99 - min = 50 ms
            jittery.observe("candles", 10, sent_at=sent_at)
        assert jittery.statistics().groups["candles"].margin == pytest.approx(MARGIN)
        await jittery.acquire("candles")
        assert jittery.statistics().groups["candles"].margin == pytest.approx(0.05)
        await calm.acquire("candles")  # it saw no jitter itself
        assert calm.statistics().groups["candles"].margin == pytest.approx(0.05)
    client = Redis.from_url(redis_space.url)
    try:
        state = await client.hgetall(BudgetKeys.of(redis_space.prefix, "ip", "candles").state)
    finally:
        await client.aclose()
    assert int(state[b"late"]) == round((0.05 - MARGIN) * 1e6)  # beyond the floor


async def moves(space: RedisSpace, group: str = "candles") -> list[float]:
    """How far (s) after its grant each send of the group counts in Redis, oldest first
    (a member is named after the time it was granted)."""
    client = Redis.from_url(space.url)
    try:
        sends = BudgetKeys.of(space.prefix, "ip", group).sends
        rows = cast(Scored, await client.zrange(sends, 0, -1, withscores=True))
    finally:
        await client.aclose()
    booked = sorted((int(member.split(b":")[0]), score) for member, score in rows)
    return [(score - at) / 1e6 for at, score in booked]


async def test_a_send_that_arrived_late_counts_when_it_arrived_for_every_process(
    redis_space: RedisSpace,
) -> None:
    # As in LocalRateBudget: the group's first request was held up 83 ms on its way, before
    # any margin was learnt; nine fast ones (2 ms round trips) followed. Once those show the
    # fastest round trip, the first send moves 81 ms later in Redis, where every process's
    # window counts it, without this process having to ask again.
    clock = [100.0]
    late = budget(redis_space, clock=lambda: clock[0])
    async with late:
        await late.acquire("candles")
        clock[0] += 0.083
        late.observe("candles", 9, sent_at=100.0)
        for used in range(2, 11):
            clock[0] += 0.001
            await late.acquire("candles")
            sent_at = clock[0]
            clock[0] += 0.002
            late.observe("candles", 10 - used, sent_at=sent_at)
        deadline = time.monotonic() + 5.0
        while (moved := await moves(redis_space))[0] == 0.0:
            assert time.monotonic() < deadline, "the late send was never moved"
            await asyncio.sleep(0.01)
    assert moved == pytest.approx([0.081] + [0.0] * 9, abs=2e-6)


async def test_a_grant_read_late_counts_from_when_it_was_asked_for(
    redis_space: RedisSpace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis grants a send, but the process reads the grant 300 ms later (its loop busy with
    # other work, or not scheduled on a loaded machine), so the send leaves 300 ms after
    # Redis counted it. Its round trip, timed from the send, shows nothing of that: the send
    # used to be moved back to its grant, and other processes sent a span after the grant,
    # while upstream's window still held it (the outage test's 429 before the kill).
    caplog.set_level(logging.INFO, logger="marketspine")
    clock = [100.0]
    late = budget(redis_space, clock=lambda: clock[0])
    async with late:
        asked = late._scripts.acquire  # the stall comes after Redis answered the ask

        async def read_late(*args: Any, **kwargs: Any) -> Any:
            reply = await asked(*args, **kwargs)
            clock[0] += 0.3
            return reply

        await late.acquire("candles")  # a prompt one: the fastest round trip is 2 ms
        sent_at = clock[0]
        clock[0] += 0.002
        late.observe("candles", 9, sent_at=sent_at)
        monkeypatch.setattr(late._scripts, "acquire", read_late)
        await late.acquire("candles")
        sent_at = clock[0]
        clock[0] += 0.002
        late.observe("candles", 8, sent_at=sent_at)
        deadline = time.monotonic() + 5.0
        while (moved := await moves(redis_space))[1] == 0.0:  # booked in flight at its grant
            assert time.monotonic() < deadline, "the send read late was never moved"
            await asyncio.sleep(0.01)
    assert moved == pytest.approx([0.0, 0.3], abs=2e-6)
    # Said once, the prompt one not: the others had counted it 300 ms early until then.
    told = [r.getMessage() for r in caplog.records if "later than booked" in r.getMessage()]
    assert len(told) == 1 and "counted 300 ms later than booked" in told[0], told


@pytest.mark.process
async def test_acquisitions_that_find_redis_back_together_recover_once(
    private_redis: PrivateRedis,
) -> None:
    # Several callers of one budget all try Redis again (here: at every call). The first
    # books the blind sends and sends what was said meanwhile; a second one at the same time
    # used to book them all again and send the same observation twice (IndexError).
    space = RedisSpace(private_redis.url, "race:")
    async with budget(space, fallback_share=0.5, retry_every_s=0.0) as a:
        await a.acquire("candles")
        private_redis.stop()
        a.observe("candles", 9)  # said while Redis is away: sent once it is back
        await a.acquire("candles", Priority.LOW)  # blind from here: 1 send
        assert not a.shared
        private_redis.start()  # empty
        await asyncio.gather(*(a.acquire("candles", Priority.LOW) for _ in range(3)))
        assert a.shared
    # One recovery: the blind send and the rest of the window counted as used, booked
    # together (the rest as sent at the recovery's instant), then the three acquisitions,
    # each once whichever way it went: the one that recovered, and the two that got their
    # blind slot while it did (on a loaded machine, before its booking had come back; such
    # sends used to go unbooked, 11 or 12 in all: the next test) or after it, then booked in
    # Redis: 13. The first blind send may have left the window before the recovery
    # (then beside a whole window: 14) or even the three spans a recovery books (not booked:
    # 13 again). Booked twice, the rest of the window would stand at two instants.
    assert_each_send_booked_once(await booked_sends(space), blind=1, after=3)


@pytest.mark.process
async def test_sends_that_go_blind_while_the_recovery_books_are_booked_too(
    private_redis: PrivateRedis,
) -> None:
    # Redis is back but holds the recovery's booking (CLIENT PAUSE): the two acquisitions
    # beside the one recovering get their blind slots meanwhile (LOW, paced a fifth of a
    # span apart at a share of 5). Listed as blind sends after the recovery had taken the
    # list, they were cleared with it: no other process would have seen them.
    space = RedisSpace(private_redis.url, "paused:")
    pause_s = 0.6  # well past two blind slots, well within the three spans a recovery books
    async with budget(space, fallback_share=0.5, retry_every_s=0.0) as a:
        await back_but_paused(a, private_redis, pause_s)
        paused_at = time.monotonic()
        returned: list[float] = []

        async def one() -> None:
            await a.acquire("candles", Priority.LOW)
            returned.append(time.monotonic() - paused_at)

        await asyncio.gather(one(), one(), one())
        assert a.shared
    went_blind = [t for t in returned if t < pause_s]  # before Redis answered anything
    assert len(went_blind) == 2, f"acquisitions returned {returned} s into the pause"
    assert_each_send_booked_once(await booked_sends(space), blind=1, after=3)


@pytest.mark.process
async def test_a_first_request_of_another_group_during_a_recovery_is_answered(
    private_redis: PrivateRedis,
) -> None:
    # The recovery books group by group, waiting on Redis for each (held here by CLIENT
    # PAUSE); a group's first acquisition meanwhile adds the group. The recovery used to
    # fail then ("dictionary changed size during iteration"), and its acquisition with it.
    space = RedisSpace(private_redis.url, "newgroup:")
    async with budget(space, fallback_share=0.5, retry_every_s=0.0) as a:
        await back_but_paused(a, private_redis, 0.3)
        await asyncio.gather(a.acquire("candles"), a.acquire("ticker"))
        assert a.shared
    assert_each_send_booked_once(await booked_sends(space), blind=1, after=1)


@pytest.mark.process
async def test_a_blind_slot_that_finds_redis_back_and_lost_again_waits_to_go_blind_afresh(
    private_redis: PrivateRedis,
) -> None:
    # An acquisition waits for its blind slot; Redis comes back (recovered by another) and is
    # lost again before the slot comes. The slot, given before, knows nothing of what Redis
    # granted the others meanwhile: like every start of blind sending, the send must wait a
    # window and the widest margin after the loss was found (it used to go at once).
    space = RedisSpace(private_redis.url, "flap:")
    a = RedisRateBudget(
        space.url,
        prefix=space.prefix,
        scope="ip",
        window=1.0,  # a slot a second apart leaves time to restart and stop Redis between
        margin=0.02,
        fallback_share=0.1,  # one blind send a window
        retry_every_s=0.0,
        heartbeat_every_s=30.0,  # no heartbeat finds the loss before the slot does
        heartbeat_ttl_s=60.0,
    )
    async with a:
        await a.acquire("candles")
        private_redis.stop()
        await a.acquire("candles", Priority.LOW)  # blind: the window's one send
        slot = asyncio.create_task(a.acquire("candles", Priority.LOW))  # the next window's
        await wait_until(
            lambda: a.statistics().groups["candles"].waiting["LOW"] == 1, 5, "a blind wait"
        )
        private_redis.start()
        other = asyncio.create_task(a.acquire("candles", Priority.LOW))  # recovers
        await wait_until(lambda: a.shared, 5, "the recovery")
        private_redis.stop()
        lost_at = time.monotonic()
        assert not slot.done(), "the blind slot came before Redis was lost again"
        await slot
        waited = time.monotonic() - lost_at
        other.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await other
    assert not a.shared
    assert waited >= 1.0 + MAX_MARGIN - 0.02, f"went {waited:.3f} s after Redis was lost again"
