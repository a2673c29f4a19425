"""serve's tokens (#24 point 4): a token shorter than 16 characters is refused wherever it
comes from; the generated token file is created exclusively, 0600 from the start, never
through a planted link; a stored file others may read is used with a warning; a link, a
folder or a pipe where the token file belongs is refused, naming the path."""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import pytest

from marketspine._serve.admin_api import (
    ENV_READ_TOKEN,
    ENV_TOKEN,
    MIN_TOKEN_CHARS,
    resolve_read_token,
    resolve_token,
    token_path,
)
from marketspine.errors import InvalidRequestError

GOOD = "a-token-of-20-chars!"


@pytest.fixture(autouse=True)
def _no_tokens_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    monkeypatch.delenv(ENV_READ_TOKEN, raising=False)


def test_a_token_shorter_than_16_characters_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = "x" * (MIN_TOKEN_CHARS - 1)
    with pytest.raises(InvalidRequestError, match="--admin-token is 15 characters long"):
        resolve_token(short, tmp_path / "s.db")
    with pytest.raises(InvalidRequestError, match="--read-token is 15 characters long"):
        resolve_read_token(short)
    monkeypatch.setenv(ENV_TOKEN, short)
    with pytest.raises(InvalidRequestError, match="at least 16"):
        resolve_token(None, tmp_path / "s.db")
    assert resolve_token("x" * MIN_TOKEN_CHARS, tmp_path / "s.db") == ("x" * 16, False)
    assert not token_path(tmp_path / "s.db").exists()


def test_the_generated_token_file_is_0600_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    token, generated = resolve_token(None, db)
    assert generated and len(token) >= MIN_TOKEN_CHARS
    assert stat.S_IMODE(token_path(db).stat().st_mode) == 0o600
    assert resolve_token(None, db) == (token, False)


def test_a_planted_link_is_never_written_through_nor_read(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    target = tmp_path / "attacker-readable"
    token_path(db).symlink_to(target)  # dangling: creating through it would make target
    with pytest.raises(InvalidRequestError, match="symbolic link is never followed"):
        resolve_token(None, db)
    assert not target.exists()
    target.write_text(GOOD + "\n")  # a token the attacker chose, through a link
    with pytest.raises(InvalidRequestError, match=re.escape(str(token_path(db)))):
        resolve_token(None, db)


@pytest.mark.parametrize("kind", ["folder", "pipe"])
def test_something_else_where_the_token_file_belongs_is_refused(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "s.db"
    if kind == "folder":
        token_path(db).mkdir()
    else:
        os.mkfifo(token_path(db))
    with pytest.raises(InvalidRequestError, match="not a regular file"):
        resolve_token(None, db)


def test_a_stored_token_others_may_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.db"
    token_path(db).write_text(GOOD + "\n")
    token_path(db).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="marketspine.serve"):
        assert resolve_token(None, db) == (GOOD, False)
    assert "readable or writable by others (mode 644): chmod 600 it" in caplog.text
    caplog.clear()
    token_path(db).chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="marketspine.serve"):
        resolve_token(None, db)
    assert caplog.text == ""


def test_a_short_stored_token_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    token_path(db).write_text("short\n")
    token_path(db).chmod(0o600)
    with pytest.raises(InvalidRequestError, match=r"the admin token in .* is 5 characters"):
        resolve_token(None, db)


def test_an_empty_token_file_is_made_anew(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    token_path(db).touch(0o600)  # a start that died before writing the token
    token, generated = resolve_token(None, db)
    assert generated and token_path(db).read_text() == token + "\n"
    assert stat.S_IMODE(token_path(db).stat().st_mode) == 0o600
