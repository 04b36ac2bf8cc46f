"""When a schedule fires: cron expressions (parsed by cronsim) in an IANA time zone, or fixed intervals.

Shared by the protocol's validation (a bad expression is a 422 naming the field) and the server's
scheduler, so both read an expression the same way.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def expand(expression: str) -> str:
    text = " ".join(expression.split())
    return ALIASES.get(text.lower(), text)


def check_cron(expression: str) -> str:
    """The expression, normalised; ValueError with the parser's reason when it is not valid cron."""
    text = expand(expression)
    if not text:
        raise ValueError("a cron expression is required")
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    return " ".join(expression.split())


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def next_fire(*, cron: str | None, interval_sec: int | None, timezone: str, after: datetime) -> datetime:
    """The first firing strictly after ``after`` (aware), in UTC.

    Cron runs on the schedule's wall clock (``0 9 * * *`` in Europe/Berlin is 09:00 there, summer or
    winter); an interval counts real seconds from ``after``.
    """
    if interval_sec is not None:
        return (after + timedelta(seconds=interval_sec)).astimezone(UTC)
    assert cron is not None
    local = after.astimezone(zone(timezone))
    return next(iter(CronSim(expand(cron), local))).astimezone(UTC)


def last_cron_fire(*, cron: str, timezone: str, at_or_before: datetime) -> datetime:
    """The latest firing at or before ``at_or_before`` (aware), in UTC: the last one a stopped scheduler missed."""
    # cronsim's reverse walk starts strictly before a whole second, or at it when microseconds are given.
    local = (at_or_before + timedelta(microseconds=1)).astimezone(zone(timezone))
    return next(iter(CronSim(expand(cron), local, reverse=True))).astimezone(UTC)
