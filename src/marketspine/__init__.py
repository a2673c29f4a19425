"""marketspine — Upbit market data, fetched once, kept locally, served fast.

Names load on first use, so the command line (and a Ctrl-C during its start) does not
wait for httpx, websockets and the rest to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base.timeframes import TIMEFRAMES as TIMEFRAMES
    from ._base.timeframes import Timeframe as Timeframe
    from ._base.timeframes import parse_timeframe as parse_timeframe
    from ._budget.local import LocalRateBudget as LocalRateBudget
    from ._budget.rules import Priority as Priority
    from ._budget.rules import RateBudget as RateBudget
    from ._client.circuit import CircuitBreaker as CircuitBreaker
    from ._client.client import Client as Client
    from ._client.retry import RetryPolicy as RetryPolicy
    from ._live.candle_feed import ClosedCandle as ClosedCandle
    from ._live.listener import Gap as Gap
    from ._live.listener import Health as Health
    from ._live.listener import Listener as Listener
    from ._live.listener import Overflow as Overflow
    from ._live.stream import Backoff as Backoff
    from ._live.stream import Stream as Stream
    from ._live.stream import StreamStatistics as StreamStatistics
    from ._spine.accounting import SpineStatistics as SpineStatistics
    from ._spine.quotes import Channel as Channel
    from ._spine.result import CandleResult as CandleResult
    from ._spine.result import ResultMeta as ResultMeta
    from ._spine.spine import Spine as Spine
    from .errors import BannedError as BannedError
    from .errors import CircuitOpenError as CircuitOpenError
    from .errors import ClosedError as ClosedError
    from .errors import InvalidRequestError as InvalidRequestError
    from .errors import MarketspineError as MarketspineError
    from .errors import RateLimitedError as RateLimitedError
    from .errors import RetryLaterError as RetryLaterError
    from .errors import StoreError as StoreError
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

# name -> the private module that defines it
_HOME = {
    "ClosedCandle": "_live.candle_feed",
    "CircuitBreaker": "_client.circuit",
    "Client": "_client.client",
    "RetryPolicy": "_client.retry",
    "BannedError": "errors",
    "CircuitOpenError": "errors",
    "ClosedError": "errors",
    "InvalidRequestError": "errors",
    "MarketspineError": "errors",
    "RateLimitedError": "errors",
    "RetryLaterError": "errors",
    "StoreError": "errors",
    "UnknownMarketError": "errors",
    "UpstreamError": "errors",
    "LocalRateBudget": "_budget.local",
    "Priority": "_budget.rules",
    "RateBudget": "_budget.rules",
    "Candle": "records",
    "Instrument": "records",
    "MarketInfo": "records",
    "Orderbook": "records",
    "OrderbookUnit": "records",
    "Ticker": "records",
    "Trade": "records",
    "CandleResult": "_spine.result",
    "ResultMeta": "_spine.result",
    "Channel": "_spine.quotes",
    "Spine": "_spine.spine",
    "SpineStatistics": "_spine.accounting",
    "Backoff": "_live.stream",
    "Gap": "_live.listener",
    "Health": "_live.listener",
    "Listener": "_live.listener",
    "Overflow": "_live.listener",
    "Stream": "_live.stream",
    "StreamStatistics": "_live.stream",
    "TIMEFRAMES": "_base.timeframes",
    "Timeframe": "_base.timeframes",
    "parse_timeframe": "_base.timeframes",
}

__all__ = sorted([*_HOME, "__version__"])


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'marketspine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
