"""Helpers for the serve tests: ``marketspine serve`` as a real process (``python -m
marketspine serve``) in front of a loopback simulator, started on a free port, its printed
URL parsed, stopped with SIGINT and checked to exit cleanly."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

_START_TIMEOUT_S = 30.0
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}  # /api needs a token


@dataclass
class ServeProcess:
    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def get(
        self, path: str, *, headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers=headers, timeout=15)


@contextlib.contextmanager
def serve_process(
    upstream: str, db: Path | str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[ServeProcess]:
    """Start ``marketspine serve`` and yield once it printed ``serving on URL``."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "marketspine",
            "serve",
            "--upstream",
            upstream,
            "--db",
            str(db),
            "--port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    url = None
    try:
        while url is None:
            try:
                line = lines.get(timeout=_START_TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"serve printed no URL within {_START_TIMEOUT_S} s") from None
            if line is None:
                err = process.stderr.read() if process.stderr else ""
                raise AssertionError(f"serve exited before serving: {seen} {err}")
            seen.append(line)
            if line.startswith("serving on "):
                url = line.removeprefix("serving on ").strip()
        served = ServeProcess(url, process, seen)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError("serve did not stop within 20 s of SIGINT") from None
            assert code == 0, process.stderr.read() if process.stderr else code
        while True:  # the rest of stdout, for the tests that read it
            try:
                rest = lines.get_nowait()
            except queue.Empty:
                break
            if rest is not None:
                seen.append(rest)


@contextlib.contextmanager
def serve_processes(upstream: str, dbs: list[Path], *extra: str) -> Iterator[list[ServeProcess]]:
    """``serve_process`` for each of ``dbs``, started side by side (start-up dominates)."""
    managers = [serve_process(upstream, db, *extra) for db in dbs]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(managers)) as pool:
        started = [pool.submit(manager.__enter__) for manager in managers]
        served, failure = [], None
        for manager, future in zip(managers, started, strict=True):
            try:
                served.append(future.result())
            except Exception as exc:
                failure = failure or exc
            else:
                stack.push(manager.__exit__)
        if failure is not None:
            raise failure
        yield served


def sim_stats(sim: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(sim + "/sim/stats", timeout=10).json()
    return stats
