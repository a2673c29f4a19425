"""Running the ``marketspine`` command line in tests: the real console script (the one pip
installed) in a child process, or its ``main`` in this process where what a test checks is
arguments, messages and exit codes rather than the process around them."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("marketspine"))


def behind_upstream() -> None:
    """``preexec_fn`` for a client process in a test (collect, serve): behind the simulator,
    level with the other tests' workers. Upstream is another machine; here it shares two
    cores with the clients and the other tests. A starved simulator stamps requests late,
    so that sends a second apart reach its limiter bunched into one window; a starved
    client sends late after its budget granted the slot, into the next window's second.
    Either is a 429 now and then under load, with correct clients.
    - At nice 10, behind the four workers, the Redis-outage test met one in 3 of 17 full
      runs.
    - At -10, ahead of them, the workers may starve instead while those tests run: 4 of 13
      full runs failed in other tests (a wait timed out, a stop hung, two races lost),
      against 1 of 6 before (the outage's 429 aside).
    - So, as root (our machines and CI): nice 0, with the simulator at -20. Otherwise 10,
      with the simulator at 0, the only way to keep it ahead."""
    if os.geteuid() != 0:
        os.nice(10)


# The simulator in a process of its own (its own interpreter: a test's threads never slow its
# clock of arrivals), its clock stopped at a given time so the history is a reference's.
_SIM = """
import sys
from marketspine._base.time import parse_time
from marketspine.sim import SimConfig, running
now = parse_time(sys.argv[1])
with running(SimConfig(rate_limit=10), clock=lambda: now) as url:
    print(url, flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def _ahead_of_tests() -> None:
    """In the simulator's process: as far ahead of the other tests' processes as allowed
    (root, as on our machines and in CI; the most the scheduler gives, about 87 times a
    plain process's weight, where -10 gave 9); elsewhere ``behind_upstream`` alone. Its
    stamps of arrivals then lag less when the four test workers keep both cores busy."""
    with contextlib.suppress(PermissionError):
        os.nice(-20)


def json_log_lines(stderr: str) -> list[dict[str, Any]]:
    """The lines of a command's stderr under ``--log-format json`` (progress lines and
    click's messages are text, not JSON)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@contextlib.contextmanager
def sim_process(tmp_path: Path, now: str) -> Iterator[str]:
    """A rate-limited simulator (10 requests/s) in a process of its own, its clock stopped at
    ``now`` (ISO time): the URL, for tests whose clients are processes too. Where clients
    and simulator share two cores with the other tests, an in-process simulator starved
    of CPU stamps arrivals late and bunches sends a second apart into one window."""
    with (tmp_path / "sim.err").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", _SIM, now],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            preexec_fn=_ahead_of_tests,
        )  # fmt: skip
    assert process.stdout is not None and process.stdin is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "the simulator printed no URL within 60 s"
        url = process.stdout.readline().strip()  # the one line it prints
        assert url.startswith("http://"), (tmp_path / "sim.err").read_text()
        yield url
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


COMMANDS = ("sim", "collect", "export", "status", "warmup")
# What ``run`` sets for the child; ``run_in_process`` sets the same around its call.
ENV = {"COLUMNS": "60", "NO_COLOR": "1"}


def run(
    *args: str, timeout: float = 60, user: int | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``marketspine ARGS...`` without a terminal; ``user`` runs it as that uid (and
    gid), so file permissions hold even when the tests run as root."""
    env = {**os.environ, **ENV}
    argv = [CONSOLE_SCRIPT, *args]
    if user is not None:
        # setpriv rather than Popen(user=...): this sandbox lets only the former exec the
        # interpreter under /root as another user.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as another user needs setpriv (util-linux)")
        argv = [setpriv, *_as_user(user), *argv]
        env["PYTHONPATH"] = _source_for(user)
        if cwd is None:  # the test's own folder may be one the user cannot enter
            cwd = "/"
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )


def _as_user(user: int) -> list[str]:
    return [f"--reuid={user}", f"--regid={user}", "--clear-groups"]


@functools.cache
def _package_copy() -> Path:
    """A copy of the marketspine source under test in a fresh folder every user can read.

    The checkout may sit where other users cannot enter (a clone under a 0700 home): there
    another user's interpreter would skip the unreadable ``PYTHONPATH`` entry and import
    whatever other marketspine it finds (the editable install's), or none. Removed at exit.
    """
    import marketspine

    folder = Path(tempfile.mkdtemp(prefix="marketspine-src-"))
    atexit.register(shutil.rmtree, folder, True)
    shutil.copytree(
        Path(marketspine.__file__).parent,
        folder / "marketspine",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for path in [folder, *folder.rglob("*")]:  # a umask of 077 left them private
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def _source_for(user: int) -> str:
    """The ``PYTHONPATH`` under which ``user`` imports the marketspine under test (a copy
    it can read); skips the test, saying why, when that user cannot run this interpreter
    with marketspine's dependencies (a virtualenv in a folder it cannot enter)."""
    copy = _package_copy()
    pythonpath = os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    reason = _cannot_import(user, pythonpath)
    if reason is not None:
        pytest.skip(
            f"uid {user} cannot run {sys.executable} with marketspine's dependencies "
            f"(is the interpreter's environment in a folder other users cannot enter, such "
            f"as a 0700 home?): {reason}"
        )
    return pythonpath


@functools.cache
def _cannot_import(user: int, pythonpath: str) -> str | None:
    """None when ``user`` imports the copy of marketspine and its command line, else why not."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    probe = "import marketspine, marketspine._cli.main; print(marketspine.__file__)"
    try:
        done = subprocess.run(
            [setpriv, *_as_user(user), sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": pythonpath},
            cwd="/",
        )
    except OSError as exc:
        return str(exc)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    imported = Path(done.stdout.strip())
    if not imported.is_relative_to(_package_copy()):
        return f"it imported {imported}, not the copy of the source under test"
    return None


def run_in_process(*args: str, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """``marketspine ARGS...`` through ``marketspine._cli.main.main`` in this process, as ``run``
    returns it: the exit code, stdout and stderr (the log lines main sends there included).

    Spares a test the interpreter's start-up and imports (most of a short command's time).
    Whatever the call changes is put back: cwd, the environment, stdin/stdout/stderr, the
    root logger. An exception main lets through is printed as the interpreter would (a
    traceback, exit 1), so tests that check there is none keep failing when there is one.
    What only a process shows (the console script itself, signals, another uid, resource
    limits, a broken pipe, what is printed or left running at interpreter exit) needs
    ``run``.
    """
    from marketspine._cli.main import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    code: int
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        if cwd is not None:
            patch.chdir(cwd)
        patch.setattr(sys, "stdin", io.StringIO())
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        # No handlers, as in a fresh interpreter: main's logging.basicConfig then sends the
        # library's warnings to this stderr (pytest's capture would take them otherwise).
        root.handlers = []
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # as the interpreter exits on SystemExit("message")
                print(exc.code, file=err)
                code = 1
        except Exception:
            err.write(traceback.format_exc())
            code = 1
        finally:
            root.handlers = handlers
            root.setLevel(level)
    return subprocess.CompletedProcess(["marketspine", *args], code, out.getvalue(), err.getvalue())


def closed_port() -> str:
    """A loopback URL nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def rest_candles(
    base_url: str, path: str, market: str, since_ms: int, until_ms: int
) -> list[dict[str, Any]]:
    """Every candle upstream (a simulator) has in ``[since, until)``, ascending, paged by hand."""
    import httpx

    from marketspine._base.time import format_utc, parse_naive_utc

    rows: list[dict[str, Any]] = []
    to = until_ms
    with httpx.Client(base_url=base_url) as http:
        while True:
            page = http.get(
                path, params={"market": market, "count": 200, "to": format_utc(to) + "Z"}
            ).json()
            rows.extend(c for c in page if parse_naive_utc(c["candle_date_time_utc"]) >= since_ms)
            if len(page) < 200 or parse_naive_utc(page[-1]["candle_date_time_utc"]) < since_ms:
                return rows[::-1]
            to = parse_naive_utc(page[-1]["candle_date_time_utc"])


def minute_db(path: Path, first_ms: int, n: int, market: str = "KRW-BTC") -> None:
    """A real marketspine SQLite file holding ``n`` 1m candles from ``first_ms``, all covered."""
    import asyncio

    from marketspine._base.timeframes import TIMEFRAMES
    from marketspine._store.sqlite import SQLiteStore
    from marketspine.records import Candle

    candles = [
        Candle(market, "1m", first_ms + i * 60_000, 100.0 + i, 101.5 + i, 99.25 + i,
               100.5 + i, 0.25 * i, 10.01 * i, first_ms + i * 60_000 + 59_999)
        for i in range(n)
    ]  # fmt: skip

    async def write() -> None:
        async with SQLiteStore(path) as store:
            covered = (first_ms, first_ms + n * 60_000)
            await store.write_page(market, TIMEFRAMES["1m"], candles, covered)

    asyncio.run(write())


NOBODY = 65534


def unprivileged() -> int | None:
    """The uid to run the CLI as so that file permissions apply: nobody when the tests run
    as root (root ignores them), else None (the current user already obeys them)."""
    return NOBODY if os.geteuid() == 0 else None


@contextlib.contextmanager
def shared_tmp() -> Iterator[Path]:
    """A fresh folder every user can enter (pytest's tmp_path is private to its owner), for
    runs as ``unprivileged()``; removed afterwards whatever its modes became."""
    folder = Path(tempfile.mkdtemp(prefix="marketspine-cli-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o777)
        shutil.rmtree(folder, ignore_errors=True)


def exit_code(process: subprocess.Popen[Any], stderr: Path, timeout: float = 30.0) -> int:
    """``process``'s exit code once it ends within ``timeout`` s. One still running then
    fails the test with where it hangs: its tasks, dumped by ``SIGUSR1`` into ``stderr``
    (the file its stderr goes to), as one would ask a stuck command."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    pytest.fail(
        f"still running {timeout:g} s after it was asked to stop:\n"
        + where_it_hangs(process, stderr)
    )


def where_it_hangs(process: subprocess.Popen[Any], stderr: Path) -> str:
    """Ask a process that would not stop where it is (``SIGUSR1``: its asyncio tasks, then
    every thread's stack, into ``stderr``, the file its stderr goes to), kill it, and return
    the end of what it wrote."""
    process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    # The threads' stacks come last, written at once by faulthandler.
    while "most recent call first" not in stderr.read_text() and process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    text = stderr.read_text()
    dump = text.rfind("asyncio tasks")  # from the line that starts the dump, all of it
    return text[text.rfind("\n", 0, dump) + 1 :] if dump >= 0 else text[-8000:]
