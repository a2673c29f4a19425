"""marketspine — Upbit market data, fetched once, kept locally, served fast.

The public API is one list: the ``if TYPE_CHECKING:`` imports below. Type checkers and
IDEs read them as they are; at run time they do not run (so the command line, and a Ctrl-C
during its start, does not wait for httpx, websockets and the rest to import) and this
module reads them from its own source instead: each name's module becomes an entry of the
lazy table that ``__getattr__`` imports from on first use, and ``__all__`` is the table's
names plus ``__version__``. To export a name, add its import there (``from .x import Y as
Y``); nothing else. Every type a public method accepts or returns must be in it
(``tests/test_public_api.py`` walks the annotations to check).
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base.coverage import Coverage as Coverage
    from ._base.memory import CandleMemory as CandleMemory
    from ._base.memory import MemoryBudget as MemoryBudget
    from ._base.memory import MemoryBudgetStatistics as MemoryBudgetStatistics
    from ._base.memory import MemoryStatistics as MemoryStatistics
    from ._base.timeframes import TIMEFRAMES as TIMEFRAMES
    from ._base.timeframes import Timeframe as Timeframe
    from ._base.timeframes import parse_timeframe as parse_timeframe
    from ._budget.local import LocalRateBudget as LocalRateBudget
    from ._budget.rules import BudgetStatistics as BudgetStatistics
    from ._budget.rules import GroupStatistics as GroupStatistics
    from ._budget.rules import Priority as Priority
    from ._budget.rules import RateBudget as RateBudget
    from ._client.circuit import BreakerStatistics as BreakerStatistics
    from ._client.circuit import CircuitBreaker as CircuitBreaker
    from ._client.client import Client as Client
    from ._client.client import ClientStatistics as ClientStatistics
    from ._client.retry import RetryPolicy as RetryPolicy
    from ._live.candle_feed import ClosedCandle as ClosedCandle
    from ._live.listener import Event as Event
    from ._live.listener import Gap as Gap
    from ._live.listener import Health as Health
    from ._live.listener import Listener as Listener
    from ._live.listener import Overflow as Overflow
    from ._live.stream import Backoff as Backoff
    from ._live.stream import Liveness as Liveness
    from ._live.stream import Stream as Stream
    from ._live.stream import StreamStatistics as StreamStatistics
    from ._live.trade_fill import TradeSource as TradeSource
    from ._spine.accounting import SpineStatistics as SpineStatistics
    from ._spine.quotes import Channel as Channel
    from ._spine.result import CandleResult as CandleResult
    from ._spine.result import ListResult as ListResult
    from ._spine.result import ResultMeta as ResultMeta
    from ._spine.spine import Spine as Spine
    from ._spine.usage import PolledSeries as PolledSeries
    from ._store.postgres import PostgresStore as PostgresStore
    from ._store.recording import TradeGap as TradeGap
    from ._store.sqlite import CandleStore as CandleStore
    from ._store.sqlite import RunRecord as RunRecord
    from ._store.sqlite import SeriesSummary as SeriesSummary
    from ._store.sqlite import SQLiteStore as SQLiteStore
    from .errors import BannedError as BannedError
    from .errors import CircuitOpenError as CircuitOpenError
    from .errors import ClosedError as ClosedError
    from .errors import InvalidRequestError as InvalidRequestError
    from .errors import MarketspineError as MarketspineError
    from .errors import MissingExtraError as MissingExtraError
    from .errors import RateLimitedError as RateLimitedError
    from .errors import RetryLaterError as RetryLaterError
    from .errors import StoreError as StoreError
    from .errors import StoreFullError as StoreFullError
    from .errors import StoreUnavailableError as StoreUnavailableError
    from .errors import UnknownMarketError as UnknownMarketError
    from .errors import UpstreamError as UpstreamError
    from .records import Candle as Candle
    from .records import Instrument as Instrument
    from .records import MarketInfo as MarketInfo
    from .records import Orderbook as Orderbook
    from .records import OrderbookUnit as OrderbookUnit
    from .records import Ticker as Ticker
    from .records import Trade as Trade

__version__ = "0.1.0"


def _public_homes() -> dict[str, str]:
    """Each public name -> the private module defining it: the `if TYPE_CHECKING:` imports
    above, read from this file's lines (a regular expression, not a parse: well under a
    millisecond, which the command line's start-up would otherwise pay)."""
    with open(__file__, encoding="utf-8") as source:
        text = source.read()
    block = text[text.index("if TYPE_CHECKING:") : text.index("__version__ =")]
    return {name: module for module, name in _IMPORT.findall(block)}


# "    from ._spine.spine import Spine as Spine" -> ("_spine.spine", "Spine")
_IMPORT = re.compile(r"^    from \.([\w.]+) import (\w+) as \2$", re.MULTILINE)
_HOME = _public_homes()  # name -> the private module that defines it
__all__ = sorted([*_HOME, "__version__"])

if not TYPE_CHECKING:  # type checkers know the names from the imports; a typo is their error

    def __getattr__(name: str) -> Any:
        home = _HOME.get(name)
        if home is None:
            raise AttributeError(f"module 'marketspine' has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{home}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    return __all__
