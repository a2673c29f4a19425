"""Lengths of time as people write them on a command line (``1s``, ``500ms``, ``7d``), and
times given either way (``2026-01-01`` or ``7d``: seven days back from now)."""

from __future__ import annotations

import re

from ..errors import InvalidRequestError
from .time import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, parse_time

__all__ = ["parse_duration", "parse_moment"]

_UNITS = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str, name: str) -> int:
    """``text`` (a number and a unit: ms, s, m, h or d; or ``0``) in milliseconds.

    Raises InvalidRequestError naming ``name`` (the flag) for anything else."""
    value = text.strip().lower()
    if value == "0":
        return 0
    found = _DURATION.fullmatch(value)
    if found is None:
        raise InvalidRequestError(
            f"{name} must be a duration such as 500ms, 1s, 5m, 2h or 7d (or 0), got {text!r}"
        )
    return _length_ms(found)


def parse_moment(text: str, now_ms: int, name: str) -> int:
    """``text`` as a time in epoch ms: ISO 8601 (naive means UTC) or a duration back from
    ``now_ms`` (``90m``, ``12h``, ``7d``).

    Raises InvalidRequestError naming ``name`` (the flag) and both forms for anything else."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is not None:
        return now_ms - _length_ms(found)
    try:
        return parse_time(text)
    except (InvalidRequestError, OverflowError):
        raise InvalidRequestError(
            f"{name} {text!r} is not a time: expected ISO 8601 such as 2024-01-01, "
            "2024-01-01T09:00:00+09:00 or 2024-01-01T00:00:00Z (naive means UTC), or a "
            "duration back from now such as 90m, 12h or 7d"
        ) from None


def _length_ms(found: re.Match[str]) -> int:
    """The milliseconds of a ``_DURATION`` match."""
    return round(float(found.group(1)) * _UNITS[found.group(2)])
