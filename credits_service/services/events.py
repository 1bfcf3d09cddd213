"""The event outbox: an event is written in the transaction of the change it describes.

A change that rolls back (a 402, a 409, a failed constraint, a killed worker) emits nothing; a
change that commits has its event, and one delivery for each enabled endpoint subscribed to it,
committed with it, for `flask webhooks deliver` to send however soon the process dies after.
The body is stored as sent, so every attempt signs the very same bytes.
"""

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from ..months import iso_utc

SUBSCRIBABLE = ("client.created", "client.deleted", "quota.updated", "credits.granted", "credits.voided",
                "usage.reset", "usage.threshold_reached", "hold.expired")
# Sent to one endpoint on an admin's request, whatever it subscribes to.
PING = "webhook.ping"


def emit(session: Session, event_type: str, data: dict[str, Any], now: datetime, *,
         endpoint_id: int | None = None) -> WebhookEvent | None:
    """Write the event and its deliveries in the session's transaction; None when no endpoint takes it."""
    query = select(WebhookEndpoint.id, WebhookEndpoint.events).where(WebhookEndpoint.enabled.is_(True))
    if endpoint_id is not None:
        query = query.where(WebhookEndpoint.id == endpoint_id)
    targets = [id_ for id_, events in session.execute(query)
               if endpoint_id is not None or "*" in events or event_type in events]
    if not targets:
        return None
    event = WebhookEvent(
        id=f"msg_{uuid.uuid4().hex}", type=event_type, client_id=data.get("clientId"), created_at=now,
        body=json.dumps({"type": event_type, "timestamp": iso_utc(now), "data": data}, separators=(",", ":")),
    )
    session.add(event)
    session.flush()  # the event's row before its deliveries', which refer to it
    session.add_all(WebhookDelivery(endpoint_id=target, event_id=event.id, status="pending", attempts=0,
                                    next_attempt_at=now, created_at=now) for target in targets)
    return event
