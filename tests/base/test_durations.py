"""Times on the command line: ISO 8601 or a duration back from now."""

from __future__ import annotations

import pytest

from marketspine import InvalidRequestError
from marketspine._base.durations import parse_duration, parse_moment
from marketspine._base.time import DAY_MS, parse_time

NOW = parse_time("2026-12-06T12:34:56Z")


@pytest.mark.parametrize("text", ["7d", "12h", "90m", "30s", "1.5h", " 7D "])
def test_a_duration_counts_back_from_now(text: str) -> None:
    assert parse_moment(text, NOW, "--since") == NOW - parse_duration(text, "--since")


def test_an_iso_time_is_that_time_whatever_now_is() -> None:
    assert parse_moment("2026-01-01", NOW, "--since") == parse_time("2026-01-01")
    assert parse_moment("2026-01-01T09:00:00+09:00", NOW - DAY_MS, "--until") == parse_time(
        "2026-01-01T00:00:00Z"
    )


@pytest.mark.parametrize("text", ["yesterday", "7 days", "-7d", "7w", "", "99999-01-01"])
def test_anything_else_names_the_flag_and_both_forms(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_moment(text, NOW, "--until")
    message = str(caught.value)
    assert message.startswith(f"--until {text!r} is not a time")
    assert "ISO 8601" in message and "7d" in message
