"""SIGUSR1 shows where a running command's asyncio tasks are (``_task_dump``)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from marketspine._cli.task_dump import await_chain, dumping_on_signal, dumping_tasks_on_signal


async def waits_inside(event: asyncio.Event) -> None:
    await event.wait()


async def waits_outside(event: asyncio.Event) -> None:
    await waits_inside(event)


async def test_the_await_chain_names_every_coroutine_a_task_is_suspended_in() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(waits_outside(event))
    await asyncio.sleep(0)
    chain = await_chain(task)
    event.set()
    await task
    assert [line.rsplit(" in ", 1)[1] for line in chain] == [
        "waits_outside",
        "waits_inside",
        "wait",
    ]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")
async def test_sigusr1_prints_every_task_where_it_waits(capsys: pytest.CaptureFixture[str]) -> None:
    event = asyncio.Event()
    with dumping_tasks_on_signal():
        task = asyncio.create_task(waits_outside(event), name="the-stuck-one")
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGUSR1)
        seen = ""
        for _ in range(100):  # the handler runs on the loop, soon after the signal
            seen += capsys.readouterr().err
            if "the-stuck-one" in seen:
                break
            await asyncio.sleep(0.01)
    event.set()
    await task
    assert "name='the-stuck-one'" in seen
    assert "in waits_outside\n" in seen and "in waits_inside\n" in seen


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")
async def test_a_loop_run_by_another_library_shows_its_tasks_on_sigusr1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = asyncio.Event()
    with dumping_on_signal():  # entered outside any coroutine of ours, as serve does
        task = asyncio.create_task(waits_outside(event), name="served-one")
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGUSR1)
        seen = capsys.readouterr().err  # a Python handler runs before the next bytecode
    event.set()
    await task
    assert "asyncio tasks" in seen and "name='served-one'" in seen
    assert "in waits_inside\n" in seen


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")
def test_without_a_running_loop_sigusr1_shows_the_threads(
    capfd: pytest.CaptureFixture[str],
) -> None:
    previous = signal.getsignal(signal.SIGUSR1)
    with dumping_on_signal():
        os.kill(os.getpid(), signal.SIGUSR1)
        seen = capfd.readouterr().err
    assert "0 asyncio tasks (no event loop running)" in seen
    assert "test_without_a_running_loop_sigusr1_shows_the_threads" in seen  # this stack
    assert signal.getsignal(signal.SIGUSR1) == previous  # put back on leaving
