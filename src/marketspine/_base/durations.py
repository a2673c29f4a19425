"""Lengths of time as people write them on a command line (``1s``, ``500ms``, ``7d``)."""

from __future__ import annotations

import re

from ..errors import InvalidRequestError
from .time import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS

__all__ = ["parse_duration"]

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
    return round(float(found.group(1)) * _UNITS[found.group(2)])
