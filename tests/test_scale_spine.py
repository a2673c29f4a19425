"""Spine(db="postgresql://...", redis="redis://..."): two Spines as two processes would be."""

from __future__ import annotations

import httpx
from services import PgSpace, RedisSpace
from test_spine import rest_range, sim_requests

from marketspine._redis_budget import RedisRateBudget
from marketspine._spine import Spine
from marketspine._time import parse_time
from marketspine.sim import SimConfig, create_app


async def test_a_second_spine_reads_what_the_first_stored_in_postgresql(
    pg_space: PgSpace, redis_space: RedisSpace
) -> None:
    app = create_app(SimConfig(seed=3, rate_limit=0))
    since, until = parse_time("2025-03-01"), parse_time("2025-03-04T07:00:00")

    def spine() -> Spine:
        return Spine(
            "http://sim",
            pg_space.url,
            redis=redis_space.url,
            transport=httpx.ASGITransport(app=app),
        )

    async with spine() as first:
        got = await first.candles("KRW-BTC", "1h", start=since, end=until)
        assert list(got) == await rest_range(app, "KRW-BTC", "1h", since, until)
        assert got.meta.upstream_calls == 1
        budget = first.client.statistics().budget.groups["candles"]
        assert budget.sent == 1
    before = await sim_requests(app)
    async with spine() as second:
        again = await second.candles("KRW-BTC", "1h", start=since, end=until)
        assert list(again) == list(got)
        assert again.meta.upstream_calls == 0 and again.meta.source == "database"
        assert isinstance(second.client._budget, RedisRateBudget)
    assert await sim_requests(app) == before
