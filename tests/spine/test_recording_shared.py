"""``record(..., lease=...)`` (``record --redis``): a holder whose lease was taken from it
unnoticed (as after a long pause) has its next write refused by the database and stands by;
the new holder continues from the last stored trade, and the recording equals the
simulator's trades, none missing, none twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from recorded_truth import differences, simulated_trades
from redis.asyncio import Redis
from services import RedisSpace

from marketspine import Spine
from marketspine._live.recorder_lease import RecorderLease
from marketspine._spine.recording import record
from marketspine._store.recording_store import recording_for
from marketspine.sim import History, SimConfig

RunSim = Callable[..., contextlib.AbstractContextManager[str]]


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]], within_s: float, what: str
) -> None:
    """``wait_until`` for a condition that asks the database."""
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_holder_that_lost_its_lease_unnoticed_is_fenced_off(
    running_sim: RunSim,
    redis_space: RedisSpace,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = SimConfig(speed=60, rate_limit=0)
    db = tmp_path / "rec.sqlite"
    space = redis_space

    def lease(poll_s: float) -> RecorderLease:
        return RecorderLease(space.url, "db", prefix=space.prefix, lease_s=60, poll_s=poll_s)

    caplog.set_level(logging.WARNING, logger="marketspine.record")
    with running_sim(config) as base:
        async with (
            Spine(base, db=db) as spine_a,
            Spine(base, db=db) as spine_b,
            lease(30.0) as lease_a,  # renews too seldom to notice the theft in this test
            lease(0.05) as lease_b,
            Redis.from_url(space.url) as redis,
            asyncio.TaskGroup() as group,
        ):
            recording = recording_for(spine_a.store)
            stop_a, stop_b = asyncio.Event(), asyncio.Event()
            a = group.create_task(
                record(spine_a, ["KRW-BTC"], kinds=["trade"], stop=stop_a, lease=lease_a)
            )
            counted = 0

            async def stored(enough: int) -> bool:
                nonlocal counted
                counted = await recording.trade_count("KRW-BTC")
                return counted >= enough

            await wait_until_async(lambda: stored(30), 60, "the first holder recording")
            b = group.create_task(
                record(spine_b, ["KRW-BTC"], kinds=["trade"], stop=stop_b, lease=lease_b)
            )
            await redis.delete(f"{space.prefix}record:{{db}}:lease")  # the lease lapses unseen

            async def refused() -> bool:
                return "may not write any more" in caplog.text

            await wait_until_async(refused, 60, "the old holder's write refused")
            held = counted
            await wait_until_async(lambda: stored(held + 30), 60, "the new holder recording")
            stop_a.set()
            stop_b.set()
            summary_a, summary_b = await a, await b
            trades = await recording.trades("KRW-BTC", 0, 1 << 62)
    assert lease_a.takeovers == 1 and lease_b.takeovers == 1
    assert summary_a.gaps == [] and summary_b.gaps == [] and summary_b.counts.trades > 0
    history = History(config.seed, markets=config.markets, region=config.region)
    truth = simulated_trades(history, "KRW-BTC", trades[0], trades[-1])
    assert differences(trades, truth) == []
    assert len(trades) == len(truth) > held
