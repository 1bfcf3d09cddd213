"""Clients: created on a plan with that plan's limits, listed, read and deleted by admins."""

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..audit.trail import AuditTrail
from ..errors import Conflict, NotFound
from ..logs import log_admin_action
from ..models import AuditHead, Client, QuotaLimit
from ..plans import DEFAULT_PLAN, PLAN_LIMITS
from ..transactions import write_transaction
from .events import emit
from .paging import page_of
from .quotas import find_quota
from .results import ClientSummary, Page


def _summaries() -> Select:
    return select(Client.id, Client.name, QuotaLimit.plan, Client.created_at).join(
        QuotaLimit, QuotaLimit.client_id == Client.id
    )


class ClientsService:
    def __init__(self, session: Session, clock: Callable[[], datetime], audit: AuditTrail):
        self.session = session
        self.clock = clock
        self.audit = audit

    def create_client(self, actor: str, name: str, client_id: str | None = None,
                      plan: str = DEFAULT_PLAN) -> ClientSummary:
        client_id = client_id or uuid.uuid4().hex
        limits = PLAN_LIMITS[plan]
        now = self.clock()
        duplicate = Conflict(f"A client with id {client_id!r} already exists.")
        try:
            with write_transaction(self.session):
                if self.session.get(Client, client_id) is not None:
                    raise duplicate
                if self.session.get(AuditHead, client_id) is not None:
                    raise Conflict(
                        f"The id {client_id!r} belonged to a client that was deleted; its audit history is kept "
                        "under that id, so the id cannot be used again. Choose another id."
                    )
                self.session.add(Client(id=client_id, name=name, created_at=now, updated_at=now))
                self.session.flush()
                self.session.add(QuotaLimit(
                    client_id=client_id, plan=plan, monthly_generation_limit=limits.monthly_generation_limit,
                    storage_quota_mb=limits.storage_quota_mb, created_at=now, updated_at=now,
                ))
                self.audit.start(client_id, now)
                emit(self.session, "client.created", {"clientId": client_id, "name": name, "plan": plan}, now)
        except IntegrityError:  # the same id created concurrently
            raise duplicate from None
        log_admin_action(actor, "client_create", client_id)
        return ClientSummary(client_id, name, plan, now)

    def list_clients(self, limit: int, offset: int) -> Page:
        query = _summaries().order_by(Client.created_at, Client.id)
        return page_of(self.session, query, limit, offset, lambda row: ClientSummary(*row))

    def get_client(self, client_id: str) -> ClientSummary:
        row = self.session.execute(_summaries().where(Client.id == client_id)).first()
        if row is None:
            raise NotFound.client(client_id)
        return ClientSummary(*row)

    def delete_client(self, actor: str, client_id: str) -> None:
        """Deletes the client with its quota, usage and grants; its audit log stays, ending with a
        client_deleted entry that records who deleted it, when, and what it was."""
        now = self.clock()
        with write_transaction(self.session):
            # The quota row lock first, as every writer takes it: no deadlock with a grant.
            quota = find_quota(self.session, client_id, lock=True)
            name = self.session.scalar(select(Client.name).where(Client.id == client_id))
            last_state = {"name": name, **quota.snapshot()}
            self.audit.append(client_id, actor, "client_deleted", last_state,
                              json.dumps(last_state, separators=(",", ":")), None, now)
            self.session.execute(delete(Client).where(Client.id == client_id))
            emit(self.session, "client.deleted", {"clientId": client_id}, now)
        log_admin_action(actor, "client_deleted", client_id)
