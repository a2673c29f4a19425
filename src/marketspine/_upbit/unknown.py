"""What was unknown in a request Upbit answered 404 (pure): which of the codes asked are not
listed, and the listed code each most likely meant.

Upbit names nothing: a ticker request for ``KRW-BTC,BTC-KRW`` is one 404 for the lot, and
``BTC-KRW`` (the order most exchanges write) is simply not found. With the market list at
hand the error can say which code, and that ``KRW-BTC`` is listed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["unknown_markets_text", "unknown_quote_text"]


def unknown_markets_text(asked: Sequence[str], listed: Collection[str]) -> str | None:
    """The message for a 404 to ``asked`` given the ``listed`` codes; None when every code
    asked is listed (the list is older than upstream's: nothing better to say)."""
    unknown = [code for code in asked if code not in listed]
    if not unknown:
        return None
    named = ", ".join(repr(code) for code in unknown)
    which = f"unknown market {named}" if len(unknown) == 1 else f"unknown markets {named}"
    if len(asked) > len(unknown):
        which += f" ({len(unknown)} of the {len(asked)} asked)"
    meant = {code: _swapped(code) for code in unknown if _swapped(code) in listed}
    if len(unknown) == 1 and meant:
        which += f"; did you mean {meant[unknown[0]]}? (codes are QUOTE-BASE)"
    elif meant:
        hints = ", ".join(f"{swapped} for {code}" for code, swapped in meant.items())
        which += f"; did you mean {hints}? (codes are QUOTE-BASE)"
    return which


def unknown_quote_text(quote: str, listed: Collection[str]) -> str | None:
    """The message for a 404 to the quote currencies ``quote`` (comma-separated) given the
    ``listed`` codes; None when every one of them quotes a listed market."""
    quotes = sorted({code.split("-", 1)[0] for code in listed})
    unknown = [q for q in quote.split(",") if q not in quotes]
    if not unknown:
        return None
    named = ", ".join(repr(q) for q in unknown)
    return f"unknown quote currency {named}: listed markets are quoted in {', '.join(quotes)}"


def _swapped(code: str) -> str:
    quote, _, base = code.partition("-")
    return f"{base}-{quote}"
