"""What is counted: a Spine's requests per method, which layer answered, upstream calls made
and saved, latency percentiles (pure: results' metadata in, a frozen snapshot out);"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .._client.client import ClientStatistics
from .result import ResultMeta

__all__ = ["Accounting", "SpineStatistics"]


class _Sends(Protocol):
    def statistics(self) -> ClientStatistics: ...


_LATENCY_SAMPLES = 2048


@dataclass(frozen=True, slots=True)
class SpineStatistics:
    """Hit counts per layer, upstream calls made and saved, latency percentiles (ms)."""

    requests: dict[str, int]  # per method
    answered_by: dict[str, int]  # memory / database / upstream / live / mixed
    upstream_calls: int
    upstream_calls_saved: int
    latency_ms: dict[str, dict[str, float]]  # method -> {"p50", "p99", "max"}
    memory_candles: int
    memory_series: int
    memory_bytes: int = 0  # candle windows and live state, as charged to the budget
    memory_limit_bytes: int = 0
    polled_series: int = 0  # candle series clients read by count (see Spine.polled)
    learned_series: int = 0  # of which polled on a rhythm and kept hot
    learned_hits: int = 0  # polls of learned series answered from memory
    learned_misses: int = 0  # ... that needed the store or upstream
    hot_closes_live: int = 0  # closes of hot windows taken from the trade stream
    hot_closes_fetched: int = 0  # ... read from the store or upstream (one page a market)
    hot_reads_waited: int = 0  # polls that waited for a close the keeper was about to hold
    hot_reads_waited_in_vain: int = 0  # ... and asked on without it (bound, failure, release)
    held_candles: int = 0  # fetched while the store had no room: in memory until written


class Accounting:
    """Counters since start, fed one ``ResultMeta`` per answered request."""

    def __init__(self) -> None:
        self._requests: Counter[str] = Counter()
        self._answered_by: Counter[str] = Counter()
        self._calls_made = 0
        self._calls_saved = 0
        self._latency: dict[str, deque[float]] = {}
        self._sent: Callable[[], int] | None = None

    def account(self, method: str, meta: ResultMeta) -> None:
        """Count one answer of ``method``."""
        self._requests[method] += 1
        self._answered_by[meta.source] += 1
        self._calls_made += meta.upstream_calls
        if meta.upstream_calls == 0:
            self._calls_saved += 1
        samples = self._latency.setdefault(method, deque(maxlen=_LATENCY_SAMPLES))
        samples.append(meta.elapsed_ms)

    def count_sent(self, client: _Sends, others: Callable[[], int]) -> None:
        """Take upstream calls from what ``client`` sent plus ``others()`` (warmup's clients
        for other exchanges), not from the answers' calls: every request counts, the
        clock-sync ticker, market lists and retries included."""
        self._sent = lambda: sum(client.statistics().sent.values()) + others()

    def call_made(self) -> None:
        """Count an upstream call made outside any answered request."""
        self._calls_made += 1

    def snapshot(
        self,
        *,
        memory_candles: int,
        memory_series: int,
        memory_bytes: int = 0,
        memory_limit_bytes: int = 0,
        upstream_calls: int | None = None,
    ) -> SpineStatistics:
        """The counters now; ``upstream_calls`` (every request the client really sent)
        replaces the sum of the answers' calls when given."""
        latency: dict[str, dict[str, float]] = {}
        for method, samples in self._latency.items():
            ordered = sorted(samples)
            latency[method] = {
                "p50": ordered[len(ordered) // 2],
                "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                "max": ordered[-1],
            }
        return SpineStatistics(
            requests=dict(self._requests),
            answered_by=dict(self._answered_by),
            upstream_calls=(
                upstream_calls
                if upstream_calls is not None
                else self._sent()
                if self._sent is not None
                else self._calls_made
            ),
            upstream_calls_saved=self._calls_saved,
            latency_ms=latency,
            memory_candles=memory_candles,
            memory_series=memory_series,
            memory_bytes=memory_bytes,
            memory_limit_bytes=memory_limit_bytes,
        )
