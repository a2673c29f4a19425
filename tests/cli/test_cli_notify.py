"""``--notify``, ``notify-test``, ``--log-level``/``--log-format`` on the command line, with
a real apprise ``json://`` URL to a loopback receiver and real simulators."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import closed_port, json_log_lines, run_in_process
from helpers import run_sim
from receiver import Receiver, receiver
from services import PgSpace

from marketspine.sim import SimConfig


@pytest.fixture
def got() -> Iterator[Receiver]:
    with receiver() as found:
        yield found


def test_notify_test_delivers_one_message(got: Receiver) -> None:
    done = run_in_process("notify-test", "--notify", got.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "test message sent to 1 notify URL(s)\n"
    (message,) = got.wait_for(1)
    assert message["title"] == "marketspine: notify test"


def test_notify_test_takes_the_environment(got: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETSPINE_NOTIFY", f"{got.url},{got.url}")
    done = run_in_process("notify-test")
    assert done.returncode == 0, done.stderr
    assert len(got.wait_for(2)) == 2


def test_notify_test_exits_1_naming_the_url_not_reached_and_why(got: Receiver) -> None:
    got.status = 500
    with receiver() as fine:
        failing = f"{got.url}token-abc123xyz"
        done = run_in_process("notify-test", "--notify", fine.url, "--notify", failing)
        assert len(fine.wait_for(1)) == 1
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "marketspine: error: the test message was not delivered to 1 of 2 notify URL(s): "
        "json://*** ("
    ), line
    assert "500" in line and "token-abc123xyz" not in line


def test_notify_test_exits_2_naming_a_url_apprise_cannot_parse() -> None:
    done = run_in_process("notify-test", "--notify", "nosuch://token-abc123/")
    assert done.returncode == 2
    assert "invalid notify URL 'nosuch://***'" in done.stderr
    assert "token-abc123" not in done.stderr and len(done.stderr.splitlines()) == 1
    usage = run_in_process("notify-test")
    assert usage.returncode == 2 and "no notify URL" in usage.stderr


def test_warmup_logs_each_exchange_and_a_partial_success_at_warning(tmp_path: Path) -> None:
    with run_sim() as one, run_sim(SimConfig(region="sg")) as two:
        done = run_in_process(
            "warmup", "--upstream", one, "--exchange", f"upbit-sg={two}",
            "--exchange", f"down={closed_port()}", "--db", str(tmp_path / "w.db"),
            "--json", "--log-level", "info", "--log-format", "json",
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = json_log_lines(done.stderr)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    said = [(line["level"], line["message"]) for line in lines]
    assert ("INFO", "refresh: warming up 3 exchange(s)") in said
    ok = [m for level, m in said if level == "INFO" and re.fullmatch(r"refresh: \S+ ok, \d+ .*", m)]
    assert len(ok) == 2 and all(re.search(r"ok, \d+ markets in \d+\.\d\d s$", m) for m in ok)
    (failed,) = [line for line in lines if line["level"] == "ERROR"]
    assert failed["event"] == "warmup_failed" and failed["key"] == "down"
    assert "cannot reach http://127.0.0.1:" in failed["message"]  # the root cause
    (partial,) = [m for level, m in said if level == "WARNING" and m.startswith("refresh: success")]
    assert partial.startswith("refresh: success 2/3, ")


def test_warmup_text_logs_stay_quiet_at_the_default_level(tmp_path: Path) -> None:
    with run_sim() as one:
        done = run_in_process("warmup", "--upstream", one, "--db", str(tmp_path / "w.db"))
    assert done.returncode == 0, done.stderr
    assert "refresh:" not in done.stderr


def test_collect_logs_json_lines_and_keeps_secrets_out(
    got: Receiver, pg_space: PgSpace, tmp_path: Path
) -> None:
    # A password in the database URL (trust auth lets it in), credentials in the notify URL.
    db = re.sub(r"://([^:@/]+)@", r"://\1:pg-secret-77@", pg_space.url)
    assert "pg-secret-77" in db
    port = got.url.rsplit(":", 1)[1].strip("/")
    notify = f"json://alerts:notify-secret-88@127.0.0.1:{port}/"
    with run_sim(SimConfig(rate_limit=0)) as url:
        done = run_in_process(
            "collect", "KRW-BTC", "-t", "1h", "--since", "2026-01-01", "--until", "2026-01-02",
            "--upstream", url, "--db", db, "--notify", notify, "--json",
            "--log-level", "debug", "--log-format", "json",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = json_log_lines(done.stderr)
    messages = [line["message"] for line in lines]
    assert "collect: 1 market(s) at 1h from " + url in messages
    assert any(m.startswith("collect: done in ") for m in messages)
    for secret in ("pg-secret-77", "notify-secret-88"):
        assert secret not in done.stderr and secret not in done.stdout
