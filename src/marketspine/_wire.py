"""The one decode step every wire decoder shares: bytes in, typed shape out, and a body
that is not what Upbit promised is upstream's fault, reported as such."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

import msgspec

from ._errors import UpstreamError
from ._replies import excerpt

__all__ = ["decode_wire"]

T = TypeVar("T")
R = TypeVar("R")


@overload
def decode_wire(decoder: msgspec.json.Decoder[T], body: bytes, what: str) -> T: ...
@overload
def decode_wire(
    decoder: msgspec.json.Decoder[T], body: bytes, what: str, build: Callable[[T], R]
) -> R: ...
def decode_wire(
    decoder: msgspec.json.Decoder[Any],
    body: bytes,
    what: str,
    build: Callable[[Any], Any] | None = None,
) -> Any:
    """``body`` decoded by ``decoder`` (and turned into records by ``build``, if given).

    Raises UpstreamError naming ``what`` when the body is not that JSON or its values do
    not convert: Upbit sent something it does not document, so retrying may help and
    changing the request will not.
    """
    try:
        raw = decoder.decode(body)
        return raw if build is None else build(raw)
    except (msgspec.DecodeError, ValueError) as exc:
        raise UpstreamError(
            f"malformed Upbit {what} JSON ({exc}); upstream sent: {excerpt(body)!r}",
            retry_after=None,
        ) from exc
