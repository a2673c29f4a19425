"""Single records that carry their ``meta``: what ``Spine.ticker`` and ``Spine.orderbook``
answer.

A ``TickerAnswer`` is a ``Ticker`` (an ``OrderbookAnswer`` an ``Orderbook``): the same fields,
``isinstance`` holds, and it is equal to (and hashes like) the plain record with the same
fields, whatever its ``meta``. ``meta`` is one more field, so ``msgspec`` encoding includes it;
decoding as the plain record ignores it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from ._records import Orderbook, Ticker
from ._result import ResultMeta

__all__ = ["OrderbookAnswer", "TickerAnswer", "with_meta"]

_R = TypeVar("_R", Ticker, Orderbook)


class TickerAnswer(Ticker, frozen=True, gc=False, kw_only=True):
    """A ``Ticker`` with the ``meta`` of the request that answered it."""

    meta: ResultMeta = ResultMeta()

    def __eq__(self, other: object) -> bool:
        return _same(self, other, Ticker)

    def __ne__(self, other: object) -> bool:
        return _differ(self, other, Ticker)

    def __hash__(self) -> int:
        return hash(Ticker(*_values(self, Ticker)))


class OrderbookAnswer(Orderbook, frozen=True, gc=False, kw_only=True):
    """An ``Orderbook`` with the ``meta`` of the request that answered it."""

    meta: ResultMeta = ResultMeta()

    def __eq__(self, other: object) -> bool:
        return _same(self, other, Orderbook)

    def __ne__(self, other: object) -> bool:
        return _differ(self, other, Orderbook)

    def __hash__(self) -> int:
        return hash(Orderbook(*_values(self, Orderbook)))


def with_meta(record: _R, meta: ResultMeta) -> _R:
    """``record`` as its answer type, carrying ``meta``."""
    answer: Any = TickerAnswer if isinstance(record, Ticker) else OrderbookAnswer
    kind = Ticker if isinstance(record, Ticker) else Orderbook
    return answer(*_values(record, kind), meta=meta)  # type: ignore[no-any-return]


def _values(record: msgspec.Struct, kind: type[msgspec.Struct]) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in kind.__struct_fields__)


def _same(answer: msgspec.Struct, other: object, kind: type[msgspec.Struct]) -> bool:
    if not isinstance(other, kind):
        return NotImplemented  # type: ignore[no-any-return]
    return _values(answer, kind) == _values(other, kind)


def _differ(answer: msgspec.Struct, other: object, kind: type[msgspec.Struct]) -> bool:
    if not isinstance(other, kind):
        return NotImplemented  # type: ignore[no-any-return]
    return _values(answer, kind) != _values(other, kind)
