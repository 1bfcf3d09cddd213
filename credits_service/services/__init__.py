"""The services, built for the current app: what views, CLI commands and background jobs call.

Each service takes the request's (or command's) ORM session, the app's clock and, when it
writes admin changes, the audit trail; it owns its transactions (credits_service/transactions.py).
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from flask import current_app
from limits import parse

from ..audit.reader import AuditLogReader
from ..audit.trail import AuditTrail
from ..audit.verify import AuditVerifier
from ..extensions import db, limiter
from .api_keys import ApiKeys
from .clients import ClientsService
from .consumption import ConsumptionService
from .grants import GrantsService
from .holds import HoldsService
from .idempotency import IdempotencyKeys
from .quotas import QuotasService
from .refunds import RefundsService
from .storage import StorageService

log = logging.getLogger("credits_service.idempotency")


def _clock():
    return current_app.config["CLOCK"]


def audit_trail() -> AuditTrail:
    return AuditTrail(db.session(), current_app.extensions["audit_keys"])


def clients() -> ClientsService:
    return ClientsService(db.session(), _clock(), audit_trail())


def quotas() -> QuotasService:
    return QuotasService(db.session(), _clock(), audit_trail())


def consumption() -> ConsumptionService:
    return ConsumptionService(db.session(), _clock(), audit_trail())


def grants() -> GrantsService:
    return GrantsService(db.session(), _clock(), audit_trail())


def holds() -> HoldsService:
    return HoldsService(db.session(), _clock(), current_app.config["HOLDS_MAX_OPEN"])


def refunds() -> RefundsService:
    return RefundsService(db.session(), _clock())


def storage() -> StorageService:
    return StorageService(db.session(), _clock(), audit_trail())


def audit_log() -> AuditLogReader:
    return AuditLogReader(db.session())


def audit_verifier() -> AuditVerifier:
    return AuditVerifier(db.session(), current_app.extensions["audit_keys"])


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
