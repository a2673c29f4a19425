"""The public API is what `import marketspine` exports; this pins it."""

from __future__ import annotations

import pytest

import marketspine

EXPECTED = {
    "Backoff",
    "BannedError",
    "Candle",
    "CandleResult",
    "Channel",
    "CircuitBreaker",
    "CircuitOpenError",
    "Client",
    "ClosedCandle",
    "ClosedError",
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
    "TIMEFRAMES",
    "Ticker",
    "Timeframe",
    "Trade",
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
