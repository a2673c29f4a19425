"""``Spine.stream`` with candle kinds, against a loopback simulator on a hand-driven clock:
every candle kind yields its forming candle, updates as trades arrive, and a ClosedCandle
equal to the REST candle once the window closes; plain strings are one item."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import pytest

from marketspine import (
    Candle,
    ClosedCandle,
    ClosedError,
    Health,
    InvalidRequestError,
    Spine,
    Ticker,
)
from marketspine._base.args import STREAM_KINDS
from marketspine._base.timeframes import TIMEFRAMES
from marketspine.sim import SimConfig

MARKET = "KRW-BTC"  # trades every few seconds in the simulator


class SettableClock(Protocol):
    def __call__(self) -> int: ...
    def advance(self, ms: int) -> int: ...


async def next_matching(
    events: AsyncIterator[Any], wanted: Callable[[Any], bool], what: str, seen: list[Any]
) -> Any:
    """The next event for which ``wanted`` holds (every event passed is kept in ``seen``)."""

    async def find() -> Any:
        async for event in events:
            seen.append(event)
            if wanted(event):
                return event
        raise AssertionError(f"the stream ended before {what}")

    try:
        return await asyncio.wait_for(find(), timeout=20)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; saw {seen[-5:]}") from None


async def test_every_candle_kind_yields_forming_then_the_closed_rest_candle(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: SettableClock,
    tmp_path: Path,
) -> None:
    kinds = [f"candle.{name}" for name in TIMEFRAMES]
    with running_sim(SimConfig(seed=5, rate_limit=0), sim_clock) as url:
        async with Spine(url, tmp_path / "stream.db", wall_ms=sim_clock) as spine:
            events = spine.stream(kinds, MARKET)  # a plain str is one market
            seen: list[Any] = []
            # Each kind's forming candle comes first (the market trades in every window of a
            # minute or more; the current second may have no trade yet).
            for name in [n for n in TIMEFRAMES if n != "1s"]:

                def is_forming(e: object, n: str = name) -> bool:
                    return isinstance(e, Candle) and e.timeframe == n

                forming = await next_matching(
                    events,
                    is_forming,
                    f"the forming {name} candle",
                    seen,
                )
                assert forming.market == MARKET
                assert forming.start_ms == TIMEFRAMES[name].floor(sim_clock())
            assert not any(isinstance(e, ClosedCandle) for e in seen)

            # Trades move the forming minute on; the window then closes.
            minute = TIMEFRAMES["1m"]
            window = minute.floor(sim_clock())
            last = max(
                (e for e in seen if isinstance(e, Candle) and e.timeframe == "1m"),
                key=lambda c: c.last_trade_ms,
            )
            sim_clock.advance(minute.next_start(window) - sim_clock() - 5_000)
            await next_matching(
                events,
                lambda e: (
                    isinstance(e, Candle)
                    and e.timeframe == "1m"
                    and e.start_ms == window
                    and e.last_trade_ms > last.last_trade_ms
                ),
                "an update of the forming minute",
                seen,
            )
            # The same trades formed seconds (yielded before the minute: kinds keep their order).
            assert any(isinstance(e, Candle) and e.timeframe == "1s" for e in seen)
            sim_clock.advance(10_000)  # past the close and the settle margin
            closed: dict[str, Candle] = {}

            def closes_both(event: Any) -> bool:
                if isinstance(event, ClosedCandle) and event.candle.timeframe in ("1s", "1m"):
                    closed.setdefault(event.candle.timeframe, event.candle)
                return len(closed) == 2

            await next_matching(events, closes_both, "a closed second and minute", seen)
            assert closed["1m"].start_ms == window
            # Three minutes on, the 3m and 5m windows of the start have closed too.
            sim_clock.advance(TIMEFRAMES["5m"].next_start(window) + 1_000 - sim_clock())

            def closes_longer(event: Any) -> bool:
                if isinstance(event, ClosedCandle) and event.candle.timeframe in ("3m", "5m"):
                    closed.setdefault(event.candle.timeframe, event.candle)
                return len(closed) == 4

            await next_matching(events, closes_longer, "a closed 3m and 5m candle", seen)
            assert closed["5m"].start_ms == TIMEFRAMES["5m"].floor(window)
            for name, candle in closed.items():
                tf = TIMEFRAMES[name]
                (rest,) = await spine.client.candles(
                    MARKET, tf, count=1, to_ms=tf.next_start(candle.start_ms)
                )
                assert candle == rest, name
            # Closed candles come once each, in order, per timeframe.
            for name in TIMEFRAMES:
                starts = [
                    e.candle.start_ms
                    for e in seen
                    if isinstance(e, ClosedCandle) and e.candle.timeframe == name
                ]
                assert starts == sorted(set(starts)), name

            await spine.aclose()
            with pytest.raises(ClosedError):
                async for _ in events:
                    pass


async def test_kinds_are_checked_before_anything_is_opened(tmp_path: Path) -> None:
    import httpx

    from marketspine.sim import create_app

    app = create_app(SimConfig(seed=5, rate_limit=0))
    async with Spine("http://sim", tmp_path / "k.db", transport=httpx.ASGITransport(app=app)) as s:
        with pytest.raises(InvalidRequestError) as caught:
            await anext(s.stream(["candle.2m"], ["KRW-BTC"]))
        for kind in STREAM_KINDS:
            assert kind in str(caught.value)
        assert not s._feed.opened, "no connection for a request that was refused"


async def test_a_running_stream_ends_with_closed_error_when_the_spine_closes(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: SettableClock,
    tmp_path: Path,
) -> None:
    with running_sim(SimConfig(seed=5, rate_limit=0), sim_clock) as url:
        async with Spine(url, tmp_path / "plain.db", wall_ms=sim_clock) as spine:
            events = spine.stream("ticker", "KRW-BTC")  # plain strings: one kind, one market
            first = await next_matching(events, lambda e: not isinstance(e, Health), "a ticker", [])
            assert isinstance(first, Ticker) and first.market == "KRW-BTC"
            await spine.aclose()
            with pytest.raises(ClosedError, match="closed"):
                await anext(events)
