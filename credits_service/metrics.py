"""Prometheus metrics: HTTP requests by route template, and the domain's own counters.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes every worker write its values to files in that
directory (prometheus_client decides at import time), and /metrics sums them over all workers,
dead ones included, so a counter never goes back when a worker is replaced. Without it (tests,
`flask run`) the values live in this process's registry.

Labels are drawn from small fixed sets only: a route template, never a path with a client id in
it; a failure reason, never a key or its name.
"""

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry()
UNMATCHED_ROUTE = "unmatched"
# Any token is a valid HTTP method; labelling by whatever a client sends would let it make series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
AUTH_FAILURE_REASONS = ("missing", "unknown", "revoked", "expired")

HTTP_REQUESTS = Counter(
    "credits_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=REGISTRY
)
HTTP_DURATION = Histogram(
    "credits_http_request_duration_seconds", "Time to answer an HTTP request.", ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=REGISTRY,
)
CREDITS_GRANTED = Counter(
    "credits_granted_generations", "Generations added to monthly limits by committed grants.", registry=REGISTRY
)
GENERATIONS_CONSUMED = Counter(
    "credits_generations_consumed", "Generations consumed by committed consumptions.", registry=REGISTRY
)
QUOTA_REFUSALS = Counter(
    "credits_quota_refusals", "Consumptions refused with 402: over the monthly limit.", registry=REGISTRY
)
HOLDS_PLACED = Counter(
    "credits_held_generations", "Generations reserved by committed holds.", registry=REGISTRY
)
HOLDS_EXPIRED = Counter(
    "credits_holds_expired", "Lapsed holds the sweep marked expired.", registry=REGISTRY
)
AUTH_FAILURES = Counter(
    "credits_authentication_failures", "Requests refused with 401, by reason.", ["reason"], registry=REGISTRY
)
IDEMPOTENT_REPLAYS = Counter(
    "credits_idempotent_replays", "Requests answered with the stored answer of their Idempotency-Key.",
    registry=REGISTRY,
)
REPLICA_FALLBACKS = Counter(
    "credits_replica_fallbacks", "Reads meant for the replica served by the primary, by why: unavailable or lagging.",
    ["reason"], registry=REGISTRY,
)
IDEMPOTENCY_PURGED = Counter(
    "credits_idempotency_answers_purged", "Stored Idempotency-Key answers deleted after their retention.",
    registry=REGISTRY,
)


def credits_granted(amount: int) -> None:
    CREDITS_GRANTED.inc(amount)


def generations_consumed(count: int) -> None:
    GENERATIONS_CONSUMED.inc(count)


def quota_refused() -> None:
    QUOTA_REFUSALS.inc()


def hold_placed(count: int) -> None:
    HOLDS_PLACED.inc(count)


def holds_expired(count: int) -> None:
    if count:
        HOLDS_EXPIRED.inc(count)


def authentication_failed(reason: str) -> None:
    AUTH_FAILURES.labels(reason).inc()


def idempotent_replayed() -> None:
    IDEMPOTENT_REPLAYS.inc()


def replica_fallback(reason: str) -> None:
    REPLICA_FALLBACKS.labels(reason).inc()


def idempotency_answers_purged(count: int) -> None:
    if count:
        IDEMPOTENCY_PURGED.inc(count)


class _Families:
    """Metric families already read (this process's own, or the database's at scrape time), as a
    collector of a registry."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def webhook_families(stats) -> list:
    """The webhook deliveries' gauges, from services.webhooks.DeliveryStats."""
    deliveries = GaugeMetricFamily("credits_webhook_deliveries", "Webhook deliveries kept, by status.",
                                   labels=["status"])
    for status in ("pending", "succeeded", "failed"):
        deliveries.add_metric([status], stats.by_status.get(status, 0))
    return [
        deliveries,
        GaugeMetricFamily("credits_webhook_attempts", "Attempts made by the webhook deliveries kept.",
                          value=stats.attempts),
        GaugeMetricFamily("credits_webhook_oldest_pending_seconds",
                          "How long the oldest pending webhook delivery has waited (0: none pending).",
                          value=stats.oldest_pending_seconds),
    ]


def exposition(read_at_scrape: list | None = None) -> Response:
    """The Prometheus text format, summed over every worker when there are several, with the
    families read at scrape time."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_Families(list(REGISTRY.collect())))
    if read_at_scrape:
        registry.register(_Families(read_at_scrape))
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)


# The labelled children of the two HTTP metrics, by label values: labels() checks its values on
# every call, and the set of (method, route, status) a service answers with is small and fixed.
_http_children: dict[tuple[str, str, str], tuple] = {}


def _http_metrics(labels: tuple[str, str, str]) -> tuple:
    children = _http_children.get(labels)
    if children is None:
        children = _http_children.setdefault(labels, (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels)))
    return children


def init_app(app: Flask) -> None:
    """Count and time every request, labelled by the rule it matched."""

    # The request's start is the access log's clock (logs.register_access_log, registered first).
    @app.after_request
    def _observe(response):
        started = g.get("request_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
            method = request.method if request.method in METHODS else "other"
            requests, duration = _http_metrics((method, route, str(response.status_code)))
            requests.inc()
            duration.observe(time.perf_counter() - started)
        return response
