"""The circuit breaker as a pure state machine on a fake clock."""

from __future__ import annotations

import pytest

from marketspine._client.circuit import CircuitBreaker
from marketspine.errors import CircuitOpenError, InvalidRequestError, UpstreamError


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.record_failure()


def test_opens_after_n_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cool_down=10.0, clock=clock)
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.statistics().state == "open"
    clock.now += 4.0
    with pytest.raises(CircuitOpenError) as caught:
        breaker.before_call()
    assert caught.value.retry_after == pytest.approx(6.0)
    assert isinstance(caught.value, UpstreamError)  # callers may catch the broader class
    assert "open after 3 consecutive failures" in str(caught.value)
    stats = breaker.statistics()
    assert (stats.state, stats.opened, stats.rejected) == ("open", 1, 1)


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=Clock())
    fail(breaker, 2)
    breaker.before_call()
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state == "closed"


def test_half_open_lets_exactly_one_probe_through_and_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=5.0, clock=clock)
    fail(breaker, 1)
    clock.now += 5.0
    assert breaker.state == "half_open"
    breaker.before_call()  # the probe
    for _ in range(3):
        with pytest.raises(CircuitOpenError, match="probe is still out"):
            breaker.before_call()
    breaker.record_success()
    assert breaker.statistics().state == "closed"
    breaker.before_call()
    breaker.before_call()


def test_a_failed_probe_reopens_for_a_full_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cool_down=5.0, clock=clock)
    fail(breaker, 2)
    clock.now += 5.0
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now += 0.1
    breaker.before_call()
    assert breaker.statistics().opened == 2


def test_an_abandoned_probe_lets_another_probe_go() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=1.0, clock=clock)
    fail(breaker, 1)
    clock.now += 1.0
    breaker.before_call()
    breaker.record_abandoned()
    breaker.before_call()  # a new probe, not a rejection
    assert breaker.statistics().rejected == 0


def test_late_failures_do_not_extend_the_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cool_down=10.0, clock=clock)
    for _ in range(4):
        breaker.before_call()  # four calls out at once
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 8.0
    breaker.record_failure()  # stragglers answer late
    breaker.record_failure()
    clock.now += 2.0
    assert breaker.state == "half_open"
    assert breaker.statistics().opened == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidRequestError):
        CircuitBreaker(failure_threshold=0)


def test_one_requests_failures_count_once_until_upstream_answers() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cool_down=10.0, clock=clock)
    for _ in range(10):  # a 5xx reproducible for one request: its own failure
        breaker.before_call()
        breaker.record_failure(("/v1/trades/ticks", (("cursor", "7"),)))
    assert breaker.statistics() == breaker.statistics().__class__("closed", 1, 0, 0, 0.0)
    breaker.before_call()
    breaker.record_failure(("/v1/ticker", (("markets", "KRW-BTC"),)))
    breaker.before_call()
    breaker.record_failure()  # no request to blame (a timeout): counts every time
    assert breaker.state == "open"  # three failures, two of them different requests
    clock.now += 10.0
    breaker.before_call()  # the probe: the same request failing again reopens
    breaker.record_failure(("/v1/trades/ticks", (("cursor", "7"),)))
    assert breaker.statistics().opened == 2
    clock.now += 10.0
    breaker.before_call()
    breaker.record_success()
    fail(breaker, 2)
    breaker.before_call()
    breaker.record_failure(("/v1/trades/ticks", (("cursor", "7"),)))  # counted anew
    assert breaker.state == "open"
