"""A full disk under the SQLite store: a write is refused with StoreFullError (a
StoreUnavailableError: retry later, exit 1 on the command line), said once in the log (an
alert with --notify) however many writes are refused, and once more when a write goes
through again; what was stored stays readable, and nothing is left half-written. A full
disk is SQLite's own refusal, reached here by capping the file's pages (``max_page_count``),
which refuses a write exactly as a full file system does (``SQLITE_FULL``).

``write_when_room``: what recorders write through, tried again until there is room."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import NO_CAP, cap_pages, database_alerts, rising_minutes

from marketspine import (
    RetryLaterError,
    SQLiteStore,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
)
from marketspine._base.time import MINUTE_MS, parse_time
from marketspine._base.timeframes import TIMEFRAMES as TF
from marketspine._store.room import FULL_RETRY_S, write_when_room

T0 = parse_time("2024-01-01")


async def test_a_full_disk_refuses_writes_says_so_once_and_writes_again_once_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "full.db"
    first, second, third = (
        rising_minutes(T0, 200),
        rising_minutes(T0 + 200 * MINUTE_MS, 2000),
        rising_minutes(T0, 5),
    )
    span = (T0, T0 + 200 * MINUTE_MS)
    caplog.set_level(logging.INFO, logger="marketspine")
    async with SQLiteStore(path) as store:
        await store.write_page("KRW-BTC", TF["1m"], first, span)
        await cap_pages(store, None)
        refused = []
        for page in (second, second):
            with pytest.raises(StoreFullError) as caught:
                await store.write_page(
                    "KRW-BTC", TF["1m"], page, (page[0].start_ms, page[-1].start_ms + MINUTE_MS)
                )
            refused.append(caught.value)
        # What was stored is kept and read as before; the refused pages left nothing.
        assert await store.read("KRW-BTC", TF["1m"], T0, T0 + 10**9) == first
        assert (await store.coverage("KRW-BTC", TF["1m"])).ranges == (span,)
        assert database_alerts(caplog) == [("WARNING", "database_full", str(path))]
        await cap_pages(store, NO_CAP)
        await store.write_page(
            "KRW-BTC", TF["1m"], second, (second[0].start_ms, second[-1].start_ms + MINUTE_MS)
        )
        await store.write_page("KRW-BTC", TF["1m"], third, (T0, T0 + 5 * MINUTE_MS))
        assert await store.read("KRW-BTC", TF["1m"], T0, T0 + 10**9) == first + second
    error = refused[0]
    assert isinstance(error, StoreUnavailableError) and isinstance(error, RetryLaterError)
    assert isinstance(error, StoreError)
    assert str(path) in str(error) and "free space on its disk" in str(error)
    assert database_alerts(caplog) == [
        ("WARNING", "database_full", str(path)),
        ("INFO", "database_writable", str(path)),
    ]


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


async def test_write_when_room_tries_again_until_a_write_goes_through() -> None:
    answers: list[BaseException | int] = [StoreFullError("full"), StoreFullError("full"), 7]

    async def write() -> int:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    sleeps = Sleeps()
    assert await write_when_room(write, sleep=sleeps) == 7
    assert sleeps.slept == [FULL_RETRY_S, FULL_RETRY_S]


async def test_write_when_room_gives_up_when_told_and_passes_other_errors_at_once() -> None:
    tries = 0

    async def full() -> int:
        nonlocal tries
        tries += 1
        raise StoreFullError("full")

    sleeps = Sleeps()
    with pytest.raises(StoreFullError):
        await write_when_room(full, give_up=lambda: tries >= 3, sleep=sleeps)
    assert tries == 3 and sleeps.slept == [FULL_RETRY_S] * 2

    async def broken() -> int:
        raise StoreError("damaged")

    with pytest.raises(StoreError, match="damaged"):
        await write_when_room(broken, sleep=sleeps)
    assert sleeps.slept == [FULL_RETRY_S] * 2
