"""The simulator as a separate process, so its CPU time never counts against the benchmark."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
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


@contextlib.contextmanager
def simulator(*flags: str) -> Iterator[str]:
    """A simulator process for the duration of the block; yields its base URL."""
    proc, url = start_simulator(*flags)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
