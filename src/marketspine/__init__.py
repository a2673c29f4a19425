"""marketspine — Upbit market data, fetched once, kept locally, served fast."""

from __future__ import annotations

from ._circuit import CircuitBreaker
from ._client import Client, RetryPolicy
from ._errors import (
    BannedError,
    CircuitOpenError,
    InvalidRequestError,
    MarketspineError,
    RateLimitedError,
    RetryLaterError,
    StoreError,
    UnknownMarketError,
    UpstreamError,
)
from ._ratebudget import LocalRateBudget, Priority, RateBudget
from ._records import Candle, Instrument, MarketInfo, Orderbook, OrderbookUnit, Ticker, Trade
from ._result import CandleResult, ResultMeta
from ._spine import Channel, Spine, SpineStatistics
from ._stream import Backoff, Gap, Health, Listener, Overflow, Stream, StreamStatistics
from ._timeframes import TIMEFRAMES, Timeframe, parse_timeframe

__version__ = "0.1.0"

__all__ = [
    "TIMEFRAMES",
    "Backoff",
    "BannedError",
    "Candle",
    "CandleResult",
    "Channel",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "Gap",
    "Health",
    "Instrument",
    "InvalidRequestError",
    "Listener",
    "LocalRateBudget",
    "MarketInfo",
    "MarketspineError",
    "Orderbook",
    "OrderbookUnit",
    "Overflow",
    "Priority",
    "RateBudget",
    "RateLimitedError",
    "ResultMeta",
    "RetryLaterError",
    "RetryPolicy",
    "Spine",
    "SpineStatistics",
    "StoreError",
    "Stream",
    "StreamStatistics",
    "Ticker",
    "Timeframe",
    "Trade",
    "UnknownMarketError",
    "UpstreamError",
    "__version__",
    "parse_timeframe",
]
