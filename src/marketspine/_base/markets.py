"""The market code: its one type, its one shape and its one normalizer (pure).

A market code is ``QUOTE-BASE`` in upper case: letters and digits either side of one
hyphen (``KRW-BTC``, ``USDT-ETH``). Every boundary (the public ``Spine`` and ``Client``
methods, the CLI, serve's request parsing, ``Stream.subscribe``, ``Listener``) turns what it
was given into a ``MarketCode`` with ``market_code``; inner layers take ``MarketCode`` and
do not check it again.

Some boundaries are also reached from inside (the Spine calls the Client's public
methods; ``Stream.subscribe`` hands its codes to ``SubscriptionSet.add``), so
``market_code`` recognises a code it made before and returns it without normalizing it
again.
"""

from __future__ import annotations

import re
from typing import NewType

from ..errors import InvalidRequestError

__all__ = [
    "MARKET_ACCEPTED",
    "MarketCode",
    "is_market_code",
    "market_code",
    "normalize_market",
    "shown",
]

# A market code as ``normalize_market`` returns it: upper case QUOTE-BASE.
MarketCode = NewType("MarketCode", str)

MARKET_ACCEPTED = (
    "a market code string such as KRW-BTC (expected QUOTE-BASE: letters and digits "
    "either side of one hyphen, any case)"
)

_SHAPE = re.compile(r"[A-Z0-9]+-[A-Z0-9]+")

# Every code normalize_market made, by itself: ``_MADE.get(x) is x`` proves ``x`` is one
# of them (strings are immutable), so it needs no second look. Upbit lists ~700 markets;
# the bound only matters when a caller invents codes by the thousand (then: start over).
# Module-wide on purpose: the proof must hold across owners (the Spine's code reaches the
# Client, the Stream and the Listener), and a lost entry only costs one normalization again.
_MADE: dict[str, MarketCode] = {}
_MADE_MAX = 4096


def shown(value: object) -> str:
    """``value`` as an error message shows it: its repr (cut short) and its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def is_market_code(text: str) -> bool:
    """Whether ``text`` is a market code exactly as written: upper case QUOTE-BASE, no
    spaces. For parsers that must refuse what Upbit refuses (Upbit drops lower-case codes
    from a WebSocket request rather than correcting them)."""
    return _SHAPE.fullmatch(text) is not None


def normalize_market(value: object, name: str = "market") -> MarketCode:
    """``value`` as a MarketCode: surrounding spaces dropped, upper-cased
    (``" krw-btc"`` -> ``KRW-BTC``).

    Raises InvalidRequestError naming ``name``, the value given and what is accepted,
    unless ``value`` is a string of the shape QUOTE-BASE.
    """
    code = value.strip().upper() if isinstance(value, str) else None
    if code is None or not _SHAPE.fullmatch(code):
        raise InvalidRequestError(f"invalid {name} {shown(value)}: expected {MARKET_ACCEPTED}")
    if len(_MADE) >= _MADE_MAX:
        _MADE.clear()
    return _MADE.setdefault(code, MarketCode(code))


def market_code(value: object, name: str = "market") -> MarketCode:
    """What every boundary calls: ``value`` itself when ``normalize_market`` made it (an
    outer boundary has normalized it already), else ``normalize_market(value, name)``."""
    if isinstance(value, str) and _MADE.get(value) is value:
        return MarketCode(value)
    return normalize_market(value, name)
