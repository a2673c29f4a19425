"""``marketspine export``: output files are written whole or not at all, a bad ``--out`` is one
line and exit 2, unknown markets exit 2, derivable timeframes are built from stored 1m as the
library builds them, and an empty result says why with exit code 3. In-process, but for what
only the real console script shows: another user's permissions, a file size limit, a reader
that closes the pipe."""

from __future__ import annotations

import csv
import resource
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from clitools import (
    CONSOLE_SCRIPT,
    minute_db,
    rest_candles,
    run,
    run_in_process,
    shared_tmp,
    unprivileged,
)

from marketspine._base.time import parse_naive_utc, parse_time

T0 = parse_time("2026-01-05T00:00:00")
N = 3000  # 50 hours of 1m candles: a CSV of about 200 kB


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "spine.db"
    minute_db(path, T0, N)
    return path


def export(
    db: Path, out: str, *more: str, timeframe: str = "1m"
) -> subprocess.CompletedProcess[str]:
    return run_in_process(
        "export", "KRW-BTC", "-t", timeframe, "--db", str(db), "--out", out, *more
    )


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# -- output files ------------------------------------------------------------------------------


def test_a_missing_folder_a_directory_or_a_file_as_folder_is_one_line_and_exit_2(
    db: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "such" / "x.csv"
    assert_one_line_exit_2(export(db, str(missing)), str(missing), "does not exist")
    assert not missing.parent.exists()
    assert_one_line_exit_2(export(db, str(tmp_path)), str(tmp_path), "is a directory")
    a_file = tmp_path / "plain.txt"
    a_file.write_text("keep me")
    under_file = a_file / "x.csv"
    assert_one_line_exit_2(export(db, str(under_file)), str(under_file), "Not a directory")
    assert a_file.read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_a_device_is_refused_not_replaced(db: Path) -> None:
    before = Path("/dev/full").stat()
    assert_one_line_exit_2(export(db, "/dev/full"), "/dev/full", "not a regular file")
    after = Path("/dev/full").stat()
    assert (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@pytest.mark.parametrize("target", ["/proc/marketspine-export.csv", "/sys/marketspine.csv"])
def test_a_file_system_that_takes_no_files_is_one_line_and_exit_2(db: Path, target: str) -> None:
    # /proc and /sys refuse new files even to root: a read-only target chmod cannot fake.
    done = export(db, target)
    assert_one_line_exit_2(done, target, "cannot write --out")
    assert not Path(target).exists()


@pytest.mark.process
def test_a_read_only_folder_is_one_line_and_exit_2(db: Path) -> None:
    with shared_tmp() as folder:
        readable = folder / "spine.db"
        readable.write_bytes(db.read_bytes())
        readable.chmod(0o444)
        locked = folder / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        target = locked / "x.csv"
        done = run(
            "export", "KRW-BTC", "-t", "1m", "--db", str(readable), "--out", str(target),
            user=unprivileged(),
        )  # fmt: skip
        assert_one_line_exit_2(done, str(target), "Permission denied")
        assert list(locked.iterdir()) == []


@pytest.mark.process
def test_a_write_that_fails_halfway_leaves_the_old_file_whole(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "btc.csv"
    out.write_text("the previous export\n")
    limit = 64 * 1024  # the CSV is ~200 kB: the write fails with EFBIG part way through

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [CONSOLE_SCRIPT, "export", "KRW-BTC", "-t", "1m", "--db", str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=small_files,  # Python ignores SIGXFSZ, so the write fails with EFBIG
    )
    assert_one_line_exit_2(done, str(out), "File too large")
    assert out.read_text() == "the previous export\n"
    assert leftovers(tmp_path) == []


def test_a_good_export_replaces_the_file_whole_and_keeps_its_mode(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "btc.csv"
    out.write_text("old\n")
    out.chmod(0o640)
    done = export(db, str(out))
    assert done.returncode == 0, done.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N and rows[0]["time_utc"] == "2026-01-05T00:00:00Z"
    assert out.stat().st_mode & 0o777 == 0o640
    assert leftovers(tmp_path) == []


def test_out_dash_writes_csv_to_stdout_and_no_file(db: Path, tmp_path: Path) -> None:
    done = run_in_process(
        "export", "KRW-BTC", "-t", "1m", "--db", str(db), "--out", "-", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(done.stdout.splitlines()))
    assert len(rows) == N and rows[0]["time_utc"] == "2026-01-05T00:00:00Z"
    assert "to stdout" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no file named "-"


@pytest.mark.process
def test_out_dash_into_a_reader_that_stops_early_is_not_an_error(db: Path) -> None:
    export_cmd = [CONSOLE_SCRIPT, "export", "KRW-BTC", "-t", "1m", "--db", str(db), "--out", "-"]
    with subprocess.Popen(export_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # the reader goes away after one line, as `| head -1` does
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, stderr
    assert first.startswith(b"time_utc,open")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_out_dash_with_parquet_is_exit_2(db: Path) -> None:
    assert_one_line_exit_2(export(db, "-", "--format", "parquet"), "--out -", "csv")


# -- what is exported --------------------------------------------------------------------------


def test_an_unknown_market_is_exit_2_and_writes_nothing(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    done = run_in_process("export", "KRW-NOPE", "-t", "1m", "--db", str(db), "--out", str(out))
    assert_one_line_exit_2(done, "unknown market 'KRW-NOPE'", str(db))
    assert not out.exists()


def test_nothing_stored_in_the_range_says_why_with_exit_3(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    out.write_text("keep\n")
    done = export(db, str(out), "--since", "2025-01-01", "--until", "2025-02-01", timeframe="5m")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "nothing stored for KRW-BTC 5m in [2025-01-01T00:00:00Z, 2025-02-01T00:00:00Z)" in (
        done.stderr
    )
    assert "collect" in done.stderr
    assert out.read_text() == "keep\n"
    # a 1w series is not derived from 1m: nothing stored for it at all
    weekly = export(db, str(out), timeframe="1w")
    assert weekly.returncode == 3 and "nothing stored for KRW-BTC 1w" in weekly.stderr
    assert "3 nothing to export or collect" in run_in_process("export", "--help").stdout


def test_without_since_everything_stored_is_exported_as_the_help_says(
    db: Path, tmp_path: Path
) -> None:
    shown = run_in_process("export", "--help").stdout
    assert "from the first stored candle" in " ".join(shown.split())
    out = tmp_path / "all.csv"
    done = export(db, str(out), "--until", "2026-06-01")
    assert done.returncode == 0, done.stderr
    with out.open() as handle:
        times = [row["time_utc"] for row in csv.DictReader(handle)]
    assert len(times) == N and times[0] == "2026-01-05T00:00:00Z"


def test_derivable_timeframes_are_built_from_stored_1m_like_upstream_builds_them(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    db = tmp_path / "minutes.db"
    since, until = "2026-01-01T00:00:00", "2026-01-01T06:00:00"
    with running_sim(SimConfig(rate_limit=20)) as url:
        done = run_in_process(
            "collect", "KRW-BTC", "-t", "1m", "--since", since, "--until", until,
            "--db", str(db), "--upstream", url, "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        upstream = {
            name: rest_candles(url, path, "KRW-BTC", parse_time(since), parse_time(until))
            for name, path in (("5m", "/v1/candles/minutes/5"), ("1h", "/v1/candles/minutes/60"))
        }
    for name, expected in upstream.items():
        out = tmp_path / f"btc-{name}.csv"
        done = export(db, str(out), "--since", since, "--until", until, timeframe=name)
        assert done.returncode == 0, done.stderr
        with out.open() as handle:
            rows = list(csv.DictReader(handle))
        assert expected, "the simulator traded in those hours"
        assert [parse_time(r["time_utc"]) for r in rows] == [
            parse_naive_utc(c["candle_date_time_utc"]) for c in expected
        ]
        assert [float(r["open"]) for r in rows] == [c["opening_price"] for c in expected]
        assert [float(r["close"]) for r in rows] == [c["trade_price"] for c in expected]
        assert [float(r["high"]) for r in rows] == [c["high_price"] for c in expected]
        assert [float(r["low"]) for r in rows] == [c["low_price"] for c in expected]
        assert [float(r["volume"]) for r in rows] == pytest.approx(
            [c["candle_acc_trade_volume"] for c in expected], rel=1e-9
        )
