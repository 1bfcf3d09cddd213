"""Webhook endpoints: admins register where events go, and see how their deliveries fare."""

from .. import services
from ..auth import admin_read, admin_write
from ..schemas.common import PageQuerySchema
from ..schemas.webhooks import (
    DeliveryConflictSchema,
    DeliveryPageSchema,
    DeliveryQuerySchema,
    DeliverySchema,
    WebhookCreateSchema,
    WebhookPageSchema,
    WebhookSchema,
    WebhookUpdateSchema,
    WebhookWithSecretSchema,
)
from . import Blueprint, actor, path_id

blp = Blueprint("webhooks", __name__, description="Signed events for the platform, delivered at least once.")

ID = path_id("endpoint_id")


@blp.route("", methods=["POST"])
@admin_write
@blp.arguments(WebhookCreateSchema)
@blp.response(201, WebhookWithSecretSchema)
def create_webhook(body):
    """Register an endpoint for the event types given; its secret is in this answer only."""
    return services.webhooks().create(actor(), body["url"], body["events"], body.get("description"))


@blp.route("", methods=["GET"])
@admin_read
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, WebhookPageSchema)
def list_webhooks(query):
    """The endpoints, oldest first, without their secrets."""
    return services.webhooks().list(query["limit"], query["offset"])


@blp.route(f"/{ID}", methods=["GET"])
@admin_read
@blp.response(200, WebhookSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_webhook(endpoint_id):
    """One endpoint, without its secret."""
    return services.webhooks().get(endpoint_id)


@blp.route(f"/{ID}", methods=["PATCH"])
@admin_write
@blp.arguments(WebhookUpdateSchema)
@blp.response(200, WebhookSchema)
@blp.alt_response(404, response="NOT_FOUND")
def update_webhook(changes, endpoint_id):
    """Change the url, events, description or enabled; disabled, its deliveries wait."""
    return services.webhooks().update(actor(), endpoint_id, changes)


@blp.route(f"/{ID}", methods=["DELETE"])
@admin_write
@blp.response(204)
@blp.alt_response(404, response="NOT_FOUND")
def delete_webhook(endpoint_id):
    """Delete the endpoint; its pending deliveries are dropped."""
    services.webhooks().delete(actor(), endpoint_id)


@blp.route(f"/{ID}/rotate-secret", methods=["POST"])
@admin_write
@blp.response(200, WebhookWithSecretSchema)
@blp.alt_response(404, response="NOT_FOUND")
def rotate_webhook_secret(endpoint_id):
    """A new secret, in this answer only; for 24 hours deliveries are signed with it and the old one."""
    return services.webhooks().rotate_secret(actor(), endpoint_id)


@blp.route(f"/{ID}/ping", methods=["POST"])
@admin_write
@blp.response(202, DeliverySchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT", description="The endpoint is disabled.")
def ping_webhook(endpoint_id):
    """A webhook.ping event to this endpoint alone; the worker delivers it."""
    return services.webhooks().ping(endpoint_id)


@blp.route(f"/{ID}/deliveries", methods=["GET"])
@admin_read
@blp.arguments(DeliveryQuerySchema, location="query")
@blp.response(200, DeliveryPageSchema)
@blp.alt_response(404, response="NOT_FOUND")
def list_deliveries(query, endpoint_id):
    """The endpoint's deliveries, newest first, optionally of one status."""
    return services.webhooks().deliveries(endpoint_id, query["limit"], query["offset"], query.get("status"))


@blp.route(f"/{ID}/deliveries/{path_id('delivery_id')}/retry", methods=["POST"])
@admin_write
@blp.response(202, DeliverySchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, schema=DeliveryConflictSchema, description="The delivery is not failed.")
def retry_delivery(endpoint_id, delivery_id):
    """Attempt a failed delivery once more, now."""
    return services.webhooks().retry(endpoint_id, delivery_id)
