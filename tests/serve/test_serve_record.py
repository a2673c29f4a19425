"""``serve --record``: serve keeps the markets named into its own store with the recorder of
``marketspine record`` (a pair it streams stays watched when serve's clients let it go); two
serves on one Redis and one PostgreSQL database take turns (the recorder lease), and what
they stored together equals the simulator's trades, every field, none missing, none twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest
from helpers import afternoon_clock, wait_until
from recorded_truth import differences, simulated_trades
from services import PgSpace, RedisSpace

from marketspine._serve.app import create_service_app
from marketspine._serve.service import ServeService
from marketspine._spine.recording import RecordPlan, record_plan
from marketspine._store.postgres import PostgresStore
from marketspine._store.recording_store import recording_for
from marketspine.errors import InvalidRequestError
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


def test_the_record_flags_are_read_into_a_plan() -> None:
    assert record_plan("trade,ticker", "KRW-BTC, krw-eth", 1000) == RecordPlan(
        ["trade", "ticker"], ["KRW-BTC", "KRW-ETH"], None, 1000
    )
    assert record_plan("trade", "krw") == RecordPlan(["trade"], [], "KRW")
    assert record_plan("orderbook", "all") == RecordPlan(["orderbook"], ["all"])
    with pytest.raises(InvalidRequestError, match="--record must name some of"):
        record_plan("candle", "KRW")
    with pytest.raises(InvalidRequestError, match="--record-markets must name"):
        record_plan("trade", " , ")


async def test_two_serves_record_in_turns_into_one_database(
    running_sim: RunSim, pg_space: PgSpace, redis_space: RedisSpace
) -> None:
    config = SimConfig(speed=60, rate_limit=0)
    plan = RecordPlan(["trade"], ["KRW-BTC"])
    with running_sim(config, afternoon_clock(config.speed)) as base:

        def service() -> ServeService:
            return ServeService(
                base, pg_space.url, admin_token="t" * 32, redis=redis_space.url,
                redis_prefix=redis_space.prefix, warmup_every_s=-1, record=plan,
            )  # fmt: skip

        first, second = service(), service()
        for each in (first, second):
            create_service_app(each)  # its gateway and on-demand watching, around the recording
        async with first, second, PostgresStore(pg_space.url) as store:
            recording = recording_for(store)
            counted = 0

            async def writing(enough: int) -> bool:
                nonlocal counted
                counted = await recording.trade_count("KRW-BTC")
                return counted >= enough

            services = (first, second)
            await wait_until(
                lambda: any(s.recording is not None and s.recording.recording for s in services),
                60,
                "one serve recording",
            )
            holder = next(s for s in services if s.recording and s.recording.recording)
            other = second if holder is first else first
            assert other.recording is not None and not other.recording.recording
            # what the recording streams stays watched when serve's clients let it go
            assert holder.demand.in_use("trade", "KRW-BTC")
            assert not holder.demand.in_use("orderbook", "KRW-BTC")
            assert not other.demand.in_use("trade", "KRW-BTC")
            await wait_until_async(lambda: writing(30), 60, "trades recorded")
            await holder.aclose()  # its lease released: the other takes over at once
            held = counted
            await wait_until(
                lambda: other.recording is not None and other.recording.recording,
                60,
                "the other serve taking the recording over",
            )
            await wait_until_async(lambda: writing(held + 30), 60, "trades recorded on")
            await other.aclose()
            stored = await recording.trades("KRW-BTC", 0, 1 << 62)
            gaps = await recording.trade_gaps()
    assert gaps == []
    history = History(config.seed, markets=config.markets, region=config.region)
    truth = simulated_trades(history, "KRW-BTC", stored[0], stored[-1])
    assert differences(stored, truth) == []
    assert len(stored) == len(truth) > held
