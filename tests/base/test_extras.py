"""A part reached without its extra says which extra to install, in one line: the command
line exits 2 with it on stderr, the library raises MissingExtraError (an ImportError and a
MarketspineError). A package set to None in ``sys.modules`` makes ``import`` fail as an
uninstalled one does, and ``need`` sees it the same way."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from clitools import run_in_process

import marketspine.sim
from marketspine import MarketspineError, MissingExtraError, Spine, parse_timeframe
from marketspine._base.extras import EXTRAS, need
from marketspine._spine.result import CandleResult

ROOT = Path(__file__).resolve().parents[2]
UNUSED_PORT_URL = "http://127.0.0.1:9"  # nothing is asked of it: the check comes first


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import MODULE`` fail for each of ``modules``, as if it were not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def one_line(extra: str, what: str) -> str:
    return f"{what} needs the {extra!r} extra: pip install 'marketspine[{extra}]'"


def assert_cli_names(done: subprocess.CompletedProcess[str], extra: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines == [f"marketspine: error: {one_line(extra, EXTRAS[extra].what)}"], lines


def test_need_passes_when_installed_and_names_the_extra_when_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need("serve")  # the test environment has every extra
    hide(monkeypatch, "prometheus_client")
    with pytest.raises(MissingExtraError) as raised:
        need("serve")
    assert str(raised.value) == one_line("serve", "marketspine serve")
    assert isinstance(raised.value, ImportError) and isinstance(raised.value, MarketspineError)


# --- the command line ------------------------------------------------------------------------


def test_serve_without_the_serve_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hide(monkeypatch, "starlette")
    done = run_in_process("serve", "--port", "0", "--db", str(tmp_path / "s.db"))
    assert_cli_names(done, "serve")
    assert not (tmp_path / "s.db").exists()  # checked before anything was written


def test_serve_upstream_sim_without_the_sim_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide(monkeypatch, "numpy")
    done = run_in_process("serve", "--upstream", "sim", "--port", "0", "--db", str(tmp_path / "s"))
    assert_cli_names(done, "sim")


def test_sim_without_the_sim_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "numpy")
    assert_cli_names(run_in_process("sim", "--port", "0"), "sim")


def test_collect_with_redis_without_the_redis_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide(monkeypatch, "redis")
    done = run_in_process(
        "collect", "KRW-BTC", "-t", "1m", "--since", "2026-01-01", "--until", "2026-01-02",
        "--upstream", UNUSED_PORT_URL, "--db", str(tmp_path / "c.db"),
        "--redis", "redis://127.0.0.1:6379/0",
    )  # fmt: skip
    assert_cli_names(done, "redis")


@pytest.mark.parametrize(
    "args",
    [
        ("collect", "KRW-BTC", "-t", "1m", "--since", "2026-01-01", "--until", "2026-01-02",
         "--upstream", UNUSED_PORT_URL),
        ("status",),
        ("migrate", "--to", "{sqlite}"),
    ],
    ids=["collect", "status", "migrate"],
)  # fmt: skip
def test_a_postgresql_db_without_the_postgres_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # psycopg is imported once, by the PostgreSQL store's module: import that afresh too.
    hide(monkeypatch, "psycopg")
    monkeypatch.delitem(sys.modules, "marketspine._store.postgres", raising=False)
    url = "postgresql://postgres@127.0.0.1:5432/test"
    argv = [a.format(sqlite=tmp_path / "to.db") for a in args]
    argv += ["--from", url] if args[0] == "migrate" else ["--db", url]
    assert_cli_names(run_in_process(*argv), "postgres")


def test_parquet_export_without_the_parquet_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hide(monkeypatch, "pyarrow")
    done = run_in_process(
        "export", "KRW-BTC", "-t", "1m", "--format", "parquet",
        "--out", str(tmp_path / "x.parquet"), "--db", str(tmp_path / "none.db"),
    )  # fmt: skip
    assert_cli_names(done, "parquet")
    assert not (tmp_path / "x.parquet").exists()


# --- the library -----------------------------------------------------------------------------


def test_spine_with_redis_without_the_redis_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "redis")
    with pytest.raises(MissingExtraError, match=r"pip install 'marketspine\[redis\]'"):
        Spine(upstream=UNUSED_PORT_URL, redis="redis://127.0.0.1:6379/0")


def test_spine_on_postgresql_without_the_postgres_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "psycopg")
    monkeypatch.delitem(sys.modules, "marketspine._store.postgres", raising=False)
    # Caught as the ImportError it also is, as code guarding an optional import would.
    with pytest.raises(ImportError, match=r"pip install 'marketspine\[postgres\]'"):
        Spine(upstream=UNUSED_PORT_URL, db="postgresql://postgres@127.0.0.1:5432/test")


@pytest.mark.parametrize("extra", ["pandas", "polars"])
def test_frames_without_their_extra(monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
    result = CandleResult("KRW-BTC", parse_timeframe("1m"), [])
    hide(monkeypatch, extra)
    with pytest.raises(MissingExtraError) as raised:
        getattr(result, f"to_{extra}")()
    assert str(raised.value) == one_line(extra, f"CandleResult.to_{extra}()")


def test_the_simulator_without_the_sim_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # sim's names load on first use and are kept: forget create_app so it loads again.
    monkeypatch.delitem(vars(marketspine.sim), "create_app", raising=False)
    hide(monkeypatch, "numpy")
    with pytest.raises(MissingExtraError, match=r"pip install 'marketspine\[sim\]'"):
        marketspine.sim.create_app  # noqa: B018
    assert marketspine.sim.SimConfig().seed == 1  # its configuration needs no extra


# --- the extras pyproject.toml declares ------------------------------------------------------


def test_every_extra_installs_the_modules_it_is_checked_for() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(declared) - {"dev", "all"} == set(EXTRAS)
    for extra, checked in EXTRAS.items():
        # "prometheus-client>=0.26,<1" -> prometheus_client, "psycopg[binary]>=3" -> psycopg
        installs = {
            req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0]
            .strip().lower().replace("-", "_")
            for req in declared[extra]
        }  # fmt: skip
        assert set(checked.modules) <= installs, extra
    assert declared["all"] == [f"marketspine[{','.join(EXTRAS)}]"]
