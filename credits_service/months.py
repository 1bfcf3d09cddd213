"""Usage months are calendar months of UTC, whatever the server's local time zone."""

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware one")
    return moment.astimezone(UTC)


def month_of(moment: datetime) -> str:
    """The usage month (YYYY-MM) that holds this instant."""
    utc = as_utc(moment)
    return f"{utc.year:04d}-{utc.month:02d}"


def next_month_start(moment: datetime) -> datetime:
    """The first instant of the UTC month after the one holding this instant."""
    utc = as_utc(moment)
    if utc.month == 12:
        return datetime(utc.year + 1, 1, 1, tzinfo=UTC)
    return datetime(utc.year, utc.month + 1, 1, tzinfo=UTC)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z offset and millisecond precision, as the API writes instants."""
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def month_start(month: str) -> datetime:
    """The first instant of a usage month (YYYY-MM)."""
    year, number = month.split("-")
    return datetime(int(year), int(number), 1, tzinfo=UTC)


def month_number(month: str) -> int:
    """Months since year 0, so that ranges of months are integer arithmetic."""
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


def month_named(number: int) -> str:
    """The usage month (YYYY-MM) month_number maps to number."""
    return f"{number // 12:04d}-{number % 12 + 1:02d}"
