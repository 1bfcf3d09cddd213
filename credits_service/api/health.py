"""Health, readiness and metrics for the orchestrator and the dashboards: no key, no rate limit."""

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics, services
from ..auth import metrics_guard
from ..errors import NotReady
from ..extensions import limiter
from ..schemas.health import HealthSchema, NotReadySchema, ReadinessSchema
from . import Blueprint

blp = Blueprint("health", __name__, description="Liveness, readiness and Prometheus metrics.")
limiter.exempt(blp)


@blp.route("/healthz", methods=["GET"])
@blp.response(200, HealthSchema)
def healthz():
    """Liveness: the process answers. Touches no database."""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@blp.response(200, ReadinessSchema)
@blp.alt_response(503, schema=NotReadySchema, description="The database (or a rate-limit storage that must answer) does not, within about a second.")
def readyz():
    """Readiness: the database answers within about a second; the rate-limit storage is reported."""
    readiness = current_app.extensions["health_checks"].readiness()
    if not readiness.ready:
        raise NotReady("Not ready: see checks for what does not answer.",
                       checks=ReadinessSchema().dump(readiness)["checks"])
    return readiness


@blp.route("/metrics", methods=["GET"])
@metrics_guard
@blp.doc(responses={
    "200": {
        "description": "Prometheus text exposition format, summed over every worker.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    "401": "UNAUTHORIZED",
})
def metrics_text():
    """Request counts and latencies by route template, the domain counters, and the webhook
    deliveries' state. Open unless METRICS_TOKEN is set; then it needs that token as a bearer token."""
    try:
        from_database = metrics.webhook_families(services.webhooks().delivery_stats())
    except SQLAlchemyError:  # metrics are how an outage is seen: they answer without the database
        from_database = []
    return metrics.exposition(from_database)
