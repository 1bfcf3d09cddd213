"""Plan names and their default limits: the one place they live."""

from dataclasses import dataclass

UNLIMITED = -1
# The largest value the limit columns (32-bit integers on both databases) hold.
MAX_LIMIT = 2_147_483_647


@dataclass(frozen=True)
class PlanLimits:
    monthly_generation_limit: int
    storage_quota_mb: int


PLAN_LIMITS: dict[str, PlanLimits] = {
    "free": PlanLimits(100, 1000),
    "starter": PlanLimits(500, 5000),
    "pro": PlanLimits(2000, 20000),
    "enterprise": PlanLimits(UNLIMITED, UNLIMITED),
}
PLANS = tuple(PLAN_LIMITS)
DEFAULT_PLAN = "free"


def remaining(limit: int, used: int) -> int | None:
    """What is left of a limit: None when unlimited, never negative."""
    if limit == UNLIMITED:
        return None
    return max(limit - used, 0)


def effective_limit(stored_limit: int, granted: int) -> int:
    """This month's limit: the stored one plus this month's live month-grants (unlimited stays so)."""
    if stored_limit == UNLIMITED:
        return UNLIMITED
    return stored_limit + granted
