"""Assignment orders: what an agent needs to run one assignment, built in one place from the database's rows.

The rows are trusted (the job's plan was validated when the job was made), so an order is never validated
again: at 10,000 phones validation was the fan-out's largest cost. ``fields`` builds every order; a test
holds them to the model, so a change to ``AssignmentOrder`` that this side forgets fails the suite.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg
from pydantic import BaseModel

from phonefleet.protocol.enums import AssignmentStatus
from phonefleet.protocol.events import AssignmentOrder

Row = asyncpg.Record | Mapping[str, Any]


def fields(job: Row, *, assignment_id: int, device_id: int, serial: str, attempt: int,
           status: AssignmentStatus) -> dict[str, Any]:
    """An ``AssignmentOrder``'s fields for one assignment of ``job`` (a jobs row, or any row with the job's
    columns): the one place an order is built. The fan-out sends these as they are (10,000 orders: a model
    each would cost it more than a tenth); everything else wraps them in the model (``of_rows``)."""
    return {
        "assignment_id": assignment_id, "job_id": job["job_id"] if "job_id" in job else job["id"],
        "device_id": device_id, "serial": serial, "title": job["title"], "plan": job["plan"],
        "priority": job["priority"], "timeout_sec": job["timeout_sec"], "attempt": attempt, "status": status,
        "allow_shell": job["allow_shell"], "on_interrupt": job["on_interrupt"],
    }


def claimed(job: Row, rows: Iterable[Row]) -> list[dict[str, Any]]:
    """The fields of the orders for assignments a claim just made (pending), ready for the wire."""
    return [fields(job, assignment_id=r["id"], device_id=r["device_id"], serial=r["serial"], attempt=r["attempt"],
                   status=AssignmentStatus.pending) for r in rows]


def of_rows(rows: Iterable[Row]) -> list[AssignmentOrder]:
    """Orders from ``assignments.ORDER_COLUMNS`` rows (an agent's open work, re-sent or listed)."""
    return [AssignmentOrder.model_construct(**fields(
        r, assignment_id=r["assignment_id"], device_id=r["device_id"], serial=r["serial"], attempt=r["attempt"],
        status=AssignmentStatus(r["status"]))) for r in rows]


def wire(orders: Iterable[AssignmentOrder | dict[str, Any]]) -> list[dict[str, Any]]:
    """Orders as the socket and the poll send them: each one's fields, as they came from the database."""
    return [o if isinstance(o, dict) else dict(o.__dict__) for o in orders]


def with_orders(message: BaseModel, orders: Iterable[AssignmentOrder]) -> dict[str, Any]:
    """A message that carries orders (hello ack, poll answer) as JSON: the rest dumped, the orders wired."""
    body = message.model_dump(mode="json", exclude={"assignments"})
    body["assignments"] = wire(orders)
    return body
