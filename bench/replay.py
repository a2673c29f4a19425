"""Replay speed at ``--speed 0``: events/s that ``Spine.replay`` hands out from an SQLite
recording (goal: 100,000/s), and trade frames/s that ``marketspine replay`` (its own process)
sends to one raw WebSocket client subscribed to every market (goal: 20,000/s).

The recording is ``bench.record``'s: KRW-market-like trades over 20 markets, written straight
into a temporary SQLite file. The WebSocket figure runs from the subscription to the last
frame read, so it includes the client's own reading and parsing of each frame (websockets
and msgspec, on the same 2 cores); the server's CPU time per frame (from /proc) is its own
cost, whatever else the machine runs.

``python -m bench.replay [TRADES]`` prints the table (default 200,000 trades).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import connect

from bench.record import MARKETS, make_trades
from marketspine._base.time import format_utc
from marketspine._spine.spine import Spine
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore

TRADES = 200_000
SPINE_GOAL = 100_000
WS_GOAL = 20_000
_URL = re.compile(r"(http://[\d.]+:\d+)")
decode = msgspec.json.Decoder().decode


def _row(name: str, value: float, unit: str, goal: str) -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


async def _write(path: Path, n: int) -> tuple[int, int]:
    trades = make_trades(n)
    async with SQLiteStore(path) as store:
        await SQLiteRecording(store).write(trades)
    return trades[0].ms, trades[-1].ms + 1


async def _spine(path: Path, start: int, end: int) -> tuple[int, float, float]:
    """Events replayed, wall seconds and CPU seconds (this process, store thread included)."""
    async with Spine(db=path) as spine:
        began, cpu = time.perf_counter(), time.process_time()
        count = 0
        async for _ in spine.replay(["trade"], MARKETS, start=start, end=end, speed=0):
            count += 1
        return count, time.perf_counter() - began, time.process_time() - cpu


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _websocket(url: str, n: int, pid: int) -> tuple[float, float | None]:
    """Wall seconds to read ``n`` frames, and the server's CPU seconds meanwhile."""
    ws_url = url.replace("http", "ws", 1) + "/websocket/v1"
    async with connect(ws_url, max_size=None, max_queue=None) as ws:
        cpu = _cpu_seconds(pid)
        began = time.perf_counter()
        await ws.send(json.dumps([{"ticket": "bench"}, {"type": "trade", "codes": MARKETS}]))
        for _ in range(n):
            decode(await ws.recv())
        seconds = time.perf_counter() - began
        after = _cpu_seconds(pid)
        return seconds, None if cpu is None or after is None else after - cpu


def _replay_process(path: Path, start: int, end: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketspine", "replay", "--db", str(path),
         "--from", format_utc(start) + f".{start % 1000:03d}", "--to",
         format_utc(end) + f".{end % 1000:03d}", "--speed", "0", "--kinds", "trade",
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = _URL.search(line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"marketspine replay did not print its URL: {line!r}")
    return proc, match[1]


def run(n: int = TRADES) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recording.sqlite"
        start, end = asyncio.run(_write(path, n))
        count, seconds, spine_cpu = asyncio.run(_spine(path, start, end))
        assert count == n, f"replayed {count} of {n} trades"
        proc, url = _replay_process(path, start, end)
        try:
            ws_seconds, server_cpu = asyncio.run(_websocket(url, n, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    rows = [
        _row("Spine.replay at speed 0 (trades, 20 markets)", n / seconds, "events/s",
             f">= {SPINE_GOAL:,}"),
        _row("Spine.replay CPU per event (store thread included)", spine_cpu / n * 1e6, "us",
             f"<= {1e6 / SPINE_GOAL:g}"),
        _row("marketspine replay --speed 0 to one WebSocket client", n / ws_seconds, "frames/s",
             f">= {WS_GOAL:,}"),
    ]  # fmt: skip
    if server_cpu is not None:  # the server's own cost, whatever else the machine runs
        rows.append(
            _row("marketspine replay CPU per frame sent", server_cpu / n * 1e6, "us", "<= 50")
        )
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else TRADES):
        print(f"{row['benchmark']:56} {row['value']:>14,.1f} {row['unit']:10} {row['goal']}")
