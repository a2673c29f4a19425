"""Running the real ``marketspine`` console script (the one pip installed) in tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("marketspine"))
COMMANDS = ("sim", "collect", "export", "status", "warmup")


def run(
    *args: str, timeout: float = 60, user: int | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``marketspine ARGS...`` without a terminal; ``user`` runs it as that uid (and
    gid), so file permissions hold even when the tests run as root."""
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1"}
    argv = [CONSOLE_SCRIPT, *args]
    if user is not None:
        # setpriv rather than Popen(user=...): this sandbox lets only the former exec the
        # interpreter under /root as another user.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as another user needs setpriv (util-linux)")
        argv = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )


def closed_port() -> str:
    """A loopback URL nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def rest_candles(base_url: str, path: str, market: str, since_ms: int, until_ms: int) -> list[dict]:
    """Every candle upstream (a simulator) has in ``[since, until)``, ascending, paged by hand."""
    import httpx

    from marketspine._time import format_utc, parse_naive_utc

    rows: list[dict] = []
    to = until_ms
    with httpx.Client(base_url=base_url) as http:
        while True:
            page = http.get(
                path, params={"market": market, "count": 200, "to": format_utc(to) + "Z"}
            ).json()
            rows.extend(c for c in page if parse_naive_utc(c["candle_date_time_utc"]) >= since_ms)
            if len(page) < 200 or parse_naive_utc(page[-1]["candle_date_time_utc"]) < since_ms:
                return rows[::-1]
            to = parse_naive_utc(page[-1]["candle_date_time_utc"])


def minute_db(path: Path, first_ms: int, n: int, market: str = "KRW-BTC") -> None:
    """A real marketspine SQLite file holding ``n`` 1m candles from ``first_ms``, all covered."""
    import asyncio

    from marketspine._records import Candle
    from marketspine._store import SQLiteStore
    from marketspine._timeframes import TIMEFRAMES

    candles = [
        Candle(market, "1m", first_ms + i * 60_000, 100.0 + i, 101.5 + i, 99.25 + i,
               100.5 + i, 0.25 * i, 10.01 * i, first_ms + i * 60_000 + 59_999)
        for i in range(n)
    ]  # fmt: skip

    async def write() -> None:
        async with SQLiteStore(path) as store:
            covered = (first_ms, first_ms + n * 60_000)
            await store.write_page(market, TIMEFRAMES["1m"], candles, covered)

    asyncio.run(write())


NOBODY = 65534


def unprivileged() -> int | None:
    """The uid to run the CLI as so that file permissions apply: nobody when the tests run
    as root (root ignores them), else None (the current user already obeys them)."""
    return NOBODY if os.geteuid() == 0 else None


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A fresh folder every user can enter (pytest's tmp_path is private to its owner), for
    runs as ``unprivileged()``; removed afterwards whatever its modes became."""
    folder = Path(tempfile.mkdtemp(prefix="marketspine-cli-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o777)
        shutil.rmtree(folder, ignore_errors=True)
