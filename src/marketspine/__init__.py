"""marketspine — Upbit market data, fetched once, kept locally, served fast.

Names load on first use, so the command line (and a Ctrl-C during its start) does not
wait for httpx, websockets and the rest to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._accounting import SpineStatistics as SpineStatistics
    from ._candle_feed import ClosedCandle as ClosedCandle
    from ._circuit import CircuitBreaker as CircuitBreaker
    from ._client import Client as Client
    from ._errors import BannedError as BannedError
    from ._errors import CircuitOpenError as CircuitOpenError
    from ._errors import ClosedError as ClosedError
    from ._errors import InvalidRequestError as InvalidRequestError
    from ._errors import MarketspineError as MarketspineError
    from ._errors import RateLimitedError as RateLimitedError
    from ._errors import RetryLaterError as RetryLaterError
    from ._errors import StoreError as StoreError
    from ._errors import UnknownMarketError as UnknownMarketError
    from ._errors import UpstreamError as UpstreamError
    from ._listener import Gap as Gap
    from ._listener import Health as Health
    from ._listener import Listener as Listener
    from ._listener import Overflow as Overflow
    from ._quotes import Channel as Channel
    from ._ratebudget import LocalRateBudget as LocalRateBudget
    from ._ratebudget import Priority as Priority
    from ._ratebudget import RateBudget as RateBudget
    from ._records import Candle as Candle
    from ._records import Instrument as Instrument
    from ._records import MarketInfo as MarketInfo
    from ._records import Orderbook as Orderbook
    from ._records import OrderbookUnit as OrderbookUnit
    from ._records import Ticker as Ticker
    from ._records import Trade as Trade
    from ._result import CandleResult as CandleResult
    from ._result import ResultMeta as ResultMeta
    from ._retry import RetryPolicy as RetryPolicy
    from ._spine import Spine as Spine
    from ._stream import Backoff as Backoff
    from ._stream import Stream as Stream
    from ._stream import StreamStatistics as StreamStatistics
    from ._timeframes import TIMEFRAMES as TIMEFRAMES
    from ._timeframes import Timeframe as Timeframe
    from ._timeframes import parse_timeframe as parse_timeframe

__version__ = "0.1.0"

# name -> the private module that defines it
_HOME = {
    "ClosedCandle": "_candle_feed",
    "CircuitBreaker": "_circuit",
    "Client": "_client",
    "RetryPolicy": "_retry",
    "BannedError": "_errors",
    "CircuitOpenError": "_errors",
    "ClosedError": "_errors",
    "InvalidRequestError": "_errors",
    "MarketspineError": "_errors",
    "RateLimitedError": "_errors",
    "RetryLaterError": "_errors",
    "StoreError": "_errors",
    "UnknownMarketError": "_errors",
    "UpstreamError": "_errors",
    "LocalRateBudget": "_ratebudget",
    "Priority": "_ratebudget",
    "RateBudget": "_ratebudget",
    "Candle": "_records",
    "Instrument": "_records",
    "MarketInfo": "_records",
    "Orderbook": "_records",
    "OrderbookUnit": "_records",
    "Ticker": "_records",
    "Trade": "_records",
    "CandleResult": "_result",
    "ResultMeta": "_result",
    "Channel": "_quotes",
    "Spine": "_spine",
    "SpineStatistics": "_accounting",
    "Backoff": "_stream",
    "Gap": "_listener",
    "Health": "_listener",
    "Listener": "_listener",
    "Overflow": "_listener",
    "Stream": "_stream",
    "StreamStatistics": "_stream",
    "TIMEFRAMES": "_timeframes",
    "Timeframe": "_timeframes",
    "parse_timeframe": "_timeframes",
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
