"""Times on the wire: every datetime of the contract is UTC."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """Naive times are taken as UTC rather than rejected or misread as local time.

    Aware times are converted to UTC here, so one that has no UTC equivalent (``0001-01-01T00:00+14:00``)
    is a validation error rather than an overflow in the database driver.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date out of range") from None


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
