"""The public API is what `import marketspine` exports; this pins it."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import marketspine

EXPECTED = {
    "Backoff",
    "BannedError",
    "BreakerStatistics",
    "BudgetStatistics",
    "Candle",
    "CandleMemory",
    "CandleResult",
    "CandleStore",
    "Channel",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "ClientStatistics",
    "ClosedCandle",
    "ClosedError",
    "Coverage",
    "Event",
    "Gap",
    "GroupStatistics",
    "Health",
    "Instrument",
    "InvalidRequestError",
    "ListResult",
    "Listener",
    "Liveness",
    "LocalRateBudget",
    "MarketInfo",
    "MarketspineError",
    "MissingExtraError",
    "MemoryBudget",
    "MemoryBudgetStatistics",
    "MemoryStatistics",
    "Orderbook",
    "OrderbookUnit",
    "Overflow",
    "PolledSeries",
    "PostgresStore",
    "Priority",
    "RateBudget",
    "RateLimitedError",
    "ResultMeta",
    "RetryLaterError",
    "RetryPolicy",
    "RunRecord",
    "SQLiteStore",
    "SeriesSummary",
    "Spine",
    "SpineStatistics",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "Stream",
    "StreamStatistics",
    "TIMEFRAMES",
    "Ticker",
    "Timeframe",
    "Trade",
    "TradeGap",
    "TradeSource",
    "UnknownMarketError",
    "UpstreamError",
    "__version__",
    "parse_timeframe",
}


def test_exported_names_are_pinned() -> None:
    assert set(marketspine.__all__) == EXPECTED
    for name in marketspine.__all__:
        assert getattr(marketspine, name) is not None


def test_priorities_and_errors_are_ordered_for_callers() -> None:
    p = marketspine.Priority
    assert p.CRITICAL > p.HIGH > p.NORMAL > p.LOW  # the documented order: more urgent is larger
    assert issubclass(marketspine.UnknownMarketError, marketspine.InvalidRequestError)
    assert issubclass(marketspine.CircuitOpenError, marketspine.RetryLaterError)
    assert issubclass(marketspine.RetryLaterError, marketspine.MarketspineError)


@pytest.mark.process
def test_the_command_line_loads_without_the_network_stack() -> None:
    # Names load on first use: the CLI starts fast and a Ctrl-C during its start is caught.
    import subprocess
    import sys

    probe = "import sys, marketspine.__main__, marketspine._cli.main; print('httpx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def _marketspine_classes(hint: object) -> Iterator[type]:
    """Every class of ours inside a resolved annotation: through unions, generics
    (Sequence[...], AsyncIterator[...], Mapping[..., ...]), Callable's argument list."""
    if isinstance(hint, list):  # Callable[[A, B], R]'s argument list
        for item in hint:
            yield from _marketspine_classes(item)
        return
    if typing.get_origin(hint) is typing.Literal:  # values, not types
        return
    origin = typing.get_origin(hint)
    for part in (hint, origin):
        if isinstance(part, type) and part.__module__.startswith("marketspine"):
            yield part
    for arg in typing.get_args(hint):
        yield from _marketspine_classes(arg)


# Made by the library, never by a caller: a Listener comes from Stream.listen (its
# constructor takes the stream's private fan-out).
_MADE_FOR_YOU: set[type] = {marketspine.Listener}


def _hints(owner: object) -> Iterator[object]:
    # Modules name some third-party types only under TYPE_CHECKING (to_pandas's DataFrame).
    import pandas
    import polars

    yield from typing.get_type_hints(owner, localns={"pandas": pandas, "polars": polars}).values()


def _public_hints(owner: type | Callable[..., Any]) -> Iterator[object]:
    """The resolved annotations of a public class (its fields, constructor, public methods
    and properties, inherited from our own bases too) or function."""
    if not isinstance(owner, type):
        yield from _hints(owner)
        return
    for cls in owner.__mro__:
        if not cls.__module__.startswith("marketspine"):
            continue  # Exception's, NamedTuple's, IntEnum's, list's own methods
        yield from _hints(cls)  # fields of records and snapshots
        for name, member in vars(cls).items():
            if name.startswith("_") and (name != "__init__" or cls in _MADE_FOR_YOU):
                continue
            if isinstance(member, property):
                member = member.fget
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if inspect.isfunction(member):
                yield from _hints(member)


def test_every_type_a_public_method_takes_or_returns_is_exported() -> None:
    # Reachable from the exported names: what their methods, properties and fields accept or
    # return, and what those types' methods do in turn. A caller must be able to import each
    # of them (to annotate a variable, to isinstance-check, to implement a protocol).
    values = [getattr(marketspine, name) for name in marketspine.__all__]
    todo = [value for value in values if isinstance(value, type) or inspect.isfunction(value)]
    exported = set(todo)
    seen: set[type] = set()
    while todo:
        for cls in _marketspine_classes(list(_public_hints(todo.pop()))):
            if cls not in seen:
                seen.add(cls)
                todo.append(cls)
    missing = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in seen - exported)
    assert not missing, f"public methods take or return these, not importable: {missing}"
    for cls in seen:  # and under their own names
        assert getattr(marketspine, cls.__name__) is cls


def test_spine_methods_take_all_but_the_first_two_arguments_by_keyword() -> None:
    # spine.candles("KRW-BTC", "1m", count=5): a later parameter can be added, removed or
    # reordered without silently changing what a positional call meant.
    for name, member in vars(marketspine.Spine).items():
        if not inspect.isfunction(member) or (name.startswith("_") and name != "__init__"):
            continue
        after_self = list(inspect.signature(member).parameters.values())[1:]
        positional = [p.name for p in after_self[2:] if p.kind is not p.KEYWORD_ONLY]
        assert not positional, f"Spine.{name}: {positional} should be keyword-only"
