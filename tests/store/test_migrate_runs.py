"""``migrate`` copies the run history (warmups and backfill jobs, what ``/api/*/history``
reads) between SQLite and the real PostgreSQL, both ways: every run once, a rerun adding
none, runs the target held before kept."""

from __future__ import annotations

from pathlib import Path

from services import PgSpace
from test_store import T0

from marketspine._base.time import MINUTE_MS
from marketspine._store.migrate import migrate
from marketspine._store.postgres import PostgresStore
from marketspine._store.sqlite import RunRecord, SQLiteStore, runs_missing


def history() -> list[RunRecord]:
    """Runs of both kinds, oldest first: results with several keys (PostgreSQL's jsonb
    reorders them), a failed run, and two runs alike field for field (kept twice)."""
    upbit = {"exchange": "upbit", "ok": True, "markets": 3, "duration_ms": 15, "error": None}
    manual = RunRecord("warmup", "manual", T0 + MINUTE_MS, 20, True, 3, (upbit,))
    return [
        RunRecord("warmup", "start", T0, 15, True, 3, (upbit,)),
        manual,
        manual,
        RunRecord(
            "backfill",
            "job",
            T0 + 2 * MINUTE_MS,
            2500,
            False,
            2,
            (
                {"market": "KRW-BTC", "ok": True, "candles": 60, "error": None},
                {"market": "KRW-ETH", "ok": False, "candles": 0, "error": "cancelled"},
            ),
            "cancelled",
            "job-1 1m",
        ),
    ]


async def test_runs_go_from_sqlite_to_postgresql_once(tmp_path: Path, pg_space: PgSpace) -> None:
    runs = history()
    async with SQLiteStore(tmp_path / "spine.db") as source:
        for run in runs:
            await source.add_run(run)
        async with PostgresStore(pg_space.url) as target:
            first = await migrate(source, target)
            again = await migrate(source, target)
            copied = await target.run_history()
            newest = await target.runs("warmup", limit=10)
    assert (first.runs, first.runs_added) == (4, 4)
    assert (again.runs, again.runs_added) == (4, 0)  # no duplicate on a rerun
    assert copied == runs
    assert newest == [runs[2], runs[1], runs[0]]  # what /api/warmup/history answers


async def test_runs_go_from_postgresql_to_sqlite_keeping_the_targets_own(
    tmp_path: Path, pg_space: PgSpace
) -> None:
    runs = history()
    own = RunRecord("warmup", "scheduled", T0 - MINUTE_MS, 9, True, 3)
    async with PostgresStore(pg_space.url) as source:
        for run in runs:
            await source.add_run(run)
        async with SQLiteStore(tmp_path / "target.db") as target:
            await target.add_run(own)
            first = await migrate(source, target)
            again = await migrate(source, target)
            copied = await target.run_history()
    assert (first.runs_added, again.runs_added) == (4, 0)
    assert copied == [own, *runs]


def test_a_run_is_missing_as_many_times_as_it_is_not_held() -> None:
    start, manual, _, job = history()
    assert runs_missing([manual, start], [start, manual, manual, job]) == [manual, job]
    assert runs_missing([start, manual, manual, job], [start, manual, manual, job]) == []
