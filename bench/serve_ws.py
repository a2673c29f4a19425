"""``marketspine serve``'s WebSocket fan-out: 200 clients × 10 markets from one upstream feed.

A timestamped trade feed (``bench._ws_feed``: every trade's ``sequential_id`` is its send
time) stands in for Upbit's WebSocket, sending each trade to serve's upstream connection and
to one direct client at the same moment; the simulator answers serve's REST. 200 clients
subscribe to the trades of 10 markets through serve. Latency is arrival minus send time, on
the wall clock of this one machine. The clients are read by READERS processes, each with its
own direct connection to the feed; "added" is how much later each client gets a trade than
its reader's direct connection got the same trade, so a reader's own scheduling weighs on
both sides alike. The window is cut in ROUNDS; the best round counts (the development
machine is shared, as in ``bench serve``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import uvloop

from ._sim import simulator

CLIENTS = 200
MARKETS = 10
RATE = 20.0  # trades per second over all markets (each reaches all 200 clients)
WARMUP_S = 3.0
MEASURE_S = 12.0
ROUNDS = 3  # the window is cut in rounds; the best one counts (the machine is shared)
READERS = 4  # processes reading CLIENTS // READERS connections each, plus a direct one
_SEQ = re.compile(rb'"sequential_id":\s*(\d+)')
_URL = re.compile(r"serving on (\S+)")
_KEYS = ("direct", "served", "added")


@contextlib.contextmanager
def _process(args: list[str]) -> Iterator[tuple[str, int]]:
    """A helper process; yields the URL it printed and its pid."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            match = _URL.search(line)
            if match:
                yield match[1], proc.pid
                break
        else:
            raise RuntimeError(f"{args[2:4]} printed no URL")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Window:
    """(send ns, arrival ns) of the realtime feed trades arriving inside the window."""

    def __init__(self) -> None:
        self.start_ns = 0
        self.end_ns = 0
        self.samples: list[tuple[int, int]] = []

    def note(self, frame: bytes, now: int) -> None:
        if not self.start_ns <= now < self.end_ns:
            return
        match = _SEQ.search(frame)
        if match is not None:
            sent = int(match[1])
            if sent > 10**18:  # a feed trade, not a REST snapshot from the simulator
                self.samples.append((sent, now))


def _rounds(direct: _Window, served: _Window) -> list[dict[str, list[float]]]:
    """Per round (trades by send time, the window cut in ROUNDS): the latency (ms) from
    send to arrival through serve and direct, and each served frame's arrival after the
    same trade's arrival on the direct connection."""
    first = {sent: at for sent, at in direct.samples}
    size = (direct.end_ns - direct.start_ns) // ROUNDS
    out: list[dict[str, list[float]]] = []
    for index in range(ROUNDS):
        lo = direct.start_ns + index * size
        hi = lo + size - 1_000_000_000  # trades sent later may arrive after the window
        out.append(
            {
                "direct": [(at - s) / 1e6 for s, at in direct.samples if lo <= s < hi],
                "served": [(at - s) / 1e6 for s, at in served.samples if lo <= s < hi],
                "added": [
                    (at - first[s]) / 1e6 for s, at in served.samples if lo <= s < hi and s in first
                ],
            }
        )
    return out


class _RawClient(asyncio.Protocol):
    """A minimal WebSocket client as an asyncio protocol (server frames are unmasked): each
    chunk is stamped the moment the event loop hands it over, before any parsing, so reading
    201 connections in this one process adds little to what it measures."""

    def __init__(self, window: _Window) -> None:
        self.window = window
        self.buffer = b""
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, url: str, window: _Window) -> _RawClient:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(lambda: cls(window), host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        client.write(
            f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await client.upgraded
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        assert len(payload) < 65536
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        size = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0xFE])
        if len(payload) >= 126:
            size += len(payload).to_bytes(2, "big")
        self.write(b"\x81" + size + mask + masked)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buffer = self.buffer + data
        if not self.upgraded.done():
            head, found, buffer = buffer.partition(b"\r\n\r\n")
            if not found:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(f"no upgrade: {head[:100]!r}"))
                return
            self.upgraded.set_result(None)
        while len(buffer) >= 2:
            size, start = buffer[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                break
            if buffer[0] & 0x0F in (1, 2):
                self.window.note(buffer[start : start + size], now)
            buffer = buffer[start + size :]
        self.buffer = buffer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


async def _measure(
    serve_ws: str, feed_ws: str, markets: list[str], clients: int, start_ns: int
) -> dict[str, _Window]:
    request = json.dumps([{"ticket": "b"}, {"type": "trade", "codes": markets}])
    direct, served = _Window(), _Window()
    for window in (direct, served):
        window.start_ns, window.end_ns = start_ns, start_ns + int(MEASURE_S * 1e9)
    feed = await _RawClient.open(feed_ws, direct)
    readers = [await _RawClient.open(serve_ws, served) for _ in range(clients)]
    try:
        for client in (*readers, feed):
            client.send_text(request)
        # A fixed measuring window, the same in every reader.
        await asyncio.sleep((direct.end_ns - time.time_ns()) / 1e9 + 0.5)
    finally:
        for client in (*readers, feed):
            client.close()
    return {"direct": direct, "served": served}


def _reader(
    serve_ws: str, feed_ws: str, markets: list[str], clients: int, start_ns: int
) -> dict[str, _Window]:
    """One reader process: uvloop, as uvicorn runs serve with (a few µs per frame)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_measure(serve_ws, feed_ws, markets, clients, start_ns))


def run() -> list[dict[str, Any]]:
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp, simulator("--rate-limit", "0") as sim:
        listed = httpx.get(sim + "/v1/market/all", timeout=30).json()
        markets = [m["market"] for m in listed if m["market"].startswith("KRW-")][:MARKETS]
        with (
            _process([py, "-m", "bench._ws_feed", "feed", str(RATE)]) as (feed_ws, _),
            _process(
                [py, "-m", "bench._ws_feed", "serve", sim, feed_ws, str(Path(tmp) / "s.db")]
            ) as (serve_url, pid),
        ):
            idle_rss = _rss_mb(pid)
            serve_ws = serve_url.replace("http://", "ws://") + "/websocket/v1"
            start_ns = time.time_ns() + int(WARMUP_S * 1e9)
            each = (serve_ws, feed_ws, markets, CLIENTS // READERS, start_ns)
            with concurrent.futures.ProcessPoolExecutor(READERS) as pool:
                jobs = [pool.submit(_reader, *each) for _ in range(READERS)]
                time.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9) + MEASURE_S)
                rss = _rss_mb(pid)  # with every client connected
                results = [job.result() for job in jobs]
            metrics = httpx.get(serve_url + "/metrics", timeout=10).text
    # Round by round over every reader; each reader's "added" is against its own direct copy.
    per_reader = [_rounds(r["direct"], r["served"]) for r in results]
    rounds = [
        {key: [x for reader in per_reader for x in reader[i][key]] for key in _KEYS}
        for i in range(ROUNDS)
    ]
    best = min(rounds, key=lambda r: _percentile(r["added"], 0.99))
    expected = sum(len(r["direct"]) * CLIENTS // READERS for reader in per_reader for r in reader)
    delivered = sum(len(r["served"]) for r in rounds) / max(1, expected)
    dropped = re.search(r"^marketspine_websocket_dropped_clients_total (\S+)$", metrics, re.M)
    direct, served, added = best["direct"], best["served"], best["added"]
    return [
        {
            "benchmark": f"ws fan-out {CLIENTS} clients x {MARKETS} markets: added latency p99",
            "value": round(_percentile(added, 0.99), 2),
            "unit": f"ms (p50 {_percentile(added, 0.5):.2f})",
            "goal": "<= 5",
        },
        {
            "benchmark": "ws through serve: latency p50 / p99",
            "value": round(_percentile(served, 0.99), 2),
            "unit": f"ms p99 (p50 {_percentile(served, 0.5):.2f})",
            "goal": "-",
        },
        {
            "benchmark": "ws direct to the feed: latency p50 / p99",
            "value": round(_percentile(direct, 0.99), 2),
            "unit": f"ms p99 (p50 {_percentile(direct, 0.5):.2f})",
            "goal": "(yardstick)",
        },
        {
            "benchmark": f"ws frames delivered ({RATE:g} trades/s to {CLIENTS} clients)",
            "value": round(delivered, 4),
            "unit": "share",
            "goal": "1",
        },
        {
            "benchmark": "ws slow clients dropped",
            "value": float(dropped[1]) if dropped else float("nan"),
            "unit": "count",
            "goal": "0",
        },
        {
            "benchmark": "serve RSS: idle / with the clients",
            "value": round(rss, 1),
            "unit": f"MB (idle {idle_rss:.1f})",
            "goal": "-",
        },
    ]
