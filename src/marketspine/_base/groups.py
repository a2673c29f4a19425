"""The one error a caller sees when work in a task group fails."""

from __future__ import annotations

__all__ = ["first_leaf"]


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error inside a (nested) exception group: what ``raise ... from None``
    hands on, so a caller (and the command line) sees that error, not a group of one."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
