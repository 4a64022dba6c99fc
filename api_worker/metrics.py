"""Prometheus metrics: product counters from Redis, request latency per process.

The product counters (codes issued, redeemed, ...) live in one Redis hash
that every process, the bot's included, increments; each scrape reads it, so
any API process shows the totals of all. Request latency is per process; when
PROMETHEUS_MULTIPROC_DIR is set (several API processes on one socket), each
process writes its histogram there and every scrape sums all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from api_worker import context
from api_worker.logs import route_label
from shared.counters import METRICS
from shared.store import Unavailable

REQUEST_DURATION = Histogram(
    "tglogin_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status.",
    ("route", "method", "status"),
    # a redeem takes about a millisecond; the upper buckets catch Redis trouble
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

class _Scrape:
    """One scrape: this process's (or all processes') metrics and a Redis snapshot."""

    def __init__(self, local: Collector, counters: dict[str, int] | None) -> None:
        self._local = local
        self._counters = counters

    def collect(self) -> Iterable[Metric]:
        yield from self._local.collect()
        yield GaugeMetricFamily(
            "tglogin_redis_up",
            "1 when Redis answered this scrape, else 0 (and the product counters are absent).",
            value=0 if self._counters is None else 1,
        )
        if self._counters is None:
            return
        for field, (name, documentation) in METRICS.items():
            yield CounterMetricFamily(name, documentation, value=self._counters.get(field, 0))


def _local_collector() -> Collector:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def endpoint(request: Request) -> Response:
    try:
        counters: dict[str, int] | None = await context.store(request).counters()
    except Unavailable:
        counters = None
    body = generate_latest(_Scrape(_local_collector(), counters))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Timings:
    """Every HTTP request's duration, observed once (`api_worker.front.Front`)."""

    def __init__(self) -> None:
        # the histogram's series by (route, method, status), as `labels()` finds them
        # (at a third of a request's metrics cost, each time)
        self._series: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, scope: Scope, status: int, elapsed: float) -> None:
        method = scope["method"]
        key = (route_label(scope), method if method in _METHODS else "OTHER", int(status))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = REQUEST_DURATION.labels(*key[:2], str(key[2]))
        series.observe(elapsed)
