"""Running the real ``marketspine`` console script (the one pip installed) in tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("marketspine"))
COMMANDS = ("sim", "collect", "export", "status", "warmup")


def run(
    *args: str, timeout: float = 60, user: int | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``marketspine ARGS...`` without a terminal; ``user`` runs it as that uid (and
    gid), so file permissions hold even when the tests run as root."""
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1"}
    return subprocess.run(
        [CONSOLE_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
    )


def closed_port() -> str:
    """A loopback URL nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
