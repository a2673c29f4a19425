"""The one decode step every wire decoder shares: bytes in, typed shape out, and a body
that is not what Upbit promised is upstream's fault, reported as such."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, overload

import msgspec

from ..errors import UpstreamError

__all__ = ["decode_wire", "excerpt"]

_EXCERPT_CHARS = 120
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG_OR_SCRIPT = re.compile(
    r"<(script|style)[^>]*>.*?</\1>|<!--.*?-->|<[^>]*>", re.IGNORECASE | re.DOTALL
)

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


def excerpt(body: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """A short one-line excerpt of a reply body for error messages: an HTML page's title
    (or its text without tags), whitespace collapsed, cut to ``limit`` characters."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if "<" in text and ">" in text:
        title = _TITLE.search(text)
        text = title.group(1) if title and title.group(1).strip() else _TAG_OR_SCRIPT.sub(" ", text)
    text = " ".join(text.split())
    if not text:
        return "an empty body"
    return text if len(text) <= limit else text[: limit - 1] + "…"
