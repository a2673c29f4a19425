"""The share of the ceiling a process keeps while Redis is lost: the number of processes
counted by their heartbeats in Redis, the share for that number, a process that never saw
Redis counting itself and one more, one that joined after another's last count sending
nothing until Redis is back, and the alerts when Redis is lost and back (logged, and through
the notifier to a loopback ``json://`` receiver)."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack

import pytest
from helpers import wait_until
from receiver import receiver
from redis.asyncio import Redis
from redis.exceptions import RedisError
from services import PrivateRedis, RedisSpace

from marketspine._budget.redis import RedisRateBudget
from marketspine._budget.redis_lua import BudgetKeys, BudgetScripts
from marketspine._budget.rules import NEVER_SEEN_PROCESSES, Priority, ProcessCount, share_of
from marketspine._spine.notify import attach_notify, detach_notify
from marketspine.errors import InvalidRequestError

WINDOW = 0.25
MARGIN = 0.02
SPAN = WINDOW + MARGIN
TTL = 1.0


def test_the_share_of_each_process_keeps_all_of_them_within_the_ceiling() -> None:
    assert [share_of(10, n) for n in (1, 2, 3, 4, 5, 6, 10)] == [10, 5, 3, 2, 2, 1, 1]
    for n in range(1, 11):
        assert n * share_of(10, n) <= 10
    assert share_of(10, 11) == 1  # below one request a window nobody can go: 11 > 10 then
    assert share_of(10, 0) == 10  # a count of none is a count of one (itself)


def test_the_count_goes_by_the_last_heartbeats_seen_and_holds_through_a_restart() -> None:
    count = ProcessCount()
    # Started while Redis is down: itself and one more.
    assert count.assumed(0.0) == NEVER_SEEN_PROCESSES == 2
    count.saw(3)
    count.saw(5)  # two more started
    assert count.assumed(1.0) == 5
    count.saw(4)  # one stopped, or its heartbeat lapsed
    assert count.lost(2.0) == 4  # Redis lost: the last number seen, never a fixed half
    assert count.assumed(100.0) == 4  # however long the outage lasts
    # Back on a restarted, empty Redis: only this process has registered again so far.
    count.back(100.0, settle_s=6.0)
    count.saw(1)
    assert count.assumed(103.0) == 4  # the others come back and register meanwhile
    assert count.lost(103.0) == 4  # lost again before they did: still the outage's number
    count.back(104.0, settle_s=6.0)
    count.saw(3)
    assert count.assumed(109.9) == 4
    assert count.assumed(110.0) == 3  # settled: what the heartbeats say
    count.saw(0)
    assert count.assumed(111.0) == 1  # never less than itself


def test_a_process_some_other_has_not_counted_sends_nothing_while_redis_is_lost() -> None:
    alone = ProcessCount()
    alone.saw(1)
    # Another may be about to join, or have started while Redis was down counting two:
    # never the whole ceiling.
    assert alone.lost(1.0) == NEVER_SEEN_PROCESSES
    joiner = ProcessCount()
    joiner.saw(2, unseen=1)  # the other's latest count is from before it joined
    assert joiner.assumed(0.0) == 2
    assert joiner.lost(1.0) == 0
    assert joiner.assumed(2.0) == 2  # still the number it saw (status, and a later floor)
    counted = ProcessCount()
    counted.saw(3, unseen=2)
    counted.saw(3, unseen=0)  # both others counted again since it joined
    assert counted.lost(1.0) == 3
    # Settling after an outage, every process joins a restarted Redis anew: the outage's
    # number, which they all counted, is the floor, and nobody holds back.
    counted.back(5.0, settle_s=6.0)
    counted.saw(1, unseen=1)
    assert counted.lost(6.0) == 3
    counted.back(20.0, settle_s=6.0)
    counted.saw(2, unseen=1)
    assert counted.lost(30.0) == 0  # settled: a newcomer's rule again


async def test_heartbeats_lapse_on_redis_clock(redis_space: RedisSpace) -> None:
    client = Redis.from_url(redis_space.url)
    scripts = BudgetScripts(client)
    key = BudgetKeys.of(redis_space.prefix, "ip", "candles")
    t0 = 1_000_000_000  # Redis microseconds, driven by hand
    try:

        async def beat(ticket: str, at_ms: int, applied_ms: int | None = None) -> tuple[int, int]:
            """(processes, others whose latest count taken in is from before ``ticket``
            joined), at ``at_ms`` after t0, ``applied_ms``: its latest reply read."""
            applied = None if applied_ms is None else t0 + applied_ms * 1000
            count, unseen, now = await scripts.heartbeat(
                key, ticket, TTL, applied_us=applied, now_us=t0 + at_ms * 1000
            )
            assert now == t0 + at_ms * 1000
            return count, unseen

        assert await beat("a", 0) == (1, 0)
        assert await beat("b", 100) == (2, 1)  # a's only count is from before b came
        assert await beat("a", 600, applied_ms=0) == (2, 0)  # renewed; it counted b at 600 ...
        assert await beat("b", 700) == (2, 1)  # ... but has not read that count yet
        assert await beat("a", 800, applied_ms=600) == (2, 0)  # now it has
        assert await beat("b", 900, applied_ms=100) == (2, 0)
        # b's heartbeat lapses (1 s after its last); a's renewals keep a.
        assert await beat("a", 1700, applied_ms=800) == (2, 0)
        assert await beat("a", 2000, applied_ms=1700) == (1, 0)
        assert await beat("c", 2100) == (2, 1)
        await scripts.leave(key, "c")  # a process that stops leaves at once
        assert await beat("a", 2200, applied_ms=2000) == (1, 0)
        # b comes back after its lapse: it joins anew, after a's latest count; what it read
        # before its lapse (900) tells nothing now.
        assert await beat("b", 2300, applied_ms=900) == (2, 1)
        # An ask registers as a heartbeat does.
        reply = await scripts.acquire(
            key,
            limit=10,
            span_s=SPAN,
            priority=Priority.LOW,
            next_priority=None,
            ticket="d",
            ticket_ttl_s=1.0,
            burst=False,
            process_ttl_s=TTL,
            now_us=t0 + 2_400_000,
        )
        assert (reply.processes, reply.unseen, reply.redis_now_us) == (3, 2, t0 + 2_400_000)
        assert await beat("a", 2500, applied_ms=2200) == (3, 0)  # a joined first of all
        assert await beat("a", 2600, applied_ms=2500) == (3, 0)  # a has counted b and d
        assert await beat("b", 2700, applied_ms=2300) == (3, 0)
        assert await beat("d", 2800, applied_ms=2400) == (3, 1)  # b's count is from 2300
    finally:
        await client.delete(*key.all())
        await client.aclose()


def test_heartbeat_settings_that_cannot_work_are_refused() -> None:
    for every, ttl in ((0.0, 5.0), (5.0, 5.0), (2.0, 1.0)):
        with pytest.raises(InvalidRequestError, match="heartbeat_every_s must be > 0 s"):
            RedisRateBudget("redis://127.0.0.1:1/0", heartbeat_every_s=every, heartbeat_ttl_s=ttl)


def budget(url: str, **kwargs: object) -> RedisRateBudget:
    return RedisRateBudget(
        url,
        prefix="share:",
        scope="ip",
        window=WINDOW,
        margin=MARGIN,
        retry_every_s=0.05,
        heartbeat_every_s=0.05,
        heartbeat_ttl_s=TTL,
        **kwargs,  # type: ignore[arg-type]
    )


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


@pytest.mark.process
async def test_processes_share_the_ceiling_by_their_number_while_redis_is_lost(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="marketspine")
    async with AsyncExitStack() as stack:
        three = [await stack.enter_async_context(budget(private_redis.url)) for _ in range(3)]
        for each in three:
            await each.acquire("candles")
        await wait_until(
            lambda: all(each.processes == 3 and each.counted_by_all for each in three),
            10,
            "three heartbeats seen, each process counted by the others",
        )
        private_redis.stop()
        lost_at = time.monotonic()
        # Each acquisition and each heartbeat notices; each budget tells it once.
        await asyncio.gather(*(each.acquire("candles") for each in three for _ in range(4)))
        assert time.monotonic() - lost_at >= SPAN  # Redis's window may have been full
        assert not any(each.shared for each in three)
        lost = events(caplog, "redis_lost")
        assert len(lost) == 3
        assert {(r.levelno, r.processes, r.share) for r in lost} == {  # type: ignore[attr-defined]
            (logging.WARNING, 3, 3)
        }
        # A process started while Redis is down counts itself and one more.
        late = await stack.enter_async_context(budget(private_redis.url))
        await late.acquire("candles")
        newcomer = events(caplog, "redis_lost")[3:]
        assert [(r.processes, r.share) for r in newcomer] == [(2, 5)]  # type: ignore[attr-defined]

        private_redis.start()  # empty, as after a restart
        await wait_until(
            lambda: all(each.shared for each in [*three, late]), 10, "every budget back on Redis"
        )
        back = events(caplog, "redis_back")
        assert len(back) == 4 and {r.levelno for r in back} == {logging.INFO}
        assert len(events(caplog, "redis_lost")) == 4  # nothing told twice
        # The outage's number holds until the others have registered again; then four.
        await wait_until(
            lambda: all(each.processes == 4 for each in [*three, late]), 10, "four heartbeats"
        )
        await late.aclose()  # a process that stops leaves the count at once
        await wait_until(
            lambda: all(each.processes == 3 for each in three), 10, "three heartbeats again"
        )


@pytest.mark.process
async def test_a_process_joined_after_anothers_last_count_sends_nothing_until_redis_is_back(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="marketspine")

    def quiet(heartbeat_every_s: float) -> RedisRateBudget:
        return RedisRateBudget(
            private_redis.url,
            prefix="share:",
            scope="ip",
            window=WINDOW,
            margin=MARGIN,
            retry_every_s=0.05,
            heartbeat_every_s=heartbeat_every_s,
            heartbeat_ttl_s=60.0,
        )

    async with AsyncExitStack() as stack:
        # first counts itself alone when it registers and does not count again (no heartbeat
        # within the test, and its ask is in another group than the counting one); second
        # joins after that count: first's number lacks it.
        first = await stack.enter_async_context(quiet(heartbeat_every_s=30.0))
        second = await stack.enter_async_context(quiet(heartbeat_every_s=0.5))
        await first.acquire("candles")
        await second.acquire("candles")
        assert (first.processes, second.processes) == (1, 2)
        assert first.counted_by_all and not second.counted_by_all
        private_redis.stop()
        held = asyncio.create_task(second.acquire("candles"))
        # first keeps its share: ten blind sends in two windows ...
        await asyncio.gather(*(first.acquire("candles") for _ in range(10)))
        lost = sorted((r.processes, r.share) for r in events(caplog, "redis_lost"))  # type: ignore[attr-defined]
        assert lost == [(2, 0), (2, 5)]
        # ... and second, which first shares nothing with, sends nothing meanwhile.
        assert not held.done() and not second.shared
        message = next(r.getMessage() for r in events(caplog, "redis_lost") if r.share == 0)  # type: ignore[attr-defined]
        assert "sends nothing until it is back" in message
        private_redis.start()
        await asyncio.wait_for(held, 10)  # back on Redis, after the others' grace
        assert second.shared


async def what_answers(server: PrivateRedis) -> str:
    """Whether anything answers PING on a stopped server's port."""
    client = Redis.from_url(server.url, socket_timeout=1)
    try:
        await client.ping()
        return f"something answers PING on port {server.port}"
    except (RedisError, OSError) as exc:
        return f"nothing answers on port {server.port} ({exc})"
    finally:
        await client.aclose()


@pytest.mark.process
async def test_redis_lost_and_back_reach_the_notifier_once_per_change_per_minute(
    private_redis: PrivateRedis,
) -> None:
    now = [1000.0]
    with receiver() as got:
        notifier = attach_notify([got.url], clock=lambda: now[0])
        try:
            async with budget(private_redis.url) as one:
                await one.acquire("candles")
                for flap in (1, 2):  # Redis flaps twice within the minute
                    private_redis.stop()
                    await one.acquire("candles")
                    # Seen once: still shared. Was it another test's server on the port?
                    assert not one.shared, f"flap {flap}: {await what_answers(private_redis)}"
                    private_redis.start()
                    await wait_until(lambda: one.shared, 10, "the budget back on Redis")
                notifier.flush()
                first = got.wait_for(2)
                assert [(m["title"], m["type"]) for m in first] == [
                    ("marketspine: redis lost", "warning"),
                    ("marketspine: redis back", "info"),
                ]
                # Alone at its last count, but another may have come since: half.
                assert (
                    "5 of 10 requests per window (2 processes assumed, 1 last counted)"
                    in first[0]["message"]
                )
                assert "processes: 2" in first[0]["message"].splitlines()
                now[0] += 60.0  # the minute is over: the repeats, counted
                notifier.flush()
                later = got.wait_for(4)[2:]
                assert [m["title"] for m in later] == [
                    "marketspine: redis lost",
                    "marketspine: redis back",
                ]
                assert all("(2 times in 60 s)" in m["message"] for m in later)
        finally:
            detach_notify(notifier)
