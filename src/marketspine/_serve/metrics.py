"""``serve``'s Prometheus metrics (``marketspine_`` prefix, base units, ``_total`` counters).

Upstream requests are counted where they leave: an httpx transport wrapped around the
Spine's, which sees every request and status (429s and 418s included, retries too). The
same transport counts the calls made on behalf of the current downstream request (a
context variable), which is how ``X-Marketspine-Source`` tells a cached answer from a
fetched one. Budget, WebSocket and warmup figures are read when Prometheus scrapes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from .._budget.local import group_of
from ..errors import InvalidRequestError

__all__ = ["CONTENT_TYPE", "CallCount", "ServeMetrics", "counter", "gauge"]

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
        self._live: list[Callable[[], Iterable[Metric]]] = []
        r.register(_LiveFigures(self._read_live))

    # -- upstream ----------------------------------------------------------------------------

    def transport(self, inner: httpx.AsyncBaseTransport | None) -> httpx.AsyncBaseTransport:
        """``inner`` (default: a plain HTTP transport) with every request counted."""
        return _CountingTransport(inner or httpx.AsyncHTTPTransport(), self)

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
        self._answers.labels(layer).inc()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self._requests.labels(route, str(status)).inc()
        self._latency.labels(route).observe(seconds)

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
