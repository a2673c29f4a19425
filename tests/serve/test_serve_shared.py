"""Two real ``marketspine serve`` processes sharing one Redis and one PostgreSQL, in front of
one loopback simulator that enforces Upbit's 10 requests/s: no 429, every candle page
fetched from the simulator once, the warmup made once for both, identical answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import pytest
from helpers import Recorder, wait_until_sync
from serve_support import TOKEN, ServeProcess, serve_process, sim_stats
from services import PgSpace, PrivateRedis

from marketspine._base.time import parse_time
from marketspine.sim import SimConfig, create_app

pytestmark = pytest.mark.process

NOW = parse_time("2026-11-20T12:34:56.789Z")

# Ranges of 50 minutes (one page of 200 each, as sparse as the markets are), a day apart.
BOTH = [("KRW-BTC", "2026-11-19T06:00:00Z"), ("KRW-ETH", "2026-11-19T09:00:00Z")]
ONLY_A = [("KRW-XRP", "2026-11-19T03:00:00Z"), ("KRW-BTC", "2026-11-18T06:00:00Z")]
ONLY_B = [("KRW-ETH", "2026-11-18T03:00:00Z"), ("KRW-XRP", "2026-11-17T21:00:00Z")]


@pytest.fixture
def sim(running_sim: Callable[..., AbstractContextManager[str]]) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(create_app(SimConfig(rate_limit=10), clock=lambda: NOW))
    with running_sim(app=recorder) as url:
        yield url, recorder


def minutes(serve: ServeProcess, market: str, to: str) -> list[dict[str, Any]]:
    answer = serve.get("/v1/candles/minutes/1", market=market, count=50, to=to)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()
    assert len(rows) == 50
    return rows


def warmed(serve: ServeProcess) -> bool:
    return serve.get("/healthz").json()["warmup"] is True


def test_two_serve_processes_fetch_each_page_once_and_answer_alike(
    sim: tuple[str, Recorder], pg_space: PgSpace, private_redis: PrivateRedis
) -> None:
    url, recorder = sim
    shared = ("--redis", private_redis.url, "--admin-token", TOKEN)
    with ExitStack() as stack, ThreadPoolExecutor(2) as starting:
        a, b = starting.map(  # started together: their warmups meet at the lease
            lambda _: stack.enter_context(serve_process(url, pg_space.url, *shared)), range(2)
        )
        wait_until_sync(lambda: warmed(a) and warmed(b), 30, "both warmups")
        asked = [(a, r) for r in BOTH + ONLY_A] + [(b, r) for r in BOTH + ONLY_B]
        with ThreadPoolExecutor(len(asked)) as pool:  # all at once: same and different ranges
            first = list(pool.map(lambda job: minutes(job[0], *job[1]), asked))
        fetched = list(recorder.queries)
        # Each asks the other's ranges too: answered from the shared store, no page fetched.
        second = [minutes(b, *r) for r in ONLY_A] + [minutes(a, *r) for r in ONLY_B]
        assert recorder.queries == fetched
    seen = sim_stats(url)
    assert seen["429"] == 0 and seen["418"] == 0
    pages = [q for q in fetched if b"to=" in q]
    assert len(pages) == len(set(pages)) == len(BOTH + ONLY_A + ONLY_B)  # each page once
    assert seen["requests"]["by_path"].get("/v1/market/all") == 1  # one warmup for both
    answers = dict(zip([(s.url, r) for s, r in asked], first, strict=True))
    for r in BOTH:
        assert answers[a.url, r] == answers[b.url, r]
    assert second == [answers[a.url, r] for r in ONLY_A] + [answers[b.url, r] for r in ONLY_B]
