"""What services return: plain values the API's output schemas dump and the CLI prints."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..months import month_of, next_month_start
from ..plans import UNLIMITED, effective_limit, remaining


@dataclass(frozen=True)
class Page:
    items: list[Any]
    limit: int
    offset: int
    next_offset: int | None


@dataclass(frozen=True)
class ClientSummary:
    id: str
    name: str
    plan: str
    created_at: datetime


@dataclass(frozen=True)
class QuotaSettings:
    """A client's plan and limits as stored (the stored limit, without month-grants)."""

    client_id: str
    plan: str
    monthly_generation_limit: int
    storage_quota_mb: int
    updated_at: datetime


@dataclass(frozen=True)
class MonthUsage:
    """This UTC month's generations against its effective limit (the stored one plus month-grants);
    what open holds reserve counts as used."""

    month: str
    generation_count: int
    limit: int
    base_limit: int
    granted_this_month: int
    held: int
    remaining: int | None
    is_unlimited: bool
    reset_date: datetime
    # What the client stores (a level, not the month's): shown with the quota read.
    storage_used_bytes: int | None = None

    @classmethod
    def of(cls, stored_limit: int, generation_count: int, granted: int, held: int, now: datetime) -> "MonthUsage":
        limit = effective_limit(stored_limit, granted)
        return cls(month_of(now), generation_count, limit, stored_limit, granted, held,
                   remaining(limit, generation_count + held), limit == UNLIMITED, next_month_start(now))


@dataclass(frozen=True)
class QuotaOverview:
    quota: QuotaSettings
    usage: MonthUsage
    audit_log: list[Any]  # the newest entries' rows, by column name


@dataclass(frozen=True)
class QuotaStatus:
    """What the platform asks before a generation: MonthUsage with percentages and flags."""

    plan: str
    month: str
    generations_used: int
    generations_held: int
    generations_limit: int
    generations_remaining: int | None
    base_limit: int
    granted_this_month: int
    usage_percent: float
    is_unlimited: bool
    is_at_limit: bool
    is_near_limit: bool
    reset_date: datetime
    storage_used_bytes: int
    storage_quota_mb: int
    storage_remaining_bytes: int | None
    is_storage_at_limit: bool


@dataclass(frozen=True)
class StorageStatus:
    """What a client stores against its storage quota (-1: unlimited, remaining None)."""

    used_bytes: int
    quota_mb: int
    remaining_bytes: int | None
    is_unlimited: bool
    is_at_limit: bool


@dataclass(frozen=True)
class ResetResult:
    previous_usage: int
    limit: int
    remaining: int | None
    current_usage: int = 0
    action: str = "reset"


@dataclass(frozen=True)
class GrantResult:
    grant_id: int
    scope: str
    month: str | None
    expires_at: datetime | None
    current_usage: int
    previous_limit: int
    new_limit: int
    remaining: int | None
    action: str = "grant"


@dataclass(frozen=True)
class VoidResult:
    grant_id: int
    scope: str
    current_usage: int
    previous_limit: int
    new_limit: int
    remaining: int | None
    action: str = "void"


@dataclass(frozen=True)
class LedgerGrant:
    """A grant as the ledger lists it, with its status as of now."""

    id: int
    amount: int
    scope: str
    month: str | None
    expires_at: datetime | None
    reason: str | None
    admin_id: str
    created_at: datetime
    status: str
    voided_at: datetime | None
    voided_by: str | None
    void_reason: str | None


@dataclass(frozen=True)
class HistoryMonth:
    """One month of the usage history: what was counted and granted for that month alone, and
    where the count comes from (generation_count = consumed + captured - refunded)."""

    month: str
    generation_count: int
    granted_this_month: int
    consumed_count: int
    captured_count: int
    refunded_count: int


@dataclass(frozen=True)
class UsageHistory:
    from_month: str
    to_month: str
    items: list[HistoryMonth]


@dataclass(frozen=True)
class HoldState:
    """A hold as its routes answer; after a change, with its month's figures as they stand."""

    hold_id: int
    status: str
    count: int
    month: str
    reference: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    captured_count: int
    released_count: int
    generation_count: int | None = None
    generations_held: int | None = None
    generations_remaining: int | None = None


@dataclass(frozen=True)
class RefundResult:
    refund_id: int
    month: str
    count: int
    generation_count: int
    generations_remaining: int | None


@dataclass(frozen=True)
class RefundView:
    id: int
    month: str
    count: int
    reason: str | None
    key_name: str
    created_at: datetime


@dataclass(frozen=True)
class WebhookView:
    id: int
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    secret: str | None = None  # only in the answer that made it


@dataclass(frozen=True)
class DeliveryView:
    id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
