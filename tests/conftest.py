"""Shared fixtures: the simulator in-process (ASGI, fixed clock) and on a real loopback port.

``marketspine.sim`` is imported inside the fixtures, so test modules that never use the
simulator collect even while it is being built. Plain helpers are in ``helpers.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from helpers import SIM_NOW_MS, FakeTime, ManualClock, run_sim
from services import pg_space, private_redis, redis_space  # noqa: F401  (fixtures)
from tls_support import server_cert  # noqa: F401  (a fixture)

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.applications import Starlette

    from marketspine._spine.spine import Spine


# The fixtures of services.py that need the machine's PostgreSQL or Redis (or its redis-server).
_SERVICE_FIXTURES = {"pg_space", "redis_space", "private_redis"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``services`` every test that asks for a real PostgreSQL or Redis, directly or
    through its fixtures, so ``-m "not services"`` runs without them."""
    for item in items:
        if _SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(autouse=True)
def own_rate_budget() -> None:
    """Clients and Spines without a budget share the process's (``process_budget``), which
    outlives a test: each test starts a new one, so no test meets another's spent window
    or 429 penalty."""
    from marketspine._budget.process import forget_process_budgets

    forget_process_budgets()


@pytest.fixture
def running_sim() -> Callable[..., contextlib.AbstractContextManager[str]]:
    """The ``run_sim(config=None, clock=None, *, app=None)`` context manager (a real server)."""
    return run_sim


@pytest.fixture
def sim_url() -> Iterator[str]:
    """Base URL of a real loopback simulator with the default SimConfig and a live clock."""
    with run_sim() as url:
        yield url


@pytest.fixture(scope="module")
def fixed_sim() -> Iterator[str]:
    """A loopback simulator shared by a module's tests, its clock stopped at ``SIM_NOW_MS``,
    no rate limit (tests ask it directly too, from the same IP as the code under test).
    For tests that only read: one that delists, injects faults or counts requests from
    zero starts its own with ``running_sim``."""
    from marketspine.sim import SimConfig

    with run_sim(SimConfig(rate_limit=0), clock=lambda: SIM_NOW_MS) as url:
        yield url


@pytest.fixture
def sim_now_ms() -> int:
    """The fixed simulated time of ``sim_clock`` at the start of a test."""
    return SIM_NOW_MS


@pytest.fixture
def sim_clock() -> ManualClock:
    """A settable simulated clock starting at ``SIM_NOW_MS``; ``.advance(ms)`` moves it."""
    return ManualClock()


@pytest.fixture
def sim_app(sim_clock: ManualClock) -> Starlette:
    """An in-process simulator app on ``sim_clock`` with rate limiting off (a fast test
    would otherwise hit 429s); to test limits build ``create_app(SimConfig(rate_limit=N),
    limit_clock=...)``."""
    from marketspine.sim import SimConfig, create_app

    return create_app(SimConfig(rate_limit=0), clock=sim_clock)


@pytest.fixture
async def sim_client(sim_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx.AsyncClient talking to ``sim_app`` in-process (base URL ``http://sim``)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app), base_url="http://sim"
    ) as client:
        yield client


@pytest.fixture
async def sim_spine(
    sim_app: Starlette, sim_clock: ManualClock, tmp_path: Path
) -> AsyncIterator[Spine]:
    """A Spine on ``sim_app`` and ``sim_clock`` (its own SQLite file, no warmup schedule)."""
    from marketspine._spine.spine import Spine

    async with Spine(
        "http://sim",
        tmp_path / "sim_spine.db",
        transport=httpx.ASGITransport(app=sim_app),
        wall_ms=sim_clock,
        warmup_every_s=0,
    ) as spine:
        yield spine


@pytest.fixture
def fake() -> FakeTime:
    """Virtual monotonic time: pass ``fake.clock``/``fake.sleep``, drive with ``fake.run``."""
    return FakeTime()
