"""The services, built for the current app: what views, CLI commands and background jobs call.

Each service takes the request's (or command's) ORM session, the app's clock and, when it
writes admin changes, the audit trail; it owns its transactions (credits_service/transactions.py).
Built with replica=True, a service reads from the read replica while it is fresh
(credits_service/replica.py): only for reads that may be seconds old and write nothing.
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from flask import current_app
from limits import parse
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..audit.reader import AuditLogReader
from ..audit.trail import AuditTrail
from ..audit.verify import AuditVerifier
from ..extensions import db, limiter
from .api_keys import ApiKeys
from .clients import ClientsService
from .consumption import ConsumptionService
from .delivery import Deliverer
from .grants import GrantsService
from .holds import HoldsService
from .idempotency import IdempotencyKeys
from .quotas import QuotasService
from .refunds import RefundsService
from .storage import StorageService
from .webhooks import WebhooksService

log = logging.getLogger("credits_service.idempotency")


def _clock():
    return current_app.config["CLOCK"]


def _session(replica: bool = False) -> Session:
    if replica:
        return current_app.extensions["read_replica"].session() or db.session()
    return db.session()


def read_engine() -> Engine:
    """For replica reads that outlive the request (the streamed export): the replica's engine
    while it is fresh, else the primary's."""
    return current_app.extensions["read_replica"].engine_for_reads() or db.engine


def audit_trail() -> AuditTrail:
    return AuditTrail(db.session(), current_app.extensions["audit_keys"])


def clients(replica: bool = False) -> ClientsService:
    return ClientsService(_session(replica), _clock(), audit_trail())


def _thresholds() -> tuple[int, ...]:
    return current_app.config["WEBHOOK_THRESHOLDS"]


def quotas() -> QuotasService:
    return QuotasService(db.session(), _clock(), audit_trail(), _thresholds())


def consumption(replica: bool = False) -> ConsumptionService:
    return ConsumptionService(_session(replica), _clock(), audit_trail(), _thresholds())


def grants(replica: bool = False) -> GrantsService:
    return GrantsService(_session(replica), _clock(), audit_trail(), _thresholds())


def holds() -> HoldsService:
    return HoldsService(db.session(), _clock(), current_app.config["HOLDS_MAX_OPEN"], _thresholds())


def refunds(replica: bool = False) -> RefundsService:
    return RefundsService(_session(replica), _clock(), _thresholds())


def storage() -> StorageService:
    return StorageService(db.session(), _clock(), audit_trail())


def webhooks() -> WebhooksService:
    return WebhooksService(db.session(), _clock(), audit_trail())


def deliverer() -> Deliverer:
    config = current_app.config
    return Deliverer(db.session(), _clock(), audit_trail(), config["WEBHOOK_RETRY_SCHEDULE"],
                     config["WEBHOOK_TIMEOUT_SECONDS"])


def audit_log(replica: bool = False, session: Session | None = None) -> AuditLogReader:
    return AuditLogReader(session or _session(replica))


def audit_verifier(session: Session | None = None) -> AuditVerifier:
    return AuditVerifier(session or db.session(), current_app.extensions["audit_keys"])


def api_keys() -> ApiKeys:
    return ApiKeys(db.session(), _clock(), current_app.extensions["key_check_cache"])


def idempotency_keys() -> IdempotencyKeys:
    config = current_app.config
    return IdempotencyKeys(
        db.session(), _clock(),
        ttl=timedelta(hours=config["IDEMPOTENCY_TTL_HOURS"]),
        lock_timeout=timedelta(seconds=config["IDEMPOTENCY_LOCK_SECONDS"]),
        admit_new=_stored_answers_counter(config),
        max_stored=config["IDEMPOTENCY_MAX_KEYS"],
    )


def _stored_answers_counter(config) -> Callable[[str], bool]:
    """Stored answers per key name, counted by the rate limiter's storage (Redis across instances):
    a runaway caller cannot fill the database within the TTL. Off with the rate limits."""
    if not limiter.enabled:
        return lambda principal: True
    cap = parse(f"{config['IDEMPOTENCY_MAX_KEYS']} per {config['IDEMPOTENCY_TTL_HOURS']} hour")
    swallow_errors = config["RATELIMIT_SWALLOW_ERRORS"]

    def admit(principal: str) -> bool:
        try:
            return limiter.limiter.hit(cap, "idempotency-answers", principal)
        except Exception:  # the storage is down: as with rate limits, requests go on uncounted
            if not swallow_errors:
                raise
            log.warning("counting stored Idempotency-Key answers failed", exc_info=True)
            return True

    return admit
