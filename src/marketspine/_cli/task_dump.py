"""``SIGUSR1`` prints where a running command is: every asyncio task with the chain of
coroutines it is awaiting in, then every thread's stack (``kill -USR1 PID`` on a collector
that seems stuck). The work of a long command lives in tasks, which ``faulthandler`` alone
does not show, and ``Task.print_stack`` shows only a suspended task's outermost frame."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["await_chain", "dump_tasks", "dumping_on_signal", "dumping_tasks_on_signal"]


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where ``task`` is: one line per coroutine it is suspended in, outermost first."""
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:  # the future at the bottom: the task's repr shows it already
            break
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return lines


def dump_tasks(file: TextIO | None = None) -> None:
    """Print every task of the running loop with its await chain, then every thread."""
    out = file or sys.stderr
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    print(f"marketspine: {len(tasks)} asyncio tasks", file=out)
    for task in tasks:
        print(f"--- {task!r}", file=out)
        print("\n".join(await_chain(task)), file=out)
    out.flush()
    with contextlib.suppress(ValueError, OSError, AttributeError):  # no real file behind it
        faulthandler.dump_traceback(file=out, all_threads=True)


@contextlib.contextmanager
def dumping_tasks_on_signal(signum: int | None = None) -> Iterator[None]:
    """While inside (in the running loop), ``signum`` (default ``SIGUSR1``) dumps the tasks
    to stderr; a no-op where the loop takes no signal handlers (Windows, another thread)."""
    number = signum if signum is not None else getattr(signal, "SIGUSR1", None)
    loop = asyncio.get_running_loop()
    try:
        if number is None:
            raise NotImplementedError
        loop.add_signal_handler(number, dump_tasks)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(number)


@contextlib.contextmanager
def dumping_on_signal(signum: int | None = None) -> Iterator[None]:
    """``dumping_tasks_on_signal`` for a command whose event loop another library runs in
    this (main) thread, as uvicorn runs serve's: while inside, ``signum`` dumps the tasks of
    the loop running then, or only the threads before the loop starts and after it ends
    (a stop that hangs there: a thread being joined). A no-op off the main thread."""
    number = signum if signum is not None else getattr(signal, "SIGUSR1", None)
    if number is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def dump(signum: int, frame: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            print("marketspine: 0 asyncio tasks (no event loop running)", file=sys.stderr)
            with contextlib.suppress(ValueError, OSError, AttributeError):
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            return
        dump_tasks()

    previous = signal.signal(number, dump)
    try:
        yield
    finally:
        signal.signal(number, previous)
