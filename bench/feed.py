"""The shared live feed's takeover: ``serve --redis`` processes in front of one simulator
(speed 60, so trades keep coming), a client subscribed to the trades of 3 markets through a
follower; the lease holder is killed with SIGKILL, the follower takes over, a new follower
is started, and so on for ``ROUNDS`` kills. Measures the time from each kill to the follower
holding the lease, and to the first trade its client receives after that (the REST gap fill
included); counts the trades the clients missed or saw twice against the simulator's history.

Uses the machine's Redis (127.0.0.1:6379); the feed's keys (named after the simulator's
port) are removed afterwards. ``python -m bench.feed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench._sim import simulator
from marketspine._live.shared_stream import feed_prefix

REDIS = "redis://127.0.0.1:6379/0"
MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-XRP"]
ROUNDS = 3


def _row(name: str, value: float, unit: str, goal: str = "") -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


def _serve(sim: str, db: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketspine", "serve", "--upstream", sim, "--db", str(db),
         "--port", "0", "--redis", REDIS],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving on "):
            return proc, line.removeprefix("serving on ").strip()
    raise RuntimeError("serve exited before serving")


async def _client(url: str, seen: list[tuple[float, dict[str, Any]]]) -> ClientConnection:
    ws = await connect(url.replace("http://", "ws://") + "/websocket/v1")
    await ws.send(json.dumps([{"ticket": "b"}, {"type": "trade", "codes": MARKETS}]))

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):  # its serve process was killed
            async for frame in ws:
                message = json.loads(frame)
                if message.get("type") == "trade" and message.get("stream_type") == "REALTIME":
                    seen.append((time.monotonic(), message))

    asyncio.get_running_loop().create_task(read())
    return ws


async def _until(condition: Any, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the feed did not get there in time")
        await asyncio.sleep(0.005)


def _holder(redis: Redis, lease: str) -> int | None:
    value = redis.get(lease)  # b"pid:generation"
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    return int(text.split(":")[0])


async def _kill_and_take_over(
    holder: subprocess.Popen[str], follower: subprocess.Popen[str], url: str,
    redis: Redis, lease: str,
) -> tuple[float, float, list[tuple[float, dict[str, Any]]]]:  # fmt: skip
    """Kill ``holder`` once ``follower``'s client gets trades; returns the seconds to the
    takeover, to the client's first trade after it, and what the client saw."""
    seen: list[tuple[float, dict[str, Any]]] = []
    ws = await _client(url, seen)
    await _until(lambda: len({m["code"] for _, m in seen}) == len(MARKETS))
    # From the last trade before the kill on: the wants settled by then (each change re-sends
    # the holder's request, which the simulator, like Upbit, answers afresh).
    await _until(lambda: all(sum(m["code"] == c for _, m in seen) >= 2 for c in MARKETS))
    holder.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await _until(lambda: _holder(redis, lease) == follower.pid)
    took = time.monotonic()
    await _until(lambda: sum(at > took for at, _ in seen) >= 6)
    await ws.close()
    last_before = {m["code"]: at for at, m in seen if at <= killed}
    checked = [(at, m) for at, m in seen if at >= last_before[m["code"]]]
    return took - killed, min(at for at, _ in seen if at > took) - killed, checked


async def _rounds(
    sim: str, tmp: Path, redis: Redis, lease: str
) -> list[tuple[float, float, list[tuple[float, dict[str, Any]]]]]:
    holder, holder_url = _serve(sim, tmp / "0.db")
    procs = [holder]
    found = []
    try:
        await _client(holder_url, [])  # the first process opens its feed: it holds the lease
        await _until(lambda: _holder(redis, lease) == holder.pid)
        for n in range(1, ROUNDS + 1):
            follower, url = _serve(sim, tmp / f"{n}.db")
            procs.append(follower)
            found.append(await _kill_and_take_over(holder, follower, url, redis, lease))
            holder = follower
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return found


def _history(sim: str, market: str, since: int) -> list[int]:
    """The simulator's trades of ``market`` from ``since`` on, oldest first, paged back with
    ``cursor`` (at speed 60 more than one page of 500 can follow a round's first trade)."""
    ids: list[int] = []
    params: dict[str, str | int] = {"market": market, "count": 500}
    while True:
        rows = httpx.get(f"{sim}/v1/trades/ticks", params=params).json()
        ids = [r["sequential_id"] for r in reversed(rows)] + ids
        if not rows or ids[0] <= since:
            return ids
        params["cursor"] = rows[-1]["sequential_id"]


def _missed_or_repeated(sim: str, seen: list[tuple[float, dict[str, Any]]]) -> int:
    wrong = 0
    for market in MARKETS:
        got = [m["sequential_id"] for _, m in seen if m["code"] == market]
        full = _history(sim, market, got[0])
        span = full[full.index(got[0]) : full.index(got[-1]) + 1]
        wrong += len(got) - len(set(got)) + len(set(span) - set(got))
    return wrong


def run() -> list[dict[str, Any]]:
    with (
        simulator("--speed", "60", "--rate-limit", "0") as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        redis = Redis.from_url(REDIS)
        feed = feed_prefix("marketspine:", sim.replace("http://", "ws://"))
        try:
            found = asyncio.run(_rounds(sim, Path(tmp), redis, feed + "lease"))
            wrong = sum(_missed_or_repeated(sim, seen) for _, _, seen in found)
        finally:
            keys = list(redis.scan_iter(match=feed.replace("{", "\\{").replace("}", "\\}") + "*"))
            if keys:
                redis.delete(*keys)
            redis.close()
    return [
        _row(f"kill -9 of the feed holder -> lease taken over, worst of {ROUNDS}",
             max(took for took, _, _ in found), "s", "<= 3 s"),
        _row(f"kill -9 -> first trade after the takeover at the client, worst of {ROUNDS}",
             max(first for _, first, _ in found), "s"),
        _row("trades missed / seen twice across the takeovers",
             wrong, "trades", "0"),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run():
        print(f"{row['benchmark']:<70} {row['value']:>10,.3f} {row['unit']}")
