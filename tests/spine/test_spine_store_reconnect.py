"""A Spine on PostgreSQL whose connection the server terminated answers the next read from
the database as if nothing happened (serve used to answer that request 500)."""

from __future__ import annotations

import uuid

import httpx
import psycopg
from services import PgSpace
from test_spine import rest_range

from marketspine._base.time import parse_time
from marketspine._spine.spine import Spine
from marketspine.sim import SimConfig, create_app


async def test_a_read_after_the_connection_was_terminated_is_answered_from_the_database(
    pg_space: PgSpace,
) -> None:
    app = create_app(SimConfig(seed=3, rate_limit=0))
    since, until = parse_time("2025-03-01"), parse_time("2025-03-04T07:00:00")
    name = f"mstest_{uuid.uuid4().hex[:10]}"

    def spine(url: str) -> Spine:
        return Spine("http://sim", url, transport=httpx.ASGITransport(app=app))

    async with spine(pg_space.url) as first:
        stored = await first.candles("KRW-BTC", "1h", start=since, end=until)
        assert list(stored) == await rest_range(app, "KRW-BTC", "1h", since, until)
    # A second Spine, its connection open and idle, has it cut before it reads.
    async with spine(f"{pg_space.url}&application_name={name}") as second:
        with psycopg.connect(pg_space.base_url, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert ended == [(True,)]
        again = await second.candles("KRW-BTC", "1h", start=since, end=until)
        assert list(again) == list(stored)
        assert again.meta.source == "database" and again.meta.upstream_calls == 0
