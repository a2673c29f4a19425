"""``serve``'s Prometheus metrics (``marketspine_`` prefix, base units, ``_total`` counters).

Upstream requests are counted where they leave: an httpx transport wrapped around the
Spine's, which sees every request and status (429s and 418s included, retries too). The
same transport counts the calls made on behalf of the current downstream request (a
context variable), which is how ``X-Marketspine-Source`` tells a cached answer from a
fetched one. Budget, WebSocket and warmup figures are read when Prometheus scrapes, as are
the Spine's (``spine_figures``: breaker, memory budget, live stream). The alert and recording
rules over these names, and a Grafana dashboard, are in ``docs/monitoring/``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from .._budget.local import group_of
from .._client.connections import TransportMaker, Transports, upstream_transport
from ..errors import InvalidRequestError

if TYPE_CHECKING:
    from .._spine.spine import Spine

__all__ = ["CONTENT_TYPE", "CallCount", "ServeMetrics", "counter", "gauge", "spine_figures"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class CallCount:
    """Upstream requests made on behalf of one downstream request."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


_current: contextvars.ContextVar[CallCount | None] = contextvars.ContextVar(
    "marketspine_serve_calls", default=None
)


class _CountingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: ServeMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        calls = _current.get()
        if calls is not None:
            calls.count += 1
        try:
            group = group_of(request.url.path)
        except InvalidRequestError:
            group = "other"
        try:
            response = await self._inner.handle_async_request(request)
        except Exception:
            self._metrics.upstream(group, "error")
            raise
        self._metrics.upstream(group, str(response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _LiveFigures(Collector):
    """Figures read at scrape time from the objects that own them."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()


class ServeMetrics:
    """One registry per service (tests run several services in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._upstream = Counter(
            "marketspine_upstream_requests",
            "Requests sent upstream, by rate-limit group and HTTP status (error: no answer).",
            ["group", "status"],
            registry=r,
        )
        self._rate_limited = Counter(
            "marketspine_upstream_rate_limited", "429 answers from upstream.", registry=r
        )
        self._banned = Counter(
            "marketspine_upstream_banned", "418 answers from upstream.", registry=r
        )
        self._answers = Counter(
            "marketspine_answers",
            "Answers by each layer that contributed (memory, database, live, upstream).",
            ["layer"],
            registry=r,
        )
        self._requests = Counter(
            "marketspine_http_requests",
            "Downstream HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self._latency = Histogram(
            "marketspine_http_request_duration_seconds",
            "Downstream request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._throttled = Counter(
            "marketspine_downstream_throttled",
            "Downstream requests answered 429 after waiting their turn too long.",
            registry=r,
        )
        self.warmup_success = Gauge(
            "marketspine_warmup_success", "1 if the last warmup succeeded, else 0.", registry=r
        )
        self.warmup_duration = Gauge(
            "marketspine_warmup_duration_seconds", "Duration of the last warmup.", registry=r
        )
        self.warmups = Counter(
            "marketspine_warmups", "Warmups run, by result.", ["result"], registry=r
        )
        self.warmup_last_success = Gauge(
            "marketspine_warmup_last_success_timestamp_seconds",
            "Wall time (Unix seconds) the last successful warmup finished; 0: none yet.",
            registry=r,
        )
        self._cache = Counter(
            "marketspine_cache_requests",
            "Answered requests by result: hit (no upstream request needed) or miss.",
            ["result"],
            registry=r,
        )
        self._live: list[Callable[[], Iterable[Metric]]] = []
        r.register(_LiveFigures(self._read_live))

    # -- upstream ----------------------------------------------------------------------------

    def transport(self, inner: Transports) -> httpx.AsyncBaseTransport | TransportMaker:
        """``inner`` (a transport, or a function making one for each connection pool;
        default: the client's own) with every request counted."""
        if isinstance(inner, httpx.AsyncBaseTransport):
            return _CountingTransport(inner, self)
        make = inner or upstream_transport
        return lambda: _CountingTransport(make(), self)

    def upstream(self, group: str, status: str) -> None:
        self._upstream.labels(group, status).inc()
        if status == "429":
            self._rate_limited.inc()
        elif status == "418":
            self._banned.inc()

    @staticmethod
    @contextlib.contextmanager
    def calls() -> Iterator[CallCount]:
        """Count the upstream requests made inside this block (and tasks it starts)."""
        count = CallCount()
        token = _current.set(count)
        try:
            yield count
        finally:
            _current.reset(token)

    # -- downstream ----------------------------------------------------------------------------

    def answered(self, layer: str) -> None:
        self._child(self._answers, layer).inc()

    def cache_lookup(self, layers: Iterable[str]) -> None:
        """One answered request made of ``layers``: a hit unless upstream was one of them."""
        self._child(self._cache, "miss" if "upstream" in layers else "hit").inc()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self._child(self._requests, route, str(status)).inc()
        self._child(self._latency, route).observe(seconds)

    def kept_answer(self, route: str) -> Callable[[float], None]:
        """What one answer of a kept page on ``route`` counts: ``answered("memory")``, a
        cache hit and ``observe_request(route, 200, seconds)``, with every label looked up
        now rather than at each answer (the fast path of polled pages)."""
        layer = self._child(self._answers, "memory").inc
        hit = self._child(self._cache, "hit").inc
        served = self._child(self._requests, route, "200").inc
        latency = self._child(self._latency, route).observe

        def count(seconds: float) -> None:
            layer()
            hit()
            served()
            latency(seconds)

        return count

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: prometheus_client's own lookup takes
        a lock and checks every label each time, a good part of a cached answer's cost.
        The label sets are few (routes, statuses, layers)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def downstream_throttled(self) -> None:
        self._throttled.inc()

    # -- read at scrape time --------------------------------------------------------------------

    def add_live(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Add figures read at every scrape (budget, WebSocket gateway ...)."""
        self._live.append(read)

    def _read_live(self) -> Iterable[Metric]:
        for read in self._live:
            yield from read()

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)


def gauge(name: str, doc: str, values: dict[tuple[str, ...], float], labels: list[str]) -> Any:
    """A gauge family built at scrape time."""
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def counter(name: str, doc: str, value: float) -> Any:
    """A counter read at scrape time (``name`` without ``_total``; the family adds it)."""
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def spine_figures(spine: Spine) -> Iterator[Metric]:
    """The Spine's figures at scrape time: the upstream breaker, attempts and connections
    given up on, the memory budget and the live stream (frame ages per kind watched,
    connection, reconnects, events dropped)."""
    client = spine.client.statistics()
    breaker = client.breaker
    yield gauge(
        "marketspine_upstream_circuit_open",
        "1 while the upstream breaker is open or probing (half-open), else 0.",
        {(): 0.0 if breaker.state == "closed" else 1.0},
        [],
    )
    yield counter(
        "marketspine_upstream_circuit_opened", "Times the breaker opened.", breaker.opened
    )
    yield counter(
        "marketspine_upstream_circuit_rejected",
        "Upstream calls refused while the breaker was open.",
        breaker.rejected,
    )
    yield counter(
        "marketspine_upstream_timed_out",
        "Upstream attempts given up on, hung or too slow (each retried while attempts last).",
        client.timed_out,
    )
    yield counter(
        "marketspine_upstream_connections_retired",
        "HTTP/2 connections to upstream left for a new one after a request on them was "
        "given up on (httpcore leaves such a stream open).",
        client.connections_retired,
    )
    stats = spine.statistics()
    yield gauge(
        "marketspine_memory_used_bytes",
        "Bytes of candle windows and live state charged to the memory budget.",
        {(): float(stats.memory_bytes)},
        [],
    )
    yield gauge(
        "marketspine_memory_limit_bytes",
        "The memory budget's limit for held data.",
        {(): float(stats.memory_limit_bytes)},
        [],
    )
    yield gauge(
        "marketspine_store_held_candles",
        "Candles fetched while the candle database had no room (a full disk), held in "
        "memory and answered from until a write finds room.",
        {(): float(stats.held_candles)},
        [],
    )
    yield gauge(
        "marketspine_polled_series",
        "Candle series clients poll by count; learned ones are kept hot as candles close.",
        {("false",): float(stats.polled_series - stats.learned_series),
         ("true",): float(stats.learned_series)},
        ["learned"],
    )  # fmt: skip
    yield counter(
        "marketspine_learned_poll_hits",
        "Polls of learned series answered from memory.",
        stats.learned_hits,
    )
    yield counter(
        "marketspine_learned_poll_misses",
        "Polls of learned series that needed the store or upstream.",
        stats.learned_misses,
    )
    closes = CounterMetricFamily(
        "marketspine_hot_closes",
        "Closes of hot (preloaded or learned) windows put in memory, by where the candle "
        "came from: the trade stream (live) or a read of the store or upstream (fetched).",
        labels=["source"],
    )
    closes.add_metric(["live"], stats.hot_closes_live)
    closes.add_metric(["fetched"], stats.hot_closes_fetched)
    yield closes
    yield counter(
        "marketspine_hot_reads_waited",
        "Polls of a hot series that landed after a close and waited (at most 0.5 s) for the "
        "keeper to put it in memory instead of asking upstream.",
        stats.hot_reads_waited,
    )
    yield counter(
        "marketspine_hot_reads_waited_in_vain",
        "Of those, polls that went on without the close (the bound passed, the keeper's "
        "attempt failed, or the series was released).",
        stats.hot_reads_waited_in_vain,
    )
    live = spine.live_statistics()
    yield gauge(
        "marketspine_live_frame_age_seconds",
        "Seconds since the upstream WebSocket's last frame, per kind watched.",
        {} if live is None else {(kind,): age for kind, age in live.last_frame_age_s.items()},
        ["kind"],
    )
    yield gauge(
        "marketspine_live_connected",
        "1 while the upstream WebSocket is connected, else 0.",
        {(): 1.0 if live is not None and live.connected else 0.0},
        [],
    )
    yield counter(
        "marketspine_live_reconnects",
        "Upstream WebSocket connections opened after the first (drops recovered).",
        0 if live is None else live.reconnects,
    )
    yield counter(
        "marketspine_live_dropped_events",
        "Live events dropped because a listener's queue was full.",
        0 if live is None else sum(live.dropped_per_listener),
    )
