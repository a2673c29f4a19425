"""Helpers for the serve tests: ``marketspine serve`` as a real process (``python -m
marketspine serve``) in front of a loopback simulator, started on a free port, its printed
URL parsed, stopped with SIGINT and checked to exit cleanly; and serve's service in-process,
in front of the simulator's ASGI app, asked through its own."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from clitools import where_it_hangs
from starlette.types import ASGIApp

from marketspine._serve.app import create_service_app
from marketspine._serve.security import AllowedHosts
from marketspine._serve.service import ServeService
from marketspine._store.sqlite import CandleStore

_START_TIMEOUT_S = 30.0
# serve's own bounds on stopping: 5 s for open connections (timeout_graceful_shutdown), then
# up to 20 s for the notifier to send what it folded (2 x SEND_TIMEOUT_S); and some slack.
_STOP_TIMEOUT_S = 40.0
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}  # /api needs a token


@dataclass
class ServeProcess:
    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    err: Path | None = None  # where its stderr goes: a file, never a pipe nobody reads
    err_text: str | None = None  # all of it, once it stopped (the file is gone then)

    def stderr(self) -> str:
        """What it wrote to stderr so far (all of it once it stopped)."""
        if self.err_text is not None or self.err is None:
            return self.err_text or ""
        return self.err.read_text()

    def get(
        self, path: str, *, headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers=headers, timeout=15)


@contextlib.contextmanager
def serve_process(
    upstream: str, db: Path | str, *extra: str, env: dict[str, str] | None = None
) -> Iterator[ServeProcess]:
    """Start ``marketspine serve`` and yield once it printed ``serving on URL``. Its stderr
    goes to a temporary file (``ServeProcess.stderr()``): a pipe read only at the end would
    stall a serve that logs more than the pipe holds."""
    err_fd, err_name = tempfile.mkstemp(prefix="marketspine-serve-", suffix=".err")
    err = Path(err_name)
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
        stderr=err_fd,
        text=True,
        env=env,
    )
    os.close(err_fd)  # the child holds its own
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    url = None
    served: ServeProcess | None = None
    try:
        while url is None:
            try:
                line = lines.get(timeout=_START_TIMEOUT_S)
            except queue.Empty:
                raise AssertionError(f"serve printed no URL within {_START_TIMEOUT_S} s") from None
            if line is None:
                process.wait()
                raise AssertionError(f"serve exited before serving: {seen} {err.read_text()}")
            seen.append(line)
            if line.startswith("serving on "):
                url = line.removeprefix("serving on ").strip()
        served = ServeProcess(url, process, seen, err)
        yield served
    finally:
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    code = process.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    raise AssertionError(
                        f"serve did not stop within {_STOP_TIMEOUT_S:g} s of SIGINT:\n"
                        + where_it_hangs(process, err)
                    ) from None
                assert code == 0, err.read_text()
        finally:
            if served is not None:
                served.err_text = err.read_text()
            err.unlink()
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


def in_process_serve(
    upstream: ASGIApp | httpx.AsyncBaseTransport, db: Path | str | CandleStore, **options: Any
) -> ServeService:
    """serve's service (not entered) in front of ``upstream`` (the simulator's ASGI app, a
    wrapper holding some of its answers, or a transport), storing in ``db``; admin token
    ``t``, no warmup loop and no live watching unless ``options`` say otherwise."""
    if not isinstance(upstream, httpx.AsyncBaseTransport):
        upstream = httpx.ASGITransport(app=upstream)
    settings: dict[str, Any] = {"admin_token": "t", "warmup_every_s": -1, "live_on_demand": False}
    return ServeService("http://sim", db, transport=upstream, **(settings | options))


def service_client(
    service: ServeService, *, allowed_hosts: AllowedHosts | None = None, **options: Any
) -> httpx.AsyncClient:
    """A client of ``service``'s app in-process (the service entered by the caller: the app's
    lifespan is not run); with ``allowed_hosts``, behind the ``Host`` check as serve runs."""
    settings: dict[str, Any] = {"base_url": "http://serve", "timeout": 30}
    app = create_service_app(service, allowed_hosts=allowed_hosts)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), **(settings | options))
