"""Webhook endpoints: where events go, administered by admins and audited without their secrets.

Acts on endpoints belong to no client, so they go in an audit chain of their own,
WEBHOOKS_CHAIN, whose id no client id can take.
"""

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..audit.trail import WEBHOOKS_CHAIN, AuditTrail
from ..errors import Conflict, NotFound
from ..logs import log_admin_action
from ..models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from ..transactions import batches_alone, write_transaction
from .events import PING, emit
from .paging import page_of
from .results import DeliveryView, Page, WebhookView

# Deliveries carry signatures with the old secret too for this long after a rotation.
OLD_SECRET_KEPT = timedelta(hours=24)
SECRET_BYTES = 32
# pg_try_advisory_xact_lock key held while purging: a fixed 64-bit number no other code uses.
PURGE_LOCK = 0x77686B5F70757267  # "whk_purg"
PURGE_BATCH = 1000


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _view(endpoint: WebhookEndpoint, secret: str | None = None) -> WebhookView:
    return WebhookView(endpoint.id, endpoint.url, endpoint.events, endpoint.description, endpoint.enabled,
                       endpoint.created_at, endpoint.updated_at, secret)


def _described(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """What the audit log records of an endpoint: never its secret."""
    return {"endpointId": endpoint.id, "url": endpoint.url, "events": endpoint.events,
            "description": endpoint.description, "enabled": endpoint.enabled}


def _with_event_type(endpoint_id: int):
    """The endpoint's deliveries, each with its event's type."""
    return (select(WebhookDelivery, WebhookEvent.type).join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.endpoint_id == endpoint_id))


def delivery_view(delivery: WebhookDelivery, event_type: str) -> DeliveryView:
    return DeliveryView(delivery.id, delivery.event_id, event_type, delivery.status, delivery.attempts,
                        delivery.last_status_code, delivery.last_error, delivery.next_attempt_at,
                        delivery.created_at, delivery.delivered_at)


class WebhooksService:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail):
        self.session = session
        self.clock = clock
        self.audit = audit

    def _endpoint(self, endpoint_id: int) -> WebhookEndpoint:
        endpoint = self.session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
        if endpoint is None:
            raise NotFound(f"There is no webhook endpoint with id {endpoint_id}.")
        return endpoint

    def _audited(self, actor: str, action: str, before: dict | None, after: dict | None, now: datetime) -> None:
        self.audit.append_to_system_chain(WEBHOOKS_CHAIN, actor, action, after or before, before, after, now)

    def create(self, actor: str, url: str, events: list[str], description: str | None = None) -> WebhookView:
        now = self.clock()
        secret = new_secret()
        with write_transaction(self.session):
            endpoint = WebhookEndpoint(url=url, events=events, description=description, enabled=True, secret=secret,
                                       created_at=now, updated_at=now)
            self.session.add(endpoint)
            self.session.flush()
            self._audited(actor, "webhook_created", None, _described(endpoint), now)
        log_admin_action(actor, "webhook_created", WEBHOOKS_CHAIN)
        return _view(endpoint, secret)

    def list(self, limit: int, offset: int) -> Page:
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
        return page_of(self.session, query, limit, offset, lambda row: _view(row[0]))

    def get(self, endpoint_id: int) -> WebhookView:
        return _view(self._endpoint(endpoint_id))

    def update(self, actor: str, endpoint_id: int, changes: dict[str, Any]) -> WebhookView:
        """Change url, events, description and/or enabled; a disabled endpoint's deliveries wait."""
        now = self.clock()
        with write_transaction(self.session):
            endpoint = self._endpoint(endpoint_id)
            before = _described(endpoint)
            for name, value in changes.items():
                setattr(endpoint, name, value)
            endpoint.updated_at = now
            self.session.flush()
            self._audited(actor, "webhook_updated", before, _described(endpoint), now)
        log_admin_action(actor, "webhook_updated", WEBHOOKS_CHAIN)
        return _view(endpoint)

    def delete(self, actor: str, endpoint_id: int) -> None:
        """Delete the endpoint; its pending deliveries (and their history) go with it."""
        now = self.clock()
        with write_transaction(self.session):
            endpoint = self._endpoint(endpoint_id)
            self._audited(actor, "webhook_deleted", _described(endpoint), None, now)
            self.session.delete(endpoint)
        log_admin_action(actor, "webhook_deleted", WEBHOOKS_CHAIN)

    def rotate_secret(self, actor: str, endpoint_id: int) -> WebhookView:
        """A new secret, shown once; for OLD_SECRET_KEPT deliveries are signed with both."""
        now = self.clock()
        secret = new_secret()
        with write_transaction(self.session):
            endpoint = self._endpoint(endpoint_id)
            endpoint.previous_secret, endpoint.previous_secret_until = endpoint.secret, now + OLD_SECRET_KEPT
            endpoint.secret = secret
            endpoint.updated_at = now
            self._audited(actor, "webhook_secret_rotated", None,
                          {**_described(endpoint), "previousSecretUntil": now.isoformat()}, now)
        log_admin_action(actor, "webhook_secret_rotated", WEBHOOKS_CHAIN)
        return _view(endpoint, secret)

    def ping(self, endpoint_id: int) -> DeliveryView:
        """A webhook.ping event to this endpoint alone, whatever it subscribes to."""
        now = self.clock()
        with write_transaction(self.session):
            endpoint = self._endpoint(endpoint_id)
            if not endpoint.enabled:
                raise Conflict(f"Webhook endpoint {endpoint_id} is disabled: enable it to ping it.")
            event = emit(self.session, PING, {"endpointId": endpoint_id}, now, endpoint_id=endpoint_id)
            self.session.flush()
            delivery = self.session.scalar(select(WebhookDelivery).where(WebhookDelivery.event_id == event.id))
        return delivery_view(delivery, PING)

    def deliveries(self, endpoint_id: int, limit: int, offset: int, status: str | None = None) -> Page:
        """The endpoint's deliveries, newest first."""
        self._endpoint(endpoint_id)
        query = _with_event_type(endpoint_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        return page_of(self.session, query.order_by(WebhookDelivery.id.desc()), limit, offset,
                       lambda row: delivery_view(row[0], row[1]))

    def retry(self, endpoint_id: int, delivery_id: int) -> DeliveryView:
        """A failed delivery is attempted once more, now."""
        now = self.clock()
        with write_transaction(self.session):
            self._endpoint(endpoint_id)
            row = self.session.execute(_with_event_type(endpoint_id).where(WebhookDelivery.id == delivery_id)
                                       .with_for_update(of=WebhookDelivery)).first()
            if row is None:
                raise NotFound(f"Webhook endpoint {endpoint_id} has no delivery with id {delivery_id}.")
            delivery, event_type = row
            if delivery.status != "failed":
                raise Conflict(f"Delivery {delivery_id} is {delivery.status}: only a failed delivery is retried.",
                               status=delivery.status)
            delivery.status, delivery.next_attempt_at, delivery.last_attempt = "pending", now, True
            delivery.leased_until = None
        return delivery_view(delivery, event_type)

    def purge(self, retention: timedelta, batch: int = PURGE_BATCH) -> int:
        """Delete ended (succeeded or failed) deliveries made longer than retention ago, and the events
        left with none, batch rows a transaction; returns how many deliveries.

        Like the Idempotency-Key purge: short transactions, and on PostgreSQL one instance at a time
        (the others find the advisory lock taken and leave the work to it)."""
        cutoff = self.clock() - retention
        purged = 0
        for deliveries, events in batches_alone(self.session, PURGE_LOCK, lambda: self._purge_batch(cutoff, batch)):
            purged += deliveries
            if deliveries < batch and events < batch:
                break
        return purged

    def _purge_batch(self, cutoff: datetime, batch: int) -> tuple[int, int]:
        """In the caller's transaction: up to batch ended deliveries and batch orphaned events deleted."""
        ids = self.session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.status != "pending", WebhookDelivery.created_at <= cutoff).limit(batch)).all()
        if ids:
            self.session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
        orphans = self.session.scalars(select(WebhookEvent.id).where(
            WebhookEvent.created_at <= cutoff,
            ~select(WebhookDelivery.id).where(WebhookDelivery.event_id == WebhookEvent.id).exists(),
        ).limit(batch)).all()
        if orphans:
            self.session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(orphans)))
        return len(ids), len(orphans)

    def delivery_stats(self) -> "DeliveryStats":
        """Deliveries by status, their attempts, and how long the oldest pending one has waited:
        read from the outbox, so every worker's work counts, whichever process sent it."""
        by_status = dict(self.session.execute(
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all())
        attempts = self.session.scalar(select(func.coalesce(func.sum(WebhookDelivery.attempts), 0)))
        oldest = self.session.scalar(select(func.min(WebhookDelivery.created_at)).where(
            WebhookDelivery.status == "pending"))
        waited = (self.clock() - oldest).total_seconds() if oldest else 0.0
        return DeliveryStats(by_status, attempts, max(waited, 0.0))


@dataclass(frozen=True)
class DeliveryStats:
    by_status: dict[str, int]
    attempts: int
    oldest_pending_seconds: float
