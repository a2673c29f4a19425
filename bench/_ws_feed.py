"""A timestamped Upbit trade feed for ``bench serve_ws``, and serve in front of it.

``python -m bench._ws_feed feed RATE [BURST]`` serves ``/websocket/v1`` and prints
``serving on ws://HOST:PORT/websocket/v1``: every connection gets the trades of the codes it
subscribed (Upbit's request format, DEFAULT frames), ``RATE`` trades per second in all,
round-robin over the subscribed codes, ``BURST`` (default 1) codes' trades back to back.
Each trade is sent to every connection at the same moment, in a new random order each
time, and its ``sequential_id`` is the wall-clock time it was sent in nanoseconds, so a
receiver in another process on this machine reads its latency off the frame. (The simulator
ticks each connection on its own 100 ms schedule, which would put up to 100 ms of phase
between two connections.)

``python -m bench._ws_feed serve REST_URL WS_URL DB`` runs ``marketspine serve`` with REST
from ``REST_URL`` (the simulator) and the live feed from ``WS_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class _Feed:
    def __init__(self, rate: float, burst: int) -> None:
        self.period = burst / rate
        self.burst = burst
        self.codes: dict[ServerConnection, list[str]] = {}
        self.last_ns = 0
        self.random = random.Random()

    async def handler(self, ws: ServerConnection) -> None:
        self.codes[ws] = []
        try:
            async for message in ws:
                request = json.loads(message)
                self.codes[ws] = sorted(
                    code
                    for item in request
                    if item.get("type") == "trade"
                    for code in item.get("codes", [])
                )
        except ConnectionClosed:
            pass
        finally:
            del self.codes[ws]

    async def broadcast(self) -> None:
        turn = 0
        next_at = time.perf_counter()
        while True:
            next_at += self.period
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            # A burst sends the next BURST codes' trades back to back, each to every
            # connection before the next one.
            for _ in range(self.burst):
                turn += 1
                frames: dict[str, bytes] = {}
                # Each send takes tens of µs: in a fixed order the connection opened last
                # (serve's, opened at its first subscriber, after the readers' direct ones)
                # would always get each trade last. Shuffled, no connection is favoured.
                order = list(self.codes.items())
                self.random.shuffle(order)
                for ws, codes in order:
                    if not codes:
                        continue
                    code = codes[turn % len(codes)]
                    frame = frames.get(code)
                    if frame is None:
                        frame = frames[code] = self.frame(code)
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(frame)

    def frame(self, code: str) -> bytes:
        now_ns = max(time.time_ns(), self.last_ns + 1)
        self.last_ns = now_ns
        ms = now_ns // 1_000_000
        moment = time.gmtime(ms / 1000)
        trade: dict[str, Any] = {
            "type": "trade",
            "code": code,
            "timestamp": ms,
            "trade_date": time.strftime("%Y-%m-%d", moment),
            "trade_time": time.strftime("%H:%M:%S", moment),
            "trade_timestamp": ms,
            "trade_price": 100.0,
            "trade_volume": 1.0,
            "ask_bid": "BID",
            "prev_closing_price": 100.0,
            "change": "EVEN",
            "change_price": 0.0,
            "sequential_id": now_ns,
            "best_ask_price": 101.0,
            "best_ask_size": 1.0,
            "best_bid_price": 99.0,
            "best_bid_size": 1.0,
            "stream_type": "REALTIME",
        }
        return json.dumps(trade).encode()


async def _feed(rate: float, burst: int) -> None:
    feed = _Feed(rate, burst)
    async with serve(feed.handler, "127.0.0.1", 0, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"serving on ws://127.0.0.1:{port}/websocket/v1", flush=True)
        await feed.broadcast()


def main(argv: list[str]) -> None:
    if argv[0] == "feed":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_feed(float(argv[1]), int(argv[2]) if len(argv) > 2 else 1))
        return
    from marketspine._serve.app import run_serve

    rest, ws_url, db = argv[1:4]
    token = "bench-admin-token-0000"
    run_serve(upstream=rest, db=db, host="127.0.0.1", port=0, admin_token=token, ws_url=ws_url)


if __name__ == "__main__":
    main(sys.argv[1:])
