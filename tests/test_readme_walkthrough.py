"""The README's first commands, as a newcomer types them: ``collect`` finishes in well
under a minute at Upbit's ceiling, and the ``export`` and ``status`` after it find what it
collected. Run against a simulator on loopback (``warmup`` would ask Upbit: left out)."""

from __future__ import annotations

import csv
import json
import math
import shlex
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from clitools import run

from marketspine._base.time import now_ms, parse_time
from marketspine._base.timeframes import parse_timeframe

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parents[1] / "README.md"
CEILING_PAGES_PER_S = 10  # Upbit's candle group (and the simulator's default)


def walkthrough() -> list[list[str]]:
    """The ``marketspine`` commands of the README's first ``sh`` block under "Command line"."""
    section = README.read_text().split("### Command line", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def the(command: str) -> list[str]:
    (argv,) = [a for a in walkthrough() if a[1] == command]
    return argv


def test_the_first_collect_finishes_in_well_under_a_minute_at_the_ceiling() -> None:
    argv = the("collect")
    markets = [a for a in argv[2:] if a.startswith("KRW-")]
    tf = parse_timeframe(option(argv, "--timeframe") or option(argv, "-t") or "")
    since = parse_time(option(argv, "--since") or "")
    until_text = option(argv, "--until")
    until = parse_time(until_text) if until_text else now_ms()  # no --until: up to now
    assert tf.fixed_ms is not None, argv
    pages = len(markets) * math.ceil((until - since) / tf.fixed_ms / 200)
    assert pages / CEILING_PAGES_PER_S <= 20, (pages, argv)


@pytest.mark.process
def test_the_walkthrough_runs_and_each_command_finds_what_collect_stored(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    from marketspine.sim import SimConfig

    commands = {argv[1]: argv for argv in walkthrough()}
    assert list(commands) == ["sim", "collect", "export", "status", "warmup"]
    seed = int(option(commands["sim"], "--seed") or 1)
    files = {"sim.db": str(tmp_path / "sim.db"), "btc.csv": str(tmp_path / "btc.csv")}

    def local(argv: list[str], url: str) -> list[str]:
        """``argv`` with this test's simulator and files."""
        swapped = [files.get(a, url if a.startswith("http://127.0.0.1") else a) for a in argv]
        return swapped[1:]  # without the "marketspine"

    collect = commands["collect"]
    with running_sim(SimConfig(seed=seed, rate_limit=0)) as url:  # no need to wait here
        for name in ("collect", "export", "status"):
            done = run(*local(commands[name], url))
            assert done.returncode == 0, (name, done.stderr)
            if name == "status":
                status = json.loads(done.stdout)
    since, until = parse_time(option(collect, "--since") or ""), option(collect, "--until")
    with open(files["btc.csv"], newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert rows, "export found nothing of what collect stored"
    first, last = parse_time(rows[0]["time_utc"]), parse_time(rows[-1]["time_utc"])
    assert since <= first and (until is None or last < parse_time(until))
    stored = {s["market"] for s in status["series"] if s["rows"] > 0}
    assert {a for a in collect[2:] if a.startswith("KRW-")} <= stored
