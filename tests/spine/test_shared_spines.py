"""Spine(db="postgresql://...", redis="redis://..."): two Spines as two processes would be."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from helpers import wait_until
from services import PgSpace, RedisSpace
from test_spine import rest_range, sim_requests

from marketspine._base.time import parse_time
from marketspine._budget.redis import RedisRateBudget
from marketspine._spine.spine import Spine
from marketspine._store.page_lease import RedisPageLeases
from marketspine.sim import SimConfig, create_app


def shared_spine(app: Any, pg: PgSpace, redis: RedisSpace) -> Spine:
    """A Spine as one process would be: its store in PostgreSQL, Redis shared."""
    return Spine(
        "http://sim",
        pg.url,
        redis=redis.url,
        redis_prefix=redis.prefix,
        transport=httpx.ASGITransport(app=app),
    )


async def test_a_second_spine_reads_what_the_first_stored_in_postgresql(
    pg_space: PgSpace, redis_space: RedisSpace
) -> None:
    app = create_app(SimConfig(seed=3, rate_limit=0))
    since, until = parse_time("2025-03-01"), parse_time("2025-03-04T07:00:00")

    def spine() -> Spine:
        return shared_spine(app, pg_space, redis_space)

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


class PageGate:
    """The simulator behind a gate that holds candle pages (requests with ``to``) until
    opened, noting each page's query."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.opened = asyncio.Event()
        self.pages: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and b"to=" in scope["query_string"]:
            self.pages.append(scope["query_string"])
            await self.opened.wait()
        await self.app(scope, receive, send)


def leases(spine: Spine) -> RedisPageLeases:
    assert spine._shared is not None
    return spine._shared.leases


async def test_two_spines_asked_for_the_same_missing_history_fetch_each_page_once(
    pg_space: PgSpace, redis_space: RedisSpace
) -> None:
    now = parse_time("2026-11-20T12:34:56.789Z")
    gate = PageGate(create_app(SimConfig(seed=3, rate_limit=0), clock=lambda: now))
    since, until = parse_time("2026-11-19T00:00:00"), parse_time("2026-11-19T10:00:00")

    def spine() -> Spine:
        return shared_spine(gate, pg_space, redis_space)

    queries: list[dict[str, Any]] = [
        {"timeframe": "1m", "start": since, "end": until},  # 3 pages of history
        {"timeframe": "1h", "count": 450, "closed_only": True},  # 3 pages back
    ]
    async with spine() as a, spine() as b:
        asked = [(s, kwargs) for s in (a, b) for kwargs in queries]
        tasks = [asyncio.create_task(s.candles("KRW-BTC", **kw)) for s, kw in asked]
        # Both asked before any page came back: the loser of each page's lease waits.
        await wait_until(lambda: leases(a).waits + leases(b).waits >= 2, 30, "a page waited on")
        gate.opened.set()
        ra1, ra2, rb1, rb2 = await asyncio.gather(*tasks)
    assert list(ra1) == list(rb1) and len(ra1) == 600
    assert list(ra2) == list(rb2) and len(ra2) == 450
    # Every page fetched once: three of the 1m range, and two of the 1h count below the
    # newest page, which each Spine asks without ``to`` (its clock and the forming window).
    assert len(gate.pages) == len(set(gate.pages)) == 5
    assert leases(a).fetched + leases(b).fetched == 5
    assert leases(a).shared + leases(b).shared >= 2
    calls = sum(r.meta.upstream_calls for r in (ra1, ra2, rb1, rb2))
    assert calls == 5 + 2  # each Spine counts the pages it fetched itself, and its newest
