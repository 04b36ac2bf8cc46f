"""A database outage, however it shows up, gets one answer: ``database_unavailable``, retryable.

REST answers 503 in the contract's error shape (the token lookup needs the database too, so an
outage is a 503, never a 401); socket acks carry the same error with ``retryable: true`` (the agent
keeps the event in its outbox); socket connects are refused. Nothing survives the outage but the
pool, which opens new connections on the next request: recovery needs no restart.
"""

import logging
import time
from typing import Any

import asyncpg

from phonefleet.protocol.models import ErrorBody, ErrorDetail, ErrorInfo
from phonefleet.server.errors import ServiceError

log = logging.getLogger(__name__)

CODE = "database_unavailable"
MESSAGE = "the database is unavailable; try again shortly"
RETRY_AFTER_SEC = 2
"""What a REST 503 tells the client (``Retry-After``): the pool tries a new connection on every request."""


class DatabaseUnavailable(ServiceError, ConnectionError):
    """A connection to PostgreSQL could not be opened (refused, unreachable, timed out, refused by the server).

    Still a ``ConnectionError``: the background loops that survive an ``OSError`` survive this one too.
    """

    status = 503
    code = CODE


OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,  # the pool's connect failed (see ``connect``)
    ConnectionError,  # refused, reset, aborted: the socket to PostgreSQL
    TimeoutError,  # connect, pool acquire or command timeout (asyncio.TimeoutError is this class)
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them: lost mid-query
    asyncpg.InterfaceError,  # the connection was closed under us, or the pool is closing
    asyncpg.exceptions.OperatorInterventionError,  # class 57: starting up, shutting down, crashed, cancelled
    asyncpg.exceptions.TooManyConnectionsError,  # 53300: the server takes no more clients now
)
"""Every way an outage reaches a request; anything else from the driver is a query's own failure."""

DATABASE_ERRORS: tuple[type[BaseException], ...] = (*OUTAGE_ERRORS, asyncpg.PostgresError)
"""An outage or a query's own failure: what a background loop survives to try again."""


def is_database_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_ERRORS)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ is not None else exc
    return type(cause).__name__


def outage_body(exc: BaseException) -> dict[str, Any]:
    """The error body; its detail names ``database`` (what is down) and the kind of failure seen."""
    detail = ErrorDetail(field="database", message=f"unavailable ({_reason(exc)})", type="database_unavailable")
    return ErrorBody(error=ErrorInfo(code=CODE, message=MESSAGE, details=[detail])).model_dump(
        mode="json", exclude_none=True)


def outage_ack(exc: BaseException) -> dict[str, Any]:
    """A socket (or polling) event's error ack: the same error, marked retryable."""
    return {"ok": False, "error": {**outage_body(exc)["error"], "retryable": True}}


class _Throttle:
    """One WARNING per outage, not one per request: an outage under load would flood the log."""

    def __init__(self, every_sec: float = 30.0) -> None:
        self.every_sec = every_sec
        self._last = float("-inf")
        self._suppressed = 0

    def report(self, exc: BaseException, where: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every_sec:
            self._suppressed += 1
            return
        log.warning("database unavailable", extra={"where": where, "error": _reason(exc),
                                                   "suppressed": self._suppressed})
        self._last, self._suppressed = now, 0


report = _Throttle().report


async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """The pool's ``connect``: failing to open a connection is an outage, whatever the reason given.

    Wrapping it here means only ``ConnectionError`` need count as an outage, not every ``OSError`` (a full
    disk under the artifacts is not one).
    """
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(MESSAGE) from exc
