"""Typed SQLAlchemy models. Nothing here commits: the services own the transactions."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db
from .plans import DEFAULT_PLAN, PLANS

# Rows of audit_actions: a migration adds a new action with an INSERT.
AUDIT_ACTIONS = ("plan_change", "credit_grant", "limit_change", "usage_reset", "credit_void", "client_deleted",
                 "storage_reconcile", "webhook_created", "webhook_updated", "webhook_deleted",
                 "webhook_secret_rotated", "webhook_disabled")
# permanent raises the stored monthly limit; month adds to one UTC month only.
GRANT_SCOPES = ("permanent", "month")
# expired is what an open hold past its expires_at reads as; the sweep stores it later.
HOLD_STATUSES = ("held", "captured", "released", "expired")
ROLES = ("read", "write", "service")


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in Python on both databases (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# Autoincrementing 64-bit ids; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Client(db.Model):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)


class QuotaLimit(db.Model):
    __tablename__ = "quota_limits"
    __table_args__ = (
        CheckConstraint(_one_of("plan", PLANS), name="plan"),
        CheckConstraint("monthly_generation_limit >= -1", name="generation_limit"),
        CheckConstraint("storage_quota_mb >= -1", name="storage_quota"),
        CheckConstraint("storage_used_bytes >= 0", name="storage_used"),
    )

    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    plan: Mapped[str] = mapped_column(String(16), default=DEFAULT_PLAN)
    monthly_generation_limit: Mapped[int] = mapped_column(Integer)
    storage_quota_mb: Mapped[int] = mapped_column(Integer)
    # What the client stores now (services/storage.py): a level, moved by the platform's deltas,
    # kept beside its quota so that one conditional UPDATE checks and moves it.
    storage_used_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)

    def snapshot(self) -> dict[str, Any]:
        """The limits as the audit log records them before and after a change."""
        return {
            "plan": self.plan,
            "monthlyGenerationLimit": self.monthly_generation_limit,
            "storageQuotaMb": self.storage_quota_mb,
        }


class UsageRecord(db.Model):
    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("client_id", "month"),
        CheckConstraint("generation_count >= 0", name="generation_count"),
        CheckConstraint("granted >= 0", name="granted"),
        CheckConstraint("held >= 0", name="held"),
        CheckConstraint("consumed >= 0", name="consumed"),
        CheckConstraint("captured >= 0", name="captured"),
        CheckConstraint("refunded >= 0", name="refunded"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", ondelete="CASCADE")
    )
    month: Mapped[str] = mapped_column(String(7))
    # 64-bit, so count + n never overflows on PostgreSQL, even for unlimited clients.
    generation_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # This month's live month-grants, kept in the row consumption updates so that the check
    # against the effective limit (stored limit + granted) is part of the one upsert statement.
    # 64-bit, so stored limit + granted never overflows either.
    granted: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # What the month's open holds reserve (services/month_usage.py): consumption counts it as used.
    held: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Where generation_count comes from: consumed + captured - refunded (a reset starts all over).
    consumed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    captured: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refunded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)


class AuditAction(db.Model):
    """The actions an audit entry may record."""

    __tablename__ = "audit_actions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)


class CreditAuditLog(db.Model):
    """Append-only, one hash chain per client (audit/); it outlives its client. Triggers refuse
    UPDATE, DELETE and TRUNCATE, and advance the client's head with each INSERT."""

    __tablename__ = "credit_audit_log"
    __table_args__ = (
        # One entry per place in a client's chain, even if a writer skipped the lock.
        UniqueConstraint("client_id", "seq"),
        Index("ix_credit_audit_log_client_created", "client_id", "created_at"),
        # Listing is newest first by insertion order (the id): each filter an investigation
        # starts from leads an index that ends in the id, read backwards (services/audit_log.py).
        Index("ix_credit_audit_log_client_id_desc", "client_id", "id"),
        Index("ix_credit_audit_log_client_action_id", "client_id", "action", "id"),
        Index("ix_credit_audit_log_action_id", "action", "id"),
        Index("ix_credit_audit_log_admin_id_id", "admin_id", "id"),
        Index("ix_credit_audit_log_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key: the entries of a deleted client stay.
    client_id: Mapped[str] = mapped_column(String(64))
    admin_id: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32), ForeignKey("audit_actions.name"))
    details: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    previous_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    # The place in the client's chain, from 1: a gap means missing entries, a step back a reorder.
    seq: Mapped[int] = mapped_column(BigInteger)
    # Hex SHA-256 HMACs: this entry's, and the one it chains from (GENESIS for the first).
    previous_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))


class AuditHead(db.Model):
    """The newest state of a client's audit chain, advanced by the database with every entry.

    Triggers refuse any change but one step forward (entry_count + 1, to an existing entry
    of the client with that seq and hash), any deletion, and a head inserted non-empty.
    It outlives its client, as the entries do.
    """

    __tablename__ = "audit_heads"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    entry_count: Mapped[int] = mapped_column(BigInteger)
    last_entry_id: Mapped[int | None] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    # The last entry's createdAt, or the client's creation while the chain is empty.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CreditGrant(db.Model):
    """The grant ledger: one row per grant; a void marks its row and never deletes it."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint(_one_of("scope", GRANT_SCOPES), name="scope"),
        CheckConstraint("amount > 0", name="amount"),
        CheckConstraint(
            "(scope = 'month' AND month IS NOT NULL) OR (scope = 'permanent' AND month IS NULL)",
            name="month",
        ),
        # The ledger is listed newest first (by id) per client.
        Index("ix_credit_grants_client_id_desc", "client_id", "id"),
        # A client's month-grants of one month, to sum or list them.
        Index("ix_credit_grants_client_month", "client_id", "month"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clients.id", ondelete="CASCADE")
    )
    amount: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(16))
    month: Mapped[str | None] = mapped_column(String(7))
    reason: Mapped[str | None] = mapped_column(Text)
    admin_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_by: Mapped[str | None] = mapped_column(String(200))
    void_reason: Mapped[str | None] = mapped_column(Text)


class ApiKey(db.Model):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the key, hex; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyRecord(db.Model):
    """A request made with an Idempotency-Key and, once finished, the response it got."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 over method, path and body: a reused key with another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, index=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class Hold(db.Model):
    """Credits reserved while a generation runs (services/holds.py); resolved once, or lapsed."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(_one_of("status", HOLD_STATUSES), name="status"),
        CheckConstraint("count > 0", name="count"),
        CheckConstraint("captured_count >= 0 AND captured_count <= count", name="captured_count"),
        Index("ix_holds_client_id_desc", "client_id", "id"),
        # A month's open holds, summed by every check against the limit.
        Index("ix_holds_open", "client_id", "month", "status", "expires_at"),
        # The lapsed holds the sweep marks.
        Index("ix_holds_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64), ForeignKey("clients.id", ondelete="CASCADE"))
    month: Mapped[str] = mapped_column(String(7))
    count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    captured_count: Mapped[int | None] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(String(200))
    key_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Refund(db.Model):
    """Usage given back by the platform (services/refunds.py): one row per refund."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("count > 0", name="count"),
        Index("ix_refunds_client_id_desc", "client_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64), ForeignKey("clients.id", ondelete="CASCADE"))
    month: Mapped[str] = mapped_column(String(7))
    count: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    key_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


DELIVERY_STATUSES = ("pending", "succeeded", "failed")


class WebhookEndpoint(db.Model):
    """Where events are sent (services/webhooks.py), signed with its secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSONDocument)  # event types, or ["*"]
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean)
    # whsec_ + base64: deliveries are signed with it, and with the one before for a day after a rotation.
    secret: Mapped[str] = mapped_column(String(200))
    previous_secret: Mapped[str | None] = mapped_column(String(200))
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEvent(db.Model):
    """The outbox: an event, written in the transaction of the change it describes."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_ + 32 hex: the webhook-id
    type: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the JSON sent, byte for byte as signed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(db.Model):
    """One event to one endpoint: attempted until a 2xx or the retry schedule runs out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_one_of("status", DELIVERY_STATUSES), name="status"),
        # What is due: the delivery worker's claim.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id_desc", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_event_id", "event_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_events.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A worker's claim: until then no other worker takes it; a worker that died gives it back so.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A retry an admin asked for is one attempt: failing, the delivery is failed again.
    last_attempt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsageThreshold(db.Model):
    """A threshold a client's month has reached: usage.threshold_reached fired once for it."""

    __tablename__ = "usage_thresholds"

    client_id: Mapped[str] = mapped_column(String(64), ForeignKey("clients.id", ondelete="CASCADE"),
                                           primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    threshold: Mapped[int] = mapped_column(Integer, primary_key=True)
    reached_at: Mapped[datetime] = mapped_column(UTCDateTime)
