"""Output without a terminal: collect prints one summary line, and progress lines on stderr
(a supervisor's or CI's log is not left silent for minutes), and status prints whole values.
In-process: ``run_in_process``'s stdout and stderr are no terminals, as a pipe is not.
(A --since in the future is bad input: test_cli_values.)"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
from clitools import run_in_process

MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE", "KRW-ADA")


def test_collect_and_status_on_a_pipe(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    db = str(tmp_path / "spine.db")
    with running_sim(SimConfig(rate_limit=50)) as url:
        markets = [m["market"] for m in httpx.get(f"{url}/v1/market/all").json()]
        chosen = [m for m in MARKETS if m in markets] or markets[:6]
        done = run_in_process(
            "collect", *chosen, "-t", "1h", "--since", "2026-01-01", "--until", "2026-01-02",
            "--db", db, "--upstream", url,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # one line, however many markets, though COLUMNS=60 (rich would wrap it)
        lines = done.stdout.strip().splitlines()
        assert len(lines) == 1, done.stdout
        assert lines[0].startswith("collected ") and all(m in lines[0] for m in chosen)

    status = run_in_process("status", "--db", db)
    assert status.returncode == 0, status.stderr
    # whole values although COLUMNS=60: every timestamp and the path in full, not "2026-01-0…"
    assert "…" not in status.stdout
    assert "Z → 2026-01-02T00:00:00Z" in status.stdout  # a full page may reach further back
    assert "2026-01-01T23:00:00Z" in status.stdout
    assert db in status.stdout


def test_collect_on_a_pipe_logs_progress_lines_on_stderr(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    def collect(db: str, url: str, every: str) -> tuple[dict[str, object], list[str]]:
        done = run_in_process(
            "collect", "KRW-BTC", "KRW-ETH", "-t", "1m", "--since", "2026-01-01",
            "--until", "2026-01-02", "--db", db, "--upstream", url, "--json",
            "--progress-every", every,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout), done.stderr.splitlines()  # stdout: the JSON alone

    with running_sim(SimConfig(rate_limit=50)) as url:
        # An interval far below a page's time, so that lines come without a long run.
        summary, lines = collect(str(tmp_path / "a.db"), url, "0.001")
        quiet_summary, quiet = collect(str(tmp_path / "b.db"), url, "0")
    written = summary["candles_written"]
    assert isinstance(written, int) and written == quiet_summary["candles_written"]
    assert written > 0
    assert quiet == []
    assert len(lines) >= 2, lines
    pattern = re.compile(
        r"marketspine: collect 1m KRW-BTC KRW-ETH: (\d+\.\d)% of the range, ([\d,]+) candles "
        r"in [\d,]+ pages, [\d,]+ candles/s, [012] of 2 markets done, \d+s elapsed, ETA \S+"
    )
    shares, candles = [], []
    for line in lines:  # plain lines, no rich live display
        assert "\x1b" not in line and "\r" not in line, repr(line)
        found = pattern.fullmatch(line)
        assert found, line
        shares.append(float(found.group(1)))
        candles.append(int(found.group(2).replace(",", "")))
    assert shares == sorted(shares) and 0 < shares[-1] <= 100, shares
    assert candles == sorted(candles) and candles[-1] <= written, candles
