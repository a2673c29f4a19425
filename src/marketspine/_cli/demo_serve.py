"""The ``serve`` part of ``make demo``: a real ``marketspine serve`` process in front of the
demo's simulator, and a client nobody here wrote (pyupbit, pointed at serve as the README
shows) asking twice for the same candles — the second answer comes from serve's cache with
no upstream request."""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

__all__ = ["serve_tour"]

_PORT = ("--port", "0", "--admin-token", "demo-admin-token-0000")
_URL = re.compile(r"serving on (http://[\d.]+:\d+)")


def _upstream_requests(sim: str) -> int:
    total: int = httpx.get(sim + "/sim/stats", timeout=10).json()["requests"]["total"]
    return total


def serve_tour(console: Console, sim: str, db: Path) -> None:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketspine", "serve", "--upstream", sim, "--db", str(db), *_PORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            if match := _URL.search(line):
                url = match[1]
                break
        if url is None:
            raise RuntimeError("marketspine serve did not start")
        console.print(
            f"[bold]marketspine serve[/] at {url} (ready in {time.perf_counter() - started:.2f} s)"
        )
        _ask_twice(console, sim, url)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


def _ask_twice(console: Console, sim: str, url: str) -> None:
    try:
        import pyupbit  # type: ignore[import-untyped]
        import pyupbit.request_api  # type: ignore[import-untyped]
        import requests
    except ImportError:
        console.print("(pyupbit is not installed: `pip install pyupbit` to see it asked via serve)")
        return
    seen: list[dict[str, Any]] = []

    class _ToServe:
        """pyupbit calls requests.get("https://api.upbit.com/v1/..."): ask serve instead."""

        @staticmethod
        def get(target: str, *args: Any, **kwargs: Any) -> Any:
            response = requests.get(
                target.replace("https://api.upbit.com", url, 1), *args, **kwargs
            )
            seen.append(dict(response.headers))
            return response

    original = pyupbit.request_api.requests
    pyupbit.request_api.requests = _ToServe
    try:
        # An hour before the local clock: closed candles (the demo's simulator runs fast).
        to = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        table = Table(title="pyupbit.get_ohlcv('KRW-BTC', 'minute10', count=400) through serve")
        for column in ("call", "rows", "X-Marketspine-Source", "upstream requests", "ms"):
            table.add_column(column)
        for call in ("first", "second"):
            seen.clear()
            before = _upstream_requests(sim)
            t0 = time.perf_counter()
            frame = pyupbit.get_ohlcv("KRW-BTC", interval="minute10", count=400, to=to, period=0)
            elapsed = (time.perf_counter() - t0) * 1000
            made = _upstream_requests(sim) - before
            sources = ", ".join(dict.fromkeys(h.get("x-marketspine-source", "?") for h in seen))
            rows = "error" if frame is None else f"{len(frame):,}"
            table.add_row(call, rows, sources, str(made), f"{elapsed:.1f}")
        console.print(table)
    finally:
        pyupbit.request_api.requests = original
