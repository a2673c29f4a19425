"""Fuzzing the whole command line: hypothesis draws argument lists from a grammar built from
every command and option the CLI declares (good, malformed, missing, extra and wrong-typed
values) and runs the real console script. Every run exits 0, 1, 2, 3 or 130, prints no
traceback, and leaves an existing database byte-identical whenever it exits 2.

Nothing reaches the network: --upstream is always given (first) and every upstream value is
a loopback URL (a closed port or a simulator path that answers 404) or not a URL at all;
the default database lives under a per-test XDG_DATA_HOME. Commands that would serve until
stopped (sim, serve) always get a bad --port last, so they end in a usage error or --help.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import click
import pytest
from clitools import CONSOLE_SCRIPT, closed_port, minute_db
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketspine._base.time import parse_time
from marketspine._cli.main import app

pytestmark = pytest.mark.process

ALLOWED_EXIT_CODES = {0, 1, 2, 3, 130}
RUNS_UNTIL_STOPPED = {"sim", "serve", "record"}

TIMES = ["2026-01-05", "2026-01-05T01:00:00Z", "2026-01-05T10:00:00+09:00", "2999-01-01",
         "1767571200000", "yesterday", "2026-13-01", "", "2026-01-05T25:00"]  # fmt: skip
MARKETS = ["KRW-BTC", "krw-btc", "KRW-NOPE", "KRWBTC", "", "KRW-BTC,KRW-ETH", "-", "KRW-비트"]
TIMEFRAMES = ["1m", "5m", "1h", "1d", "1w", "1M", "60m", "1s", "2m", "", "1x", "-1m", "1Y"]
INTS = ["0", "1", "-1", "x", "1e3", "99999999999", ""]
FLOATS = ["0", "0.5", "-1", "nan", "inf", "x", ""]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=8)


class World:
    """The files and URLs one fuzz session points the CLI at."""

    def __init__(self, root: Path, sim_url: str) -> None:
        self.root = root
        self.db = root / "spine.db"
        minute_db(self.db, parse_time("2026-01-05T00:00:00"), 240)
        self.garbage = root / "garbage.db"
        self.garbage.write_bytes(b"not a database " * 300)
        (root / "a-file").write_text("x")
        # The first answers at once (404); a closed port costs the client's real backoff.
        self.upstreams = [f"{sim_url}/nothing-here", closed_port(), "not a url", "ftp://127.0.0.1"]
        self.env = {
            **os.environ,
            "XDG_DATA_HOME": str(root / "xdg"),
            "NO_PROXY": "*",
            "COLUMNS": "80",
        }

    def values(self, name: str, param: click.Parameter) -> st.SearchStrategy[str]:
        """Good and bad values for the option or argument ``name``."""
        root = str(self.root)
        by_name: dict[str, list[str]] = {
            "--timeframe": TIMEFRAMES,
            "--since": TIMES,
            "--until": TIMES,
            "--db": [str(self.db), str(self.garbage), f"{root}/new.db", root,
                     f"{root}/a-file/x.db", "/proc/marketspine.db", ""],
            "--upstream": self.upstreams,
            "--out": [f"{root}/out.csv", f"{root}/out.parquet", f"{root}/no/such/out.csv", root,
                      "/dev/full", "/proc/out.csv", f"{root}/a-file/out.csv", ""],
            "--format": ["csv", "parquet", "xls", ""],
            "--exchange": [f"upbit-sg={self.upstreams[0]}", "bad", "=http://", "x=ftp://y"],
            "--region": ["kr", "sg", "id", "th", "us", ""],
            "--host": ["127.0.0.1", "::1", "not a host"],
            "markets": MARKETS,
            "market": MARKETS,
        }  # fmt: skip
        if name in by_name:
            choices = st.sampled_from(by_name[name])
        elif isinstance(param.type, click.types.IntParamType):
            choices = st.sampled_from(INTS)
        elif isinstance(param.type, click.types.FloatParamType):
            choices = st.sampled_from(FLOATS)
        else:
            choices = st.sampled_from(["", "x", "127.0.0.1"])
        return st.one_of(choices, choices, choices, TEXT)


@st.composite
def command_args(draw: st.DrawFn, world: World, name: str) -> list[str]:
    """Argument lists for ``marketspine NAME ...``: mostly well formed (every required
    parameter and some optional ones, with good or bad values), then up to two mutations
    (a token dropped or replaced, an unknown or bare option, an extra argument)."""
    command = app.commands[name]
    tokens: list[str] = []
    option_names: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument):
            low = 1 if param.required else 0
            high = 3 if param.nargs == -1 else 1
            count = draw(st.integers(low, high))
            tokens += [draw(world.values(param.name or "", param)) for _ in range(count)]
            continue
        if not isinstance(param, click.Option) or param.hidden:
            continue
        option_names += param.opts
        usual = {"--db", "--timeframe", "--out"} & set(param.opts)  # nearly always given
        if not (param.required or draw(st.booleans()) or (usual and draw(st.booleans()))):
            continue
        flag = draw(st.sampled_from(param.opts))
        if param.is_flag:
            tokens.append(flag)
        else:
            value = draw(world.values(max(param.opts, key=len), param))
            tokens += draw(st.sampled_from([[flag, value], [f"{flag}={value}"]]))
    tokens = draw(st.permutations(tokens))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(tokens)))
        kind = draw(st.sampled_from(["drop", "replace", "bare", "extra"]))
        if kind == "drop" and at < len(tokens):
            del tokens[at]
        elif kind == "replace" and at < len(tokens):
            tokens[at] = draw(TEXT)
        elif kind == "bare" and option_names:
            tokens.insert(at, draw(st.sampled_from(option_names)))
        else:
            extra = draw(st.sampled_from(["--help", "--bogus", "extra", "-x", "--", "-"]))
            tokens.insert(at, extra)
    return tokens


@st.composite
def argument_lists(draw: st.DrawFn, world: World) -> list[str]:
    name = draw(st.sampled_from([*sorted(app.commands), "bogus", "--version", ""]))
    if name not in app.commands:
        return [name] if name else []
    args = [name]
    if "--upstream" in {opt for p in app.commands[name].params for opt in p.opts}:
        # first, before anything else: never the real Upbit
        args += ["--upstream", world.upstreams[0]]
    args += draw(command_args(world, name))
    if name in RUNS_UNTIL_STOPPED:
        args += ["--port", "not-a-port"]  # a usage error whatever precedes it
    return args


@pytest.fixture
def world(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[World]:
    with running_sim() as url:
        yield World(tmp_path, url)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_command_line_ends_in_a_known_exit_code_without_a_traceback(world: World) -> None:
    @settings(
        # a deeper local hunt: MARKETSPINE_FUZZ_EXAMPLES=500 pytest --timeout 0 tests/...
        max_examples=int(os.environ.get("MARKETSPINE_FUZZ_EXAMPLES", "40")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(args=argument_lists(world))
    def check(args: list[str]) -> None:
        before = {p: digest(p) for p in (world.db, world.garbage)}
        done = subprocess.run(
            [CONSOLE_SCRIPT, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
            env=world.env,
            cwd=world.root,
        )
        assert done.returncode in ALLOWED_EXIT_CODES, (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        if done.returncode == 2:
            after = {p: digest(p) for p in before}
            assert after == before, (args, done.stderr)

    check()
