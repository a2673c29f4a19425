"""``marketspine replay``: serve a recording at ``/websocket/v1`` and ``/v1/…`` as Upbit would
have served it at the replay clock, so an unmodified bot runs against history.

Every flag is checked, and the recording opened and asked for the markets and range, before
a port is taken: bad input (an unknown market, ``--from`` not before ``--to``, a bad speed or
time, a database that is not there) is one line and exit 2.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from .._base.durations import parse_moment
from .._base.markets import market_code
from .._base.time import format_utc, now_ms
from .._base.urls import check_db, is_postgres_url
from .._spine.recording import record_kinds
from .._spine.replay import ReplayPlan, check_replay
from .._store.recording import RecordingStore
from .._store.recording_reads import recorded_markets
from .._store.recording_store import recording_for
from ..errors import InvalidRequestError, StoreError
from .commands import open_store

__all__ = ["run_replay_command"]


def run_replay_command(
    markets: Sequence[str],
    *,
    db: str,
    since: str,
    until: str,
    speed: float,
    kinds: str,
    host: str,
    port: int,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve the replay until SIGINT/SIGTERM (see the module).

    Raises InvalidRequestError or StoreError (exit 2) for bad input."""
    from .._serve.replay_app import run_replay

    check_db(db, "--db")
    if not is_postgres_url(db) and not Path(db).expanduser().exists():
        raise StoreError(
            f"no database at {db}: record one first (marketspine record MARKET... --db {db}) "
            "or pass the --db it was recorded into"
        )
    now = now_ms()
    start_ms, end_ms = parse_moment(since, now, "--from"), parse_moment(until, now, "--to")
    if start_ms >= end_ms:
        raise InvalidRequestError(
            f"--from ({format_utc(start_ms)}) must be before --to ({format_utc(end_ms)})"
        )
    if not speed >= 0 or speed == float("inf"):
        raise InvalidRequestError(
            f"--speed {speed:g}: expected a finite number >= 0 (1 = real time, 0 = as fast "
            "as the clients read)"
        )
    kind_list = record_kinds(kinds)
    codes = [market_code(m) for m in markets]

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[RecordingStore]:
        async with open_store(db, must_exist=True, read_only=True) as store:
            yield recording_for(store)

    async def plan_of(recording: RecordingStore) -> ReplayPlan:
        held = codes or await recorded_markets(recording)
        if not held:
            raise InvalidRequestError(
                f"the database {db} holds no recording: make one with `marketspine record`"
            )
        return await check_replay(recording, kind_list, held, start_ms, end_ms, speed)

    run_replay(
        open_recording=opened, plan_of=plan_of, host=host, port=port, allowed_hosts=allowed_hosts
    )
