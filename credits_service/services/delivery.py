"""Delivering the outbox: `flask webhooks deliver` sends each due delivery, signed to the Standard
Webhooks specification, and records what came of it.

A worker claims due deliveries with a lease (PostgreSQL: FOR UPDATE SKIP LOCKED, so each goes to
one worker of several; SQLite: one worker), sends each outside any transaction, then records
the outcome if its lease still holds. A worker that dies between sending and recording leaves
the delivery to be claimed again when the lease runs out, and sent again with the same
webhook-id: delivery is at least once, and receivers dedupe by that id.

Retries follow WEBHOOK_RETRY_SCHEDULE after a non-2xx answer, a timeout or a refused connection;
a Retry-After on 429 or 503 is respected up to the schedule's longest wait; 410 Gone disables the
endpoint. Redirects are not followed: a 3xx is a failed attempt.
"""

import base64
import hashlib
import hmac
import http.client
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ..audit.trail import WEBHOOKS_CHAIN, AuditTrail
from ..models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from ..transactions import write_transaction

log = logging.getLogger("credits_service.webhooks")
# The service's own act, as the audit log names it, when a 410 disables an endpoint.
DELIVERY_ACTOR = "webhook-delivery"
USER_AGENT = "credits-service-webhooks"
# What is kept of a receiver's answer for the deliveries listing.
ERROR_MAX = 500


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"> with the secret's bytes (whsec_ + base64)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.digest(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    event_id: str
    body: str
    attempts: int
    last_attempt: bool
    leased_until: datetime


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, headers: dict[str, str], body: bytes, timeout: float) -> Outcome:
    """One attempt: POST, no redirects followed, the answer's status (and Retry-After) or what failed."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(65536)
        return Outcome(response.status, None if 200 <= response.status < 300 else f"HTTP {response.status}",
                       _retry_after(response.getheader("Retry-After")))
    except TimeoutError:
        return Outcome(None, f"timed out after {timeout:g} s")
    except OSError as error:  # refused, unreachable, reset, TLS
        return Outcome(None, f"{type(error).__name__}: {error}"[:ERROR_MAX])
    except http.client.HTTPException as error:
        return Outcome(None, f"bad HTTP answer: {type(error).__name__}"[:ERROR_MAX])
    finally:
        connection.close()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


class Deliverer:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail,
                 schedule: tuple[int, ...], timeout: float, send: Callable[..., Outcome] = post):
        self.session = session
        self.clock = clock
        self.audit = audit
        self.schedule = schedule
        self.timeout = timeout
        self.send = send

    def deliver_due(self, batch: int = 20, stop: Callable[[], bool] = lambda: False) -> int:
        """Claim up to batch due deliveries and attempt each (stopping between attempts when told);
        returns how many were attempted."""
        claims = self._claim(batch)
        attempted = 0
        gone: set[int] = set()  # endpoints that answered 410 in this batch: their claims were failed
        for claim in claims:
            if stop():
                break  # the rest of the claims lapse with their leases and are claimed again
            if claim.endpoint_id in gone:
                continue
            outcome = self._attempt(claim)
            self._record(claim, outcome)
            attempted += 1
            if outcome.status_code == 410:
                gone.add(claim.endpoint_id)
        return attempted

    def _claim(self, batch: int) -> list[Claim]:
        now = self.clock()
        lease = now + timedelta(seconds=self.timeout + 5)
        due = (select(WebhookDelivery.id).join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
               .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                      or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until <= now),
                      WebhookEndpoint.enabled.is_(True))
               .order_by(WebhookDelivery.next_attempt_at).limit(batch))
        with write_transaction(self.session):
            if self.session.get_bind().dialect.name == "postgresql":
                due = due.with_for_update(of=WebhookDelivery, skip_locked=True)
            ids = self.session.scalars(due).all()
            if not ids:
                return []
            self.session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
                                 .values(leased_until=lease))
            rows = self.session.execute(
                select(WebhookDelivery, WebhookEndpoint, WebhookEvent)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.id.in_(ids)).order_by(WebhookDelivery.next_attempt_at)).all()
        claims = []
        for delivery, endpoint, event in rows:
            keys = (endpoint.secret,)
            if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
                keys += (endpoint.previous_secret,)
            claims.append(Claim(delivery.id, endpoint.id, endpoint.url, keys, event.id, event.body,
                                delivery.attempts, delivery.last_attempt, lease))
        return claims

    def _attempt(self, claim: Claim) -> Outcome:
        body = claim.body.encode()
        timestamp = int(time.time())  # the receiver checks it against its own clock: wall time, not the app's
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signature(key, claim.event_id, timestamp, body) for key in claim.secrets),
        }
        return self.send(claim.url, headers, body, self.timeout)

    def _record(self, claim: Claim, outcome: Outcome) -> None:
        now = self.clock()
        attempts = claim.attempts + 1
        values = {"attempts": attempts, "last_status_code": outcome.status_code, "last_error": outcome.error,
                  "leased_until": None}
        gone = outcome.status_code == 410
        if outcome.succeeded:
            values.update(status="succeeded", delivered_at=now, next_attempt_at=None)
        elif gone or claim.last_attempt or attempts > len(self.schedule):
            values.update(status="failed", next_attempt_at=None)
        else:
            wait = self.schedule[attempts - 1]
            if outcome.status_code in (429, 503) and outcome.retry_after is not None:
                wait = max(wait, min(outcome.retry_after, max(self.schedule)))
            values.update(next_attempt_at=now + timedelta(seconds=wait))
        with write_transaction(self.session):
            recorded = self.session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == claim.delivery_id,
                                              WebhookDelivery.leased_until == claim.leased_until)
                .values(last_attempt=False, **values)).rowcount
            if recorded and gone:
                self._disable(claim.endpoint_id, now)
        log.info("webhook delivery %d to endpoint %d: %s", claim.delivery_id, claim.endpoint_id,
                 outcome.error or outcome.status_code,
                 extra={"event": "webhook_attempt", "deliveryId": claim.delivery_id, "endpointId": claim.endpoint_id,
                        "statusCode": outcome.status_code, "succeeded": outcome.succeeded, "recorded": bool(recorded)})

    def _disable(self, endpoint_id: int, now: datetime) -> None:
        """410 Gone: the receiver says the endpoint is no more. Disabled, its waiting deliveries failed,
        audited as the service's act."""
        endpoint = self.session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return
        endpoint.enabled, endpoint.updated_at = False, now
        self.session.execute(update(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id,
                                                           WebhookDelivery.status == "pending")
                             .values(status="failed", last_error="endpoint disabled: it answered 410 Gone",
                                     next_attempt_at=None, leased_until=None))
        self.audit.append_to_system_chain(WEBHOOKS_CHAIN, DELIVERY_ACTOR, "webhook_disabled",
                                          {"endpointId": endpoint_id, "url": endpoint.url, "reason": "410 Gone"},
                                          {"enabled": True}, {"enabled": False}, now)
