"""``marketspine replay``: bad input (an unknown market, --from not before --to, a bad speed,
time or kind, no recording) is one line and exit 2 before a port is taken; the real command
prints its URL, streams the recording to a raw WebSocket client at --speed 0 and stops on
SIGTERM with exit 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import run_in_process
from replay_support import BTC, ETH, Recorded, make_recording
from websockets.sync.client import connect

FROM, TO = "2026-09-21T14:13:20", "2026-09-21T14:23:20"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorded]:
    db = tmp_path_factory.mktemp("replay-cli") / "rec.db"
    return db, make_recording(db)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["KRW-XRP"], "KRW-XRP not in the recording (it holds: KRW-BTC, KRW-ETH)"),
        (["BTC"], "BTC"),
        (["--from", TO, "--to", FROM], "--from (2026-09-21T14:23:20) must be before --to"),
        (["--from", FROM, "--to", FROM], "must be before --to"),
        (["--from", "yesterday", "--to", TO], "--from 'yesterday' is not a time"),
        (["--speed", "-1"], "--speed -1: expected a finite number >= 0"),
        (["--speed", "inf"], "--speed inf: expected a finite number >= 0"),
        (["--speed", "fast"], "'fast' is not a valid float"),
        (["--kinds", "candle"], "--kinds must name some of trade, orderbook, ticker"),
        (["--db", "mysql://x/y"], "--db"),
        (
            ["KRW-BTC", "--from", "2026-09-22", "--to", "2026-09-23"],
            "was recorded from 2026-09-22T00:00:00 to 2026-09-23T00:00:00: it holds 2026-09-21",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    data: tuple[Path, Recorded], args: list[str], complaint: str
) -> None:
    db, _ = data
    times = [] if "--from" in args else ["--from", FROM, "--to", TO]
    where = [] if "--db" in args else ["--db", str(db)]
    done = run_in_process("replay", *args, *times, *where, "--port", "0")
    assert done.returncode == 2, done.stderr
    assert complaint in done.stderr and "Traceback" not in done.stderr
    assert "replaying on" not in done.stdout


def test_a_database_without_a_recording_is_exit_2(tmp_path: Path) -> None:
    done = run_in_process("replay", "--db", str(tmp_path / "none.db"), "--from", FROM, "--to", TO)
    assert done.returncode == 2 and "no database at" in done.stderr
    assert "marketspine record" in done.stderr


@pytest.mark.process
def test_the_real_command_streams_the_recording_and_stops_on_sigterm(
    data: tuple[Path, Recorded],
) -> None:
    db, rec = data
    argv = [sys.executable, "-m", "marketspine", "replay", "--db", str(db), "--from", FROM,
            "--to", TO, "--speed", "0", "--port", "0"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("replaying on http://127.0.0.1:"), line
            url = line.split()[-1].replace("http", "ws", 1) + "/websocket/v1"
            with connect(url, open_timeout=20) as ws:
                ws.send(json.dumps([{"ticket": "t"}, {"type": "trade", "codes": [BTC, ETH]}]))
                seqs = [json.loads(ws.recv(timeout=20))["sequential_id"] for _ in rec.trades]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert seqs == [t.seq for t in sorted(rec.trades, key=lambda t: (t.ms, t.seq))]
