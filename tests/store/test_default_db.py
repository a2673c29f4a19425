"""Without ``--db``, real Upbit candles and any other upstream's (a simulator's) go to
different files: a store never fetches what it holds again, so simulated candles in the
real database would stand in for real ones for good."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import run_in_process

from marketspine._store.default_path import default_db_path


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "marketspine"


@pytest.mark.parametrize(
    ("upstream", "name"),
    [
        ("https://api.upbit.com", "marketspine.db"),
        ("https://api.upbit.com/", "marketspine.db"),
        ("https://API.upbit.com:443", "marketspine.db"),
        ("http://api.upbit.com", "marketspine-api.upbit.com.db"),
        ("https://sg-api.upbit.com", "marketspine-sg-api.upbit.com.db"),
        ("http://127.0.0.1:8765", "marketspine-127.0.0.1_8765.db"),
        ("http://127.0.0.1:8765/", "marketspine-127.0.0.1_8765.db"),
        ("http://localhost:9000/upbit", "marketspine-localhost_9000_upbit.db"),
        ("sim", "marketspine-sim.db"),
    ],
)
def test_each_upstream_has_its_own_default_file(data_home: Path, upstream: str, name: str) -> None:
    assert default_db_path(upstream) == data_home / name


def test_the_default_upstream_keeps_the_documented_name(data_home: Path) -> None:
    assert default_db_path() == data_home / "marketspine.db"


def test_collect_from_a_simulator_never_writes_the_real_default_database(
    data_home: Path, sim_url: str
) -> None:
    done = run_in_process("collect", "KRW-BTC", "-t", "1d", "--upstream", sim_url, "--json")
    assert done.returncode == 0, done.stderr
    port = sim_url.rsplit(":", 1)[1].rstrip("/")
    own = data_home / f"marketspine-127.0.0.1_{port}.db"
    assert own.is_file()
    assert not (data_home / "marketspine.db").exists()
    # Reading the real default database points at the simulator's file instead of saying
    # only "collect first".
    missing = run_in_process("export", "KRW-BTC", "-t", "1d", "--out", "-")
    assert missing.returncode == 2, missing.stderr
    assert own.name in missing.stderr and "--db" in missing.stderr
    assert "Traceback" not in missing.stderr
    found = run_in_process("export", "KRW-BTC", "-t", "1d", "--out", "-", "--db", str(own))
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("time_utc,open")
