"""Upstream failures say their root cause in one line: a closed port is "connection refused"
(not only "circuit open"), a web server that is not Upbit is a short excerpt of its page,
and a failed warmup is reported on stderr through the log."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from clitools import CONSOLE_SCRIPT, closed_port, run_in_process
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from marketspine import Client
from marketspine._client.retry import RetryPolicy
from marketspine.errors import UpstreamError

PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title>"
    "<style>body { width: 35em; }</style></head>\n<body>\n"
    + "<p>If you see this page, the nginx web server is working.</p>\n" * 400
    + "</body></html>\n"
)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("marketspine: error:")]


def assert_one_short_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert "Traceback" not in done.stderr
    assert "<p>" not in done.stderr and "<html" not in done.stderr
    lines = error_lines(done)
    assert len(lines) == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert len(lines[0]) < 400, lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.process
def test_a_closed_port_is_connection_refused_and_a_failed_warmup_is_logged(
    tmp_path: Path,
) -> None:
    # Both commands wait out the client's real backoff: run them side by side.
    url = closed_port()
    env = {**os.environ, "COLUMNS": "80"}
    commands = {
        "collect": ["collect", "KRW-BTC", "-t", "1m", "--db", str(tmp_path / "c.db")],
        "warmup": ["warmup", "--db", str(tmp_path / "w.db"), "--json"],
    }
    procs = {
        name: subprocess.Popen(
            [CONSOLE_SCRIPT, *args, "--upstream", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for name, args in commands.items()
    }
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    collect = done["collect"]
    assert collect.returncode == 1, collect.stderr
    line = assert_one_short_line(collect, "connection refused", url)
    # the cause comes before the breaker's consequence
    assert "circuit" not in line or line.index("connection refused") < line.index("circuit")

    warmup = done["warmup"]
    assert warmup.returncode == 1, warmup.stderr
    assert '"success":false' in warmup.stdout
    logged = [line for line in warmup.stderr.splitlines() if "warmup of upbit" in line]
    assert len(logged) == 1, warmup.stderr
    assert logged[0].startswith("marketspine: ERROR: warmup of upbit (")
    assert url in logged[0] and "connection refused" in logged[0]


async def test_the_client_error_names_the_root_cause_even_once_the_circuit_opened() -> None:
    async def no_wait(_: float) -> None:
        return None

    async with Client(closed_port(), retry=RetryPolicy(attempts=8), sleep=no_wait) as client:
        for _ in range(2):  # the second call meets an already open circuit
            with pytest.raises(UpstreamError) as caught:
                await client.markets()
            assert str(caught.value).startswith("GET /v1/market/all failed: cannot reach")
            assert "connection refused" in str(caught.value)


def html_app(status: int) -> Starlette:
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE, status_code=status)

    return Starlette(routes=[Route("/{path:path}", page)])


@pytest.fixture(params=[404, 200])
def not_upbit(
    request: pytest.FixtureRequest, running_sim: Callable[..., AbstractContextManager[str]]
) -> Iterator[str]:
    with running_sim(app=html_app(request.param)) as url:
        yield url


def test_an_upstream_that_is_not_upbit_is_a_short_excerpt(not_upbit: str, tmp_path: Path) -> None:
    done = run_in_process(
        "collect", "KRW-BTC", "-t", "1m", "--db", str(tmp_path / "x.db"), "--upstream", not_upbit
    )
    assert done.returncode in (1, 2), done.stderr
    line = assert_one_short_line(done)
    assert "Welcome to nginx!" in line, line


async def test_spine_warmup_logs_each_failed_exchange(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from marketspine import Spine

    url = closed_port()
    one_try = RetryPolicy(attempts=1)  # the cause is the same on every try
    async with Spine(url, tmp_path / "x.db", warmup_every_s=0, retry=one_try) as spine:
        with caplog.at_level("WARNING", logger="marketspine"):
            report = await spine.warmup()
    assert report["success"] is False
    records = [r for r in caplog.records if "warmup of upbit" in r.getMessage()]
    assert len(records) == 1 and records[0].levelname == "ERROR"
    assert "connection refused" in records[0].getMessage()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (PAGE.encode(), "Welcome to nginx!"),
        (
            b"<html><body><h1>502 Bad   Gateway</h1>\n<hr>nginx</body></html>",
            "502 Bad Gateway nginx",
        ),
        (b"plain\n\ntext   reply", "plain text reply"),
        (b"", "an empty body"),
        (b"x" * 500, "x" * 119 + "…"),
    ],
)
def test_excerpt_is_one_short_line(body: bytes, expected: str) -> None:
    from marketspine._upbit.decode import excerpt

    assert excerpt(body) == expected
