"""serve on PostgreSQL with the rate budget shared through Redis (in-process, simulator)."""

from __future__ import annotations

import psycopg
from serve_support import in_process_serve, service_client
from services import PgSpace, RedisSpace
from starlette.applications import Starlette

from marketspine._budget.redis import RedisRateBudget


async def test_serve_stores_in_postgresql_and_spends_the_shared_budget(
    sim_app: Starlette, pg_space: PgSpace, redis_space: RedisSpace
) -> None:
    async with in_process_serve(
        sim_app, pg_space.url, redis=redis_space.url, redis_prefix=redis_space.prefix
    ) as service:
        async with service_client(service) as http:
            answer = await http.get(
                "/v1/candles/days",
                params={"market": "KRW-BTC", "count": 30, "to": "2026-07-01T00:00:00Z"},
            )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()) == 30
        assert isinstance(service.spine.client._budget, RedisRateBudget)
        assert service.spine.client.statistics().budget.groups["candles"].sent >= 1
    with psycopg.connect(pg_space.url) as conn:
        counted = conn.execute("SELECT COUNT(*) FROM candles").fetchone()
    assert counted is not None
    (rows,) = counted
    assert rows >= 30
