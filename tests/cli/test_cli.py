"""The command line: help everywhere, bad input as one line and exit 2, and
collect → export → status end to end against a real loopback simulator. The CLI runs in this
process (``run_in_process``) except where ``python -m marketspine`` itself is the point;
test_readme_walkthrough runs the console script end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from clitools import rest_candles, run_in_process
from helpers import require_module

from marketspine._base.time import format_utc, parse_naive_utc, parse_time

COMMANDS = ("sim", "collect", "export", "status", "warmup")


def python_m(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m marketspine ARGS...`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "marketspine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.process
def test_python_m_marketspine_is_the_command_line(tmp_path: Path) -> None:
    top = python_m("--help")
    assert top.returncode == 0, top.stderr
    assert all(command in top.stdout for command in COMMANDS)
    # Bad input as a whole process prints it (interpreter exit included): one line, exit 2.
    bad = python_m("collect", "KRW-BTC", "-t", "2m", "--db", str(tmp_path / "x.db"))
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("marketspine: error: ") and "unknown timeframe '2m'" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_every_command_has_help() -> None:
    top = run_in_process("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        shown = run_in_process(command, "--help")
        assert shown.returncode == 0, shown.stderr
        assert len(shown.stdout.strip().splitlines()) > 3


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["collect", "KRW-BTC", "--timeframe", "2m"], "unknown timeframe '2m'"),
        (
            ["collect", "KRW-BTC", "-t", "1h", "--since", "2024-02-01", "--until", "2024-01-01"],
            "must be before --until",
        ),
        (
            ["collect", "KRW-BTC", "-t", "1h", "--since", "yesterday"],
            "--since 'yesterday' is not a time",
        ),
        (["collect", "KRWBTC", "-t", "1h"], "expected QUOTE-BASE"),
        (["export", "KRW-BTC", "-t", "1h", "--format", "xls", "--out", "x"], "csv, parquet"),
        (["sim", "--region", "us"], "unknown region 'us'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], complaint: str, tmp_path: Path) -> None:
    db = [] if args[0] == "sim" else ["--db", str(tmp_path / "x.db")]
    done = run_in_process(*args, *db)
    assert done.returncode == 2, done.stderr
    assert complaint in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_unreadable_database_is_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    done = run_in_process("status", "--db", str(garbage))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and str(garbage) in done.stderr
    missing = run_in_process("status", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no database" in missing.stderr


def test_collect_export_status_end_to_end(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    pq = require_module("pyarrow.parquet", "pyarrow is not installed (the parquet extra)")
    db = str(tmp_path / "spine.db")
    since, until = "2026-01-01", "2026-01-10T05:00:00"
    with running_sim(SimConfig(rate_limit=10)) as url:
        first = run_in_process(
            "collect",
            "KRW-BTC",
            "KRW-ETH",
            "-t",
            "1h",
            "--since",
            since,
            "--until",
            until,
            "--db",
            db,
            "--upstream",
            url,
            "--json",
        )
        assert first.returncode == 0, first.stderr
        summary = json.loads(first.stdout.strip().splitlines()[-1])
        assert summary["markets"] == ["KRW-BTC", "KRW-ETH"] and summary["timeframe"] == "1h"
        assert summary["candles_written"] == 2 * (9 * 24 + 5)
        assert summary["upstream_calls"] <= 2 * 2 + 1  # two pages per market (+ market list)
        again = run_in_process(
            "collect",
            "KRW-BTC",
            "KRW-ETH",
            "-t",
            "1h",
            "--since",
            since,
            "--until",
            until,
            "--db",
            db,
            "--upstream",
            url,
            "--json",
        )
        assert json.loads(again.stdout)["upstream_calls"] == 0
        expected = rest_candles(
            url, "/v1/candles/minutes/60", "KRW-BTC", parse_time(since), parse_time(until)
        )
        unknown = run_in_process("collect", "KRW-NOPE", "-t", "1h", "--db", db, "--upstream", url)
        assert unknown.returncode == 2 and "KRW-NOPE" in unknown.stderr
    out = tmp_path / "btc.csv"
    exported = run_in_process(
        "export",
        "KRW-BTC",
        "-t",
        "1h",
        "--since",
        since,
        "--until",
        until,
        "--db",
        db,
        "--format",
        "csv",
        "--out",
        str(out),
    )
    assert exported.returncode == 0, exported.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["time_utc", "open", "high", "low", "close", "volume", "value"]
    assert [r["time_utc"] for r in rows] == [c["candle_date_time_utc"] + "Z" for c in expected]
    assert [float(r["close"]) for r in rows] == [c["trade_price"] for c in expected]
    assert [float(r["volume"]) for r in rows] == [c["candle_acc_trade_volume"] for c in expected]
    parquet = tmp_path / "btc.parquet"
    assert (
        run_in_process(
            "export",
            "KRW-BTC",
            "-t",
            "1h",
            "--since",
            since,
            "--until",
            until,
            "--db",
            db,
            "--format",
            "parquet",
            "--out",
            str(parquet),
        ).returncode
        == 0
    )
    table = pq.read_table(parquet)
    assert table.column("close").to_pylist() == [c["trade_price"] for c in expected]
    status = run_in_process("status", "--db", db, "--json")
    assert status.returncode == 0, status.stderr
    series = {(s["market"], s["timeframe"]): s for s in json.loads(status.stdout)["series"]}
    # The asked 221 hours: pages ask for 200 each, but a full page reaching below the asked
    # range is kept to it (where pipelined pages fall must not change what is stored).
    assert series[("KRW-BTC", "1h")]["rows"] == 9 * 24 + 5
    assert set(series) == {("KRW-BTC", "1h"), ("KRW-ETH", "1h")}


def test_progress_bar_shows_each_market_with_candles_and_rate() -> None:
    import io

    from rich.console import Console

    from marketspine._cli.commands import progress_bar
    from marketspine._store.backfill import ProgressEvent

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress_bar(console) as on_progress:
        for done in (25, 50, 100):
            on_progress(
                ProgressEvent(
                    "KRW-BTC", "1m", done // 25, done * 40, 0, done, 100, finished=done == 100
                )
            )
        on_progress(ProgressEvent("KRW-ETH", "1m", 1, 200, 0, 10, 100, finished=False))
    text = out.getvalue()
    assert "KRW-BTC 1m" in text and "KRW-ETH 1m" in text
    assert "4,000 candles" in text and "100.0%" in text and "candles/s" in text


@pytest.mark.parametrize("relative", [False, True], ids=["iso", "duration"])
def test_collect_takes_now_from_upstream_not_the_local_clock(
    running_sim: Callable[..., AbstractContextManager[str]],
    sim_clock: Callable[[], int],
    tmp_path: Path,
    relative: bool,
) -> None:
    # The simulator's clock stands months behind this machine's, as upstream would behind a
    # local clock running fast: by the local clock the forming minute looks long closed.
    # `--since 90m` counts back from upstream's clock too (the last 90 minutes of the local
    # one upstream has not reached yet).
    from marketspine.sim import SimConfig

    db = str(tmp_path / "skew.db")
    now = sim_clock()
    forming = now - now % 60_000
    if relative:
        since_arg, since = "90m", -(-(now - 90 * 60_000) // 60_000) * 60_000  # its first window
    else:
        since = forming - 90 * 60_000
        since_arg = format_utc(since)
    with running_sim(SimConfig(rate_limit=10), sim_clock) as url:
        done = run_in_process(
            "collect", "KRW-BTC", "-t", "1m", "--since", since_arg, "--db", db,
            "--upstream", url, "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        expected = rest_candles(url, "/v1/candles/minutes/1", "KRW-BTC", since, forming)
    out = tmp_path / "skew.csv"
    exported = run_in_process(
        "export", "KRW-BTC", "-t", "1m", "--db", db, "--out", str(out),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    with out.open() as handle:
        times = [parse_time(row["time_utc"]) for row in csv.DictReader(handle)]
    # Every closed minute from `--since` on, and not the forming one.
    assert times == [parse_naive_utc(c["candle_date_time_utc"]) for c in expected]
    assert times and min(times) >= since and max(times) < forming
