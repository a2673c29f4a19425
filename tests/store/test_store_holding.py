"""Pages fetched while the disk is full: held in memory and read back with the store's own
(candles and coverage), written oldest first at the next write that finds room, bounded;
what is held when it closes is written if there is room by then, else said (a real SQLite
file, its pages capped as a full disk refuses them)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import NO_CAP, cap_pages, rising_minutes

from marketspine import SQLiteStore, StoreFullError
from marketspine._base.time import MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.holding import HoldingStore

T0 = parse_time("2024-01-01")
M1 = TF["1m"]


def span(first: int, n: int) -> tuple[int, int]:
    return (first, first + n * MINUTE_MS)


async def test_pages_refused_for_room_are_read_back_and_written_once_there_is_room(
    tmp_path: Path,
) -> None:
    stored, later, last = (
        rising_minutes(T0, 200),
        rising_minutes(T0 + 200 * MINUTE_MS, 300),
        rising_minutes(T0 + 500 * MINUTE_MS, 100),
    )
    async with SQLiteStore(tmp_path / "full.db") as store:
        holding = HoldingStore(store)
        await holding.write_page("KRW-BTC", M1, stored, span(T0, 200))
        await cap_pages(store, None)
        await holding.write_page(
            "KRW-BTC", M1, later, span(T0 + 200 * MINUTE_MS, 300), listing_ms=T0
        )  # refused by the store: held
        assert holding.held_candles == 300
        assert await store.read("KRW-BTC", M1, T0, T0 + 600 * MINUTE_MS) == stored
        assert await holding.read("KRW-BTC", M1, T0, T0 + 600 * MINUTE_MS) == stored + later
        assert (
            await holding.read("KRW-BTC", M1, T0 + 450 * MINUTE_MS, T0 + 460 * MINUTE_MS)
            == (later[250:260])
        )
        coverage = await holding.coverage("KRW-BTC", M1)
        assert coverage.ranges == ((T0, T0 + 500 * MINUTE_MS),) and coverage.listing_ms == T0
        assert (await store.coverage("KRW-BTC", M1)).ranges == ((T0, T0 + 200 * MINUTE_MS),)
        assert await holding.listing("KRW-BTC", M1) == T0
        # Another series is not answered from them.
        assert await holding.read("KRW-ETH", M1, T0, T0 + 600 * MINUTE_MS) == []
        await cap_pages(store, NO_CAP)  # room again: the held page first, then the new one
        await holding.write_page("KRW-BTC", M1, last, span(T0 + 500 * MINUTE_MS, 100))
        assert holding.held_candles == 0
        assert await store.read("KRW-BTC", M1, T0, T0 + 600 * MINUTE_MS) == stored + later + last
        whole = await store.coverage("KRW-BTC", M1)
        assert whole.ranges == ((T0, T0 + 600 * MINUTE_MS),) and whole.listing_ms == T0


async def test_no_more_than_the_bound_is_held(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "full.db") as store:
        holding = HoldingStore(store, max_candles=250)
        await holding.write_page("KRW-BTC", M1, rising_minutes(T0, 1), span(T0, 1))
        await cap_pages(store, None)
        await holding.write_page(
            "KRW-BTC", M1, rising_minutes(T0 + MINUTE_MS, 200), span(T0 + MINUTE_MS, 200)
        )
        with pytest.raises(StoreFullError, match="no room"):
            await holding.write_page(
                "KRW-BTC",
                M1,
                rising_minutes(T0 + 201 * MINUTE_MS, 100),
                span(T0 + 201 * MINUTE_MS, 100),
            )
        assert holding.held_candles == 200  # the refused page is neither held nor stored
        coverage = await holding.coverage("KRW-BTC", M1)
        assert coverage.ranges == ((T0, T0 + 201 * MINUTE_MS),)


@pytest.mark.parametrize("room", [True, False])
async def test_what_is_held_at_close_is_written_if_there_is_room_else_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, room: bool
) -> None:
    caplog.set_level(logging.INFO, logger="marketspine")
    path = tmp_path / "full.db"
    first, held = rising_minutes(T0, 1), rising_minutes(T0 + MINUTE_MS, 300)
    async with SQLiteStore(path) as store:
        holding = HoldingStore(store)
        await holding.write_page("KRW-BTC", M1, first, span(T0, 1))
        await cap_pages(store, None)
        await holding.write_page("KRW-BTC", M1, held, span(T0 + MINUTE_MS, 300))
        assert holding.held_candles == 300
        if room:
            await cap_pages(store, NO_CAP)
        await holding.aclose()
    async with SQLiteStore(path) as reopened:
        kept = await reopened.read("KRW-BTC", M1, T0, T0 + 400 * MINUTE_MS)
    dropped = [r for r in caplog.records if getattr(r, "event", None) == "held_candles_dropped"]
    if room:
        assert kept == first + held and not dropped
    else:
        assert kept == first
        assert len(dropped) == 1 and "300 candles" in dropped[0].getMessage()
