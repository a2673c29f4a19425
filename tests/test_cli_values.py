"""Values a newcomer mistypes are refused before anything is written or asked upstream: a
``--db`` URL of another database (``sqlite:///x.db``, ``mysql://...``) is not a file path
to create folders for, an ``--upstream`` that is not http(s) is bad input (not "circuit
open" after the retries), and ``serve`` on a PostgreSQL it cannot reach is one line and
exit 2 (not a failed startup's traceback and uvicorn's exit code 3)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from clitools import closed_port, minute_db, run

from marketspine import Client, Spine
from marketspine._errors import InvalidRequestError

pytestmark = pytest.mark.timeout(60)


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("marketspine: error: ")
    for word in words:
        assert word in done.stderr, (word, done.stderr)


@pytest.mark.parametrize("db", ["mysql://me@127.0.0.1/candles", "sqlite:///candles.db"])
@pytest.mark.parametrize(
    "command",
    [
        "collect KRW-BTC -t 1d --since 2026-01-01 --db {db} --upstream {up}",
        "warmup --db {db} --upstream {up}",
        "status --db {db}",
        "export KRW-BTC -t 1d --out x.csv --db {db}",
        "serve --upstream {up} --port 0 --db {db} --admin-token t",
        "migrate --from seed.db --to {db}",
    ],
)
def test_a_db_url_of_another_database_is_refused(command: str, db: str, tmp_path: Path) -> None:
    minute_db(tmp_path / "seed.db", 1_767_225_600_000, 3)
    args = command.format(db=db, up=closed_port()).split()
    done = run(*args, cwd=str(tmp_path))
    assert_one_line_exit_2(done, "expected an SQLite file path or a postgresql://")
    assert "mysql://me@127.0.0.1/candles" in done.stderr or "sqlite:///candles.db" in done.stderr
    # Before: a folder "mysql:" (or "sqlite:") and an SQLite file inside it, exit 0.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.db"]


@pytest.mark.parametrize("upstream", ["127.0.0.1:8765", "ftp://127.0.0.1", "SIM"])
@pytest.mark.parametrize(
    "command",
    [
        "collect KRW-BTC -t 1d --since 2026-01-01 --db c.db --upstream {up}",
        "warmup --db c.db --upstream {up}",
        "serve --port 0 --db c.db --upstream {up}",
    ],
)
def test_an_upstream_that_is_not_http_is_bad_input(
    command: str, upstream: str, tmp_path: Path
) -> None:
    done = run(*command.format(up=upstream).split(), cwd=str(tmp_path))
    assert_one_line_exit_2(done, f"invalid --upstream {upstream!r}", "http(s)://")
    if command.startswith("serve"):
        assert "or sim" in done.stderr
    # Nothing written: no database, no admin token beside it.
    assert list(tmp_path.iterdir()) == []


def test_serve_on_a_postgresql_it_cannot_reach_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = closed_port().replace("http://", "postgresql://nobody@") + "/candles"
    done = run("serve", "--upstream", "sim", "--port", "0", "--db", url, cwd=str(tmp_path))
    assert_one_line_exit_2(done, "cannot open the candle database", url)
    assert "serving on" not in done.stdout
    assert list(tmp_path.iterdir()) == []


async def test_spine_refuses_a_db_url_of_another_database(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="expected an SQLite file path"):
        Spine("http://127.0.0.1:1", db="sqlite:///candles.db")


@pytest.mark.parametrize("upstream", [5, None, b"https://api.upbit.com", "api.upbit.com"])
def test_spine_and_client_refuse_an_upstream_that_is_not_an_http_url(upstream: object) -> None:
    # Before: 5 or None was an AttributeError ('int' object has no attribute 'rstrip'), and
    # a Client took "api.upbit.com" and failed at its first request, after the retries.
    with pytest.raises(InvalidRequestError, match="expected an http\\(s\\):// URL"):
        Spine(upstream)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="invalid base_url"):
        Client(upstream)  # type: ignore[arg-type]


def _bad_fault_values() -> list[tuple[str, str, str]]:
    """(flag, a bad value, the range the error must name) for every ``sim`` fault flag, so
    a new fault setting is checked too; NaN and infinity besides, which pass ``< 0``."""
    from dataclasses import fields

    from marketspine.sim._state import Faults

    cases = []
    for field in fields(Faults):
        flag = "--" + field.name.replace("_", "-")
        if field.name.endswith("_rate"):
            cases += [(flag, "2", "between 0 and 1"), (flag, "nan", "between 0 and 1")]
        else:
            cases.append((flag, "-1", ">= 0"))
    return [*cases, ("--latency-ms", "inf", "finite number >= 0"), ("--speed", "nan", "> 0")]


@pytest.mark.parametrize(("flag", "value", "accepted"), _bad_fault_values())
def test_a_bad_sim_fault_flag_names_the_flag_the_value_and_the_range(
    flag: str, value: str, accepted: str
) -> None:
    # --port 0: were the value let through, the simulator would serve on a free port (and
    # the run time out) rather than collide with another test's.
    done = run("sim", "--port", "0", flag, value, timeout=20)
    assert_one_line_exit_2(done, f"{flag} must be", accepted, f"got {value}")
    assert done.stdout == ""
