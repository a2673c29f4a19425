"""Single records that carry their ``meta``: what ``Spine.ticker`` and ``Spine.orderbook``
answer.

A ``TickerAnswer`` is a ``Ticker`` (an ``OrderbookAnswer`` an ``Orderbook``): the same fields,
``isinstance`` holds, and it is equal to (and hashes like) the plain record with the same
fields, whatever its ``meta``. ``meta`` is one more field, so ``msgspec`` encoding includes it;
decoding as the plain record ignores it.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import msgspec

from ..records import Orderbook, Ticker
from .result import ResultMeta

__all__ = ["OrderbookAnswer", "TickerAnswer", "with_meta"]

_R = TypeVar("_R", Ticker, Orderbook)


class _ComparedAsRecord:
    """Equality and hash of the plain ``record`` type's fields (``meta`` left out)."""

    __slots__ = ()
    record: ClassVar[type[msgspec.Struct]]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, self.record):
            return NotImplemented
        return _values(self, self.record) == _values(other, self.record)

    def __ne__(self, other: object) -> bool:
        same = self.__eq__(other)
        return same if same is NotImplemented else not same

    def __hash__(self) -> int:
        return hash(self.record(*_values(self, self.record)))


class TickerAnswer(_ComparedAsRecord, Ticker, frozen=True, gc=False, kw_only=True):
    """A ``Ticker`` with the ``meta`` of the request that answered it."""

    record = Ticker
    meta: ResultMeta = ResultMeta()


class OrderbookAnswer(_ComparedAsRecord, Orderbook, frozen=True, gc=False, kw_only=True):
    """An ``Orderbook`` with the ``meta`` of the request that answered it."""

    record = Orderbook
    meta: ResultMeta = ResultMeta()


def with_meta(record: _R, meta: ResultMeta) -> _R:
    """``record`` as its answer type, carrying ``meta``."""
    answer: Any = TickerAnswer if isinstance(record, Ticker) else OrderbookAnswer
    return answer(*_values(record, answer.record), meta=meta)  # type: ignore[no-any-return]


def _values(record: object, kind: type[msgspec.Struct]) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in kind.__struct_fields__)
