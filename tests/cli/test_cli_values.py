"""Values mistyped on the command line are refused before anything is written or asked
upstream: a ``--db`` URL of another database (``sqlite:///x.db``, ``mysql://...``) is not a
file path to create folders for, an ``--upstream`` that is not http(s) is bad input (not
"circuit open" after the retries), ``serve`` on a PostgreSQL it cannot reach or on a
folder as ``--db`` is one line and exit 2 (not a failed startup's traceback and uvicorn's
exit code 3), a ``--port`` out of range is a usage error, and a ``--since`` in the future is
bad input for ``collect`` and ``export`` alike."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from clitools import closed_port, minute_db, run, run_in_process
from helpers import SIM_NOW_MS

from marketspine import Client, Spine
from marketspine._base.time import DAY_MS, format_utc
from marketspine._cli.main import EXIT_USAGE, main
from marketspine.errors import InvalidRequestError

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
    done = run_in_process(*args, cwd=tmp_path)
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
    done = run_in_process(*command.format(up=upstream).split(), cwd=tmp_path)
    assert_one_line_exit_2(done, f"invalid --upstream {upstream!r}", "http(s)://")
    if command.startswith("serve"):
        assert "or sim" in done.stderr
    # Nothing written: no database, no admin token beside it.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.process
@pytest.mark.parametrize(
    "command",
    [
        "serve --upstream sim --port 0",
        "collect KRW-BTC -t 1d --since 2026-01-01 --upstream http://127.0.0.1:9",
    ],
)
def test_a_postgresql_out_of_reach_is_one_line_and_exit_1_without_its_url(
    command: str, tmp_path: Path
) -> None:
    # Nothing wrong with the input: the server may be starting, and a supervisor restarts
    # on exit 1 (2 means "fix the command"). The URL and its password stay out of the line.
    url = closed_port().replace("http://", "postgresql://nobody:pw-s3cret@") + "/candles"
    # A real process: serve starts a TLS thread and a database driver before it fails, and
    # anything they print or keep running at interpreter exit shows only there.
    done = run(*command.split(), "--db", url, cwd=str(tmp_path))
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot reach the candle database PostgreSQL 'candles' at 127.0.0.1:" in lines[0]
    assert "pw-s3cret" not in done.stderr and "nobody" not in done.stderr
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
    done = run_in_process("sim", "--port", "0", flag, value)
    assert_one_line_exit_2(done, f"{flag} must be", accepted, f"got {value}")
    assert done.stdout == ""


def main_exit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``marketspine ARGS...`` in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(args))
    code = done.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize("until", [[], ["--until", "2999-02-01"]])
@pytest.mark.parametrize("command", ["collect", "export"])
def test_a_since_in_the_future_is_bad_input_for_collect_and_export_alike(
    command: str, until: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not "nothing to collect" and exit 0, nor exit 3, nor a complaint naming an --until
    # nobody gave: the same usage error from both commands.
    db = tmp_path / "c.db"
    out = tmp_path / "x.csv"
    if command == "collect":
        args = ["collect", "KRW-BTC", "-t", "1h", "--upstream", closed_port()]
    else:
        minute_db(db, 1_767_225_600_000, 3)
        args = ["export", "KRW-BTC", "-t", "1m", "--out", str(out)]
    code, err = main_exit(capsys, *args, "--since", "2999-01-01", *until, "--db", str(db))
    assert code == EXIT_USAGE, err
    assert err.startswith("marketspine: error: --since 2999-01-01T00:00:00Z lies in the future")
    assert "give a --since before now" in err and "naive means UTC" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert db.exists() == (command == "export")  # collect asked and stored nothing


def test_an_until_so_far_ahead_that_the_default_start_is_in_the_future_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["collect", "KRW-BTC", "-t", "1h", "--upstream", closed_port(), "--until", "2999-01-01"]
    code, err = main_exit(capsys, *args, "--db", str(tmp_path / "c.db"))
    assert code == EXIT_USAGE, err
    # No --since was given: the complaint names the start collect chose, not a --since.
    assert "the start 200 windows before --until, 2998-12-23T16:00:00Z lies in the future" in err


def test_a_since_after_upstreams_now_is_bad_input_too(
    fixed_sim: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ahead of upstream's clock (the simulator's stands at SIM_NOW_MS), not of this one's.
    since = format_utc(SIM_NOW_MS + DAY_MS) + "Z"
    args = ["collect", "KRW-BTC", "-t", "1h", "--upstream", fixed_sim, "--since", since]
    code, err = main_exit(capsys, *args, "--db", str(tmp_path / "c.db"), "--json")
    assert code == EXIT_USAGE, err
    assert f"--since {since} lies in the future (upstream's now is 2026-07-30T07:41:" in err
    assert capsys.readouterr().out == ""  # no summary of a collect that never ran


@pytest.mark.parametrize(
    "args",
    [
        ("sim", "--port", "99999"),
        ("sim", "--port", "-5"),
        ("serve", "--upstream", "sim", "--port", "70000"),
    ],
)
def test_a_port_out_of_range_is_a_usage_error(args: tuple[str, ...], tmp_path: Path) -> None:
    db = ["--db", str(tmp_path / "s.db")] if args[0] == "serve" else []
    result = run_in_process(*args, *db)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--port" in result.stderr and "0<=x<=65535" in result.stderr
    assert not (tmp_path / "s.db").exists()


def test_serve_on_an_unusable_db_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    # In-process (the console script's own entry point): it must fail before serving.
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--upstream", "sim", "--port", "0", "--db", str(folder)])
    out, err = capsys.readouterr()
    assert exited.value.code == 2, err
    assert "Traceback" not in err
    assert err.startswith("marketspine: error: cannot open the candle database")
    assert len(err.strip().splitlines()) == 1
    assert "serving on" not in out
    # Nothing written beside it either: not even the generated admin token.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"]


def test_export_of_nothing_without_since_reads_as_a_sentence(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    minute_db(db, 1_767_225_600_000, 3)  # 2026-01-01, three 1m candles
    result = run_in_process(
        "export", "KRW-BTC", "-t", "1M", "--db", str(db), "--out", str(tmp_path / "m.csv")
    )
    assert result.returncode == 3, result.stderr
    assert "nothing stored for KRW-BTC 1M before 20" in result.stderr  # a sentence
