"""The simulator as a separate process, so its CPU time never counts against the benchmark."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

_URL = re.compile(r"(http://[\d.]+:\d+)")


def start_simulator(*flags: str) -> tuple[subprocess.Popen[str], str]:
    """Start `marketspine sim --port 0 FLAGS...`; returns the process and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketspine", "sim", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = _URL.search(line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"the simulator did not print its URL: {line!r}")
    return proc, match[1]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


@contextlib.contextmanager
def simulator(*flags: str) -> Iterator[str]:
    """A simulator process for the duration of the block; yields its base URL. A SIGTERM
    (``kill`` on a long soak) ends the block as an exception would, so the simulator is
    stopped too rather than left running on its own."""
    proc, url = start_simulator(*flags)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        yield url
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        proc.terminate()
        proc.wait(timeout=10)
