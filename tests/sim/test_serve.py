"""``marketspine sim`` as a real process: prints its URL, serves, stops on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

pytestmark = pytest.mark.process

URL_LINE = re.compile(
    r"marketspine sim: (http://127\.0\.0\.1:(\d+)) \(ws://127\.0\.0\.1:(\d+)/websocket/v1\) "
    r"seed=5 region=kr"
)


def read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The first stdout line of ``proc``, waiting at most ``timeout_s``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"no output within {timeout_s} s")
    return proc.stdout.readline()


@pytest.fixture
def sim_process() -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketspine", "sim", "--port", "0", "--seed", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sim_prints_its_url_serves_and_stops_on_sigterm(
    sim_process: subprocess.Popen[str],
) -> None:
    line = read_line(sim_process, 30)
    match = URL_LINE.fullmatch(line.strip())
    assert match is not None, line
    base, port, ws_port = match.groups()
    assert port == ws_port and int(port) > 0
    response = httpx.get(f"{base}/v1/market/all", timeout=10)
    assert response.status_code == 200
    assert "KRW-BTC" in [row["market"] for row in response.json()]
    assert response.headers["Remaining-Req"] == "group=market; min=600; sec=9"
    started = time.monotonic()
    sim_process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert sim_process.wait(timeout=10) == -signal.SIGTERM
    assert time.monotonic() - started < 5
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/v1/market/all", timeout=2)


def test_sim_stops_on_sigint(sim_process: subprocess.Popen[str]) -> None:
    match = URL_LINE.fullmatch(read_line(sim_process, 30).strip())
    assert match is not None
    base = match.group(1)
    assert httpx.get(f"{base}/sim/stats", timeout=10).status_code == 200
    sim_process.send_signal(signal.SIGINT)
    assert sim_process.wait(timeout=10) == 0  # Ctrl-C is the normal way to stop it
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/sim/stats", timeout=2)


def test_a_taken_port_is_one_line_on_stderr_and_exit_2(
    sim_process: subprocess.Popen[str],
) -> None:
    match = URL_LINE.fullmatch(read_line(sim_process, 30).strip())
    assert match is not None
    port = match.group(2)
    second = subprocess.run(
        [sys.executable, "-m", "marketspine", "sim", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2
    assert second.stderr.startswith(f"marketspine: error: cannot listen on 127.0.0.1:{port}")
    assert "--port 0 picks a free one" in second.stderr
    assert second.stdout == ""
