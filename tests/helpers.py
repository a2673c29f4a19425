"""Helpers the tests share: clocks driven by hand and waiting for a condition.

``FakeTime`` is virtual monotonic time for code that takes ``clock``/``sleep``;
``ManualClock`` is a simulated UTC clock (epoch ms) for the simulator and Spine;
``run_sim`` serves a simulator on a loopback port for a ``with`` block; ``SimGate`` holds
its WebSocket traffic, to play a race out the same way every run;
``wait_until`` waits for a condition with a deadline (never a bare sleep in its place);
``UnpacedBudget`` lets an in-process client run unpaced against a simulator without limits.
``Recorder`` notes when each candle request reaches a simulator app it wraps; ``PageHold``
holds its candle pages until released; ``InFlight`` counts how many are in flight at once;
``answer_meta`` and ``aclose`` reach what ``Spine.ticker``/``orderbook`` and ``Spine.stream``
return beyond their declared types; ``require_module`` imports an optional extra or skips
(in CI: fails) saying which.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import importlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
)
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest

from marketspine._base.time import MINUTE_MS, parse_time
from marketspine._budget.rules import BudgetStatistics, Priority
from marketspine._spine.answers import OrderbookAnswer, TickerAnswer
from marketspine._spine.result import ResultMeta
from marketspine._store.sqlite import SQLiteStore
from marketspine.errors import UpstreamError
from marketspine.records import Candle, Orderbook, Ticker, Trade

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from marketspine.sim import SimConfig

T = TypeVar("T")

# A fixed simulated "now" for deterministic in-process tests (a Thursday, mid-session).
SIM_NOW_MS = parse_time("2026-07-30T07:41:37.123Z")

# How often the waits below look at their condition again (real seconds).
_POLL_S = 0.01


class ManualClock:
    """A simulated clock (UTC epoch ms) that moves only when a test moves it."""

    def __init__(self, ms: int = SIM_NOW_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> int:
        """Move forward by ``ms``; returns the new time."""
        self.ms += ms
        return self.ms


def afternoon_clock(speed: float) -> Callable[[], int]:
    """A simulated clock running ``speed`` times real time from ``SIM_NOW_MS``, an afternoon
    in Seoul, not from now: how busy the simulator's markets are follows the time of day,
    and a test waiting on live trades must not pass at one hour and fail at another (at
    00:30 UTC a liquid market traded too seldom for test_stream's reconnect test)."""
    from marketspine.sim import SimClock

    return SimClock(speed, start_ms=SIM_NOW_MS)


@contextlib.contextmanager
def run_sim(
    config: SimConfig | None = None,
    clock: Callable[[], int] | None = None,
    *,
    app: Starlette | None = None,
) -> Iterator[str]:
    """A simulator on a free loopback port in a background thread (``marketspine.sim.running``).

    Yields its base URL (``http://127.0.0.1:PORT``; WebSocket at ``ws://.../websocket/v1``);
    stops the server and joins the thread on exit. Pass ``app`` to serve an app you built.
    ``marketspine.sim`` is imported here, so test modules that never use the simulator
    collect even while it is being built.
    """
    from marketspine.sim import running

    with running(config, clock=clock, app=app) as url:
        yield url


_Message = MutableMapping[str, Any]


class SimGate:
    """Holds a simulator app's traffic while closed: ``requests`` the WebSocket messages its
    clients send, ``frames`` the messages it sends them, ``rest`` its REST calls (``/v1/``;
    all open at first); ``held``, ``held_requests`` and ``held_rest`` count the frames,
    requests and calls that had to wait. Serve ``wrap(create_app(...))`` with ``run_sim``;
    the events are set and cleared from the test's thread."""

    def __init__(self) -> None:
        self.requests = threading.Event()
        self.frames = threading.Event()
        self.rest = threading.Event()
        self.requests.set()
        self.frames.set()
        self.rest.set()
        self.held = 0
        self.held_requests = 0
        self.held_rest = 0

    def wrap(self, app: Any) -> Any:
        async def gated(
            scope: _Message,
            receive: Callable[[], Awaitable[_Message]],
            send: Callable[[_Message], Awaitable[None]],
        ) -> None:
            if scope["type"] != "websocket":
                if scope["type"] == "http" and scope["path"].startswith("/v1/"):
                    if not self.rest.is_set():
                        self.held_rest += 1
                    await _opened(self.rest)
                await app(scope, receive, send)
                return

            async def held_receive() -> _Message:
                message = await receive()
                if message["type"] == "websocket.receive":
                    if not self.requests.is_set():
                        self.held_requests += 1
                    await _opened(self.requests)
                return message

            async def held_send(message: _Message) -> None:
                if message["type"] == "websocket.send" and not self.frames.is_set():
                    self.held += 1
                    await _opened(self.frames)
                await send(message)

            await app(scope, held_receive, held_send)

        return gated


async def _opened(event: threading.Event) -> None:
    # The simulator runs on its own thread and loop; the test opens the gate from another.
    while not event.is_set():  # noqa: ASYNC110
        await asyncio.sleep(_POLL_S)


class FakeTime:
    """Virtual time: ``sleep`` parks the caller until ``run`` moves the clock to its deadline.
    Time only moves when every task is blocked, so runs are deterministic and instant."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    @staticmethod
    async def settle() -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def step(self) -> bool:
        """Wake the earliest sleeper (moving the clock); False when nobody sleeps."""
        await self.settle()
        while self._timers:
            deadline, _, future = heapq.heappop(self._timers)
            if future.done():
                continue
            self.now = max(self.now, deadline)
            future.set_result(None)
            await self.settle()
            return True
        return False

    async def run(self, awaitable: Awaitable[T], *, max_seconds: float = 3600.0) -> T:
        """Drive virtual time until ``awaitable`` finishes. While nobody sleeps on virtual
        time, real time passes (I/O, real timeouts) for at most 5 s before it counts as a
        deadlock."""
        task = asyncio.ensure_future(awaitable)
        end = self.now + max_seconds
        loop = asyncio.get_running_loop()
        real_deadline = loop.time() + 5.0
        while not task.done():
            if await self.step():
                real_deadline = loop.time() + 5.0
            elif not task.done():
                if loop.time() > real_deadline:
                    task.cancel()
                    raise AssertionError("deadlock: the task waits but nobody sleeps")
                await asyncio.wait({task}, timeout=0.002)
            if self.now > end:
                task.cancel()
                raise AssertionError(f"still running after {max_seconds} virtual seconds")
        return task.result()

    async def run_until(self, condition: Callable[[], bool], max_seconds: float = 3600.0) -> None:
        end = self.now + max_seconds
        await self.settle()
        while not condition():
            if not await self.step() or self.now > end:
                raise AssertionError("condition never became true")


async def wait_until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` after ``within_s`` seconds.
    For conditions that other tasks, threads or processes make true."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(_POLL_S)


def wait_until_sync(condition: Callable[[], bool], within_s: float, what: str) -> None:
    """``wait_until`` for synchronous tests (a condition a server thread makes true)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        time.sleep(_POLL_S)


class UnpacedBudget:
    """A ``RateBudget`` that lets every request go at once, for an in-process client against
    a simulator with ``rate_limit=0``. (A LocalRateBudget with a large limit still paces:
    it books the simulator's ``Remaining-Req: sec=9`` as sends by others.)"""

    async def acquire(self, group: str, priority: Priority = Priority.NORMAL) -> None:
        return None

    def observe(
        self, group: str, remaining_sec: int | None, *, sent_at: float | None = None
    ) -> None:
        return None

    def penalize(self, group: str, seconds: float) -> None:
        raise AssertionError(f"{group} penalized for {seconds} s: the simulator limits rates")

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(groups={})


class ListedTrades:
    """REST trades, newest first as listed; ``trades(cursor=seq)`` pages what is listed
    after that trade, as Upbit's ``/v1/trades/ticks`` does; ``fail`` makes every call fail
    as an unreachable upstream does. ``calls`` counts them."""

    def __init__(self, listed: list[Trade], fail: bool = False) -> None:
        self.listed = listed
        self.fail = fail
        self.calls = 0

    async def trades(
        self,
        market: str,
        *,
        count: int = 100,
        cursor: int | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[Trade]:
        self.calls += 1
        if self.fail:
            raise UpstreamError("upstream is down")
        start = 0 if cursor is None else [t.seq for t in self.listed].index(cursor) + 1
        return self.listed[start : start + count]


class Recorder:
    """An ASGI wrapper around the simulator that notes when each candle request arrives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.arrivals: list[float] = []
        self.queries: list[bytes] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/candles/"):
            with self._lock:
                self.arrivals.append(time.monotonic())
                self.queries.append(scope["query_string"])
        await self.app(scope, receive, send)


class PageHold:
    """An ASGI wrapper holding a simulator app's candle pages (requests with ``to``, before
    ``before_ms`` when set) in-process: while ``held`` is clear, each waits for it;
    ``waiting`` counts the pages waiting now. Set and clear ``held`` on the test's loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.held = asyncio.Event()
        self.held.set()
        self.waiting = 0
        self.before_ms: int | None = None

    def _holds(self, query: bytes) -> bool:
        to = parse_qs(query.decode()).get("to")
        if to is None:
            return False
        return self.before_ms is None or parse_time(to[0]) < self.before_ms

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self._holds(scope["query_string"]):
            self.waiting += 1
            try:
                await self.held.wait()
            finally:
                self.waiting -= 1
        await self.app(scope, receive, send)


class InFlight:
    """An ASGI wrapper around the simulator that counts its candle requests in flight at once
    (``most``: the highest count seen; ``most_of``: per market) and in all (``calls``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.now = self.most = self.calls = 0
        self.now_of: dict[str, int] = {}
        self.most_of: dict[str, int] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/candles/"):
            await self.app(scope, receive, send)
            return
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if p)
        market = query.get("market", "")
        self.now += 1
        self.calls += 1
        self.most = max(self.most, self.now)
        self.now_of[market] = self.now_of.get(market, 0) + 1
        self.most_of[market] = max(self.most_of.get(market, 0), self.now_of[market])
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1
            self.now_of[market] -= 1


def require_module(name: str, reason: str) -> ModuleType:
    """Import ``name`` (an optional extra: pandas, polars, pyarrow, a third-party client),
    or skip the test or module with ``reason``, as ``pytest.importorskip`` does; under
    ``MARKETSPINE_REQUIRE_EXTRAS=1`` (set by ``.ci/run``) a missing extra fails instead, so
    CI never passes by skipping what it should have run."""
    if os.environ.get("MARKETSPINE_REQUIRE_EXTRAS") != "1":
        module: ModuleType = pytest.importorskip(name, reason=reason)
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"{reason} ({exc}); MARKETSPINE_REQUIRE_EXTRAS=1 requires it", pytrace=False)


def answer_meta(answer: Ticker | Orderbook) -> ResultMeta:
    """The ``meta`` that ``Spine.ticker``/``Spine.orderbook`` answers carry (declared as the
    plain record, they are its answer subtype)."""
    assert isinstance(answer, TickerAnswer | OrderbookAnswer), type(answer)
    return answer.meta


async def aclose(events: AsyncIterator[Any]) -> None:
    """Close what ``Spine.stream`` returned (declared an AsyncIterator, an async generator)."""
    assert isinstance(events, AsyncGenerator), type(events)
    await events.aclose()


def database_alerts(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str]]:
    """(level, event, key) of each database alert logged (``database_full``, ``_lost``...)."""
    return [
        (r.levelname, getattr(r, "event", ""), getattr(r, "key", ""))
        for r in caplog.records
        if getattr(r, "event", "").startswith("database_")
    ]


def rising_minutes(first: int, n: int) -> list[Candle]:
    """``n`` KRW-BTC minute candles from ``first``, every price one higher a minute."""
    return [
        Candle("KRW-BTC", "1m", first + i * MINUTE_MS, 100.0 + i, 101.0 + i, 99.0 + i,
               100.5 + i, 0.1 * i, 10.0 * i, first + i * MINUTE_MS + 59_999)
        for i in range(n)
    ]  # fmt: skip


NO_CAP = 1_073_741_823  # SQLite's default max_page_count


async def cap_pages(store: SQLiteStore, pages: int | None) -> None:
    """Cap the file at ``pages`` pages (None: at what it holds now): SQLite then refuses
    writes as on a full disk (``SQLITE_FULL``). NO_CAP lifts it."""

    def cap(conn: sqlite3.Connection) -> None:
        limit = pages if pages is not None else conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {int(limit)}")

    await store.call(cap)


async def sim_app_stats(app: Any) -> dict[str, Any]:
    """``/sim/stats`` of the simulator app ``app``, asked in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as sim:
        stats: dict[str, Any] = (await sim.get("/sim/stats")).json()
    return stats
