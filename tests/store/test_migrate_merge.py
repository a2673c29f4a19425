"""Migrating into a database that already holds some of the same series (a shared one that
others collect into, as the README's scale-out example does): what the source holds is
copied and checked to be in the target, which keeps what it held (real SQLite files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import rising_minutes

from marketspine import SQLiteStore, StoreError
from marketspine._base.time import MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.migrate import migrate
from marketspine._store.recording_store import recording_for
from marketspine.records import Trade

T0 = parse_time("2026-01-01")
M1 = TF["1m"]


def trades(first_ms: int, n: int) -> list[Trade]:
    return [
        Trade("KRW-BTC", first_ms + i * 1000, 100.0, 0.5, "BID", first_ms + i * 1000, 99.0, 1.0)
        for i in range(n)
    ]


async def test_a_target_holding_more_of_a_series_keeps_it_and_gets_the_sources(
    tmp_path: Path,
) -> None:
    async with (
        SQLiteStore(tmp_path / "source.db") as source,
        SQLiteStore(tmp_path / "target.db") as target,
    ):
        # The source: minutes 100-400 and 600-700; the target: minutes 0-500 of its own.
        await source.write_page(
            "KRW-BTC", M1, rising_minutes(T0 + 100 * MINUTE_MS, 300),
            (T0 + 100 * MINUTE_MS, T0 + 400 * MINUTE_MS),
        )  # fmt: skip
        await source.write_page(
            "KRW-BTC", M1, rising_minutes(T0 + 600 * MINUTE_MS, 100),
            (T0 + 600 * MINUTE_MS, T0 + 700 * MINUTE_MS),
        )  # fmt: skip
        await target.write_page("KRW-BTC", M1, rising_minutes(T0, 500), (T0, T0 + 500 * MINUTE_MS))
        await recording_for(source).write(trades(T0, 100))
        await recording_for(target).write(trades(T0 + 3_600_000, 50))
        report = await migrate(source, target)
        assert (report.series, report.candles) == (1, 400)
        coverage = await target.coverage("KRW-BTC", M1)
        assert coverage.ranges == (
            (T0, T0 + 500 * MINUTE_MS),
            (T0 + 600 * MINUTE_MS, T0 + 700 * MINUTE_MS),
        )
        held = await target.read("KRW-BTC", M1, T0, T0 + 700 * MINUTE_MS)
        assert len(held) == 600
        assert held[100:400] == await source.read("KRW-BTC", M1, T0, T0 + 500 * MINUTE_MS)
        assert held[:100] == rising_minutes(T0, 100)  # the target's own, kept
        recorded = await recording_for(target).trades("KRW-BTC", 0, 2**62)
        assert len(recorded) == 150
        again = await migrate(source, target)  # a rerun verifies again, changes nothing
        assert again.candles == 400
        assert await target.read("KRW-BTC", M1, T0, T0 + 700 * MINUTE_MS) == held


async def test_a_target_whose_series_contradicts_the_source_is_refused(tmp_path: Path) -> None:
    async with (
        SQLiteStore(tmp_path / "source.db") as source,
        SQLiteStore(tmp_path / "target.db") as target,
    ):
        await source.write_page(
            "KRW-BTC", M1, rising_minutes(T0, 100), (T0, T0 + 100 * MINUTE_MS), listing_ms=T0
        )
        # The target says nothing starts before minute 50: both cannot be true.
        await target.write_page(
            "KRW-BTC", M1, rising_minutes(T0 + 50 * MINUTE_MS, 10),
            (T0 + 50 * MINUTE_MS, T0 + 60 * MINUTE_MS), listing_ms=T0 + 50 * MINUTE_MS,
        )  # fmt: skip
        with pytest.raises(StoreError, match=r"KRW-BTC 1m listing differs"):
            await migrate(source, target)
