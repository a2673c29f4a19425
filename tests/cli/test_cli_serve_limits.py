"""``serve``'s limit flags on the command line (#24 point 4): a ``--forwarded-allow-ips``
that is not an address or network, and a token shorter than 16 characters, are one line
and exit 2 before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import closed_port, run_in_process

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (
            ["--forwarded-allow-ips", "proxy.lan"],
            "--forwarded-allow-ips 'proxy.lan' is not an IP address or network",
        ),
        (["--forwarded-allow-ips", "10.0.0.1,*"], "--forwarded-allow-ips '*' is not"),
        (["--admin-token", "short-token"], "--admin-token is 11 characters long"),
        (["--read-token", "short"], "--read-token is 5 characters long"),
    ],
)
def test_a_bad_limit_flag_is_one_line_and_exit_2(
    tmp_path: Path, extra: list[str], complaint: str
) -> None:
    db = tmp_path / "s.db"
    args = ["serve", "--upstream", closed_port(), "--port", "0", "--db", str(db)]
    if "--admin-token" not in extra:
        extra = [*extra, "--admin-token", "a-token-of-20-chars!"]
    done = run_in_process(*args, *extra, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert complaint in done.stderr
    assert "short-token" not in done.stderr or "--admin-token" in complaint
    assert not db.exists()  # refused before the database was made


def test_forwarded_allow_ips_takes_addresses_and_networks() -> None:
    from marketspine._serve.security import proxy_addresses

    given = ["127.0.0.1", "10.0.0.0/8, ::1", "192.168.1.7/24"]
    assert proxy_addresses(given) == ["127.0.0.1", "10.0.0.0/8", "::1", "192.168.1.0/24"]
