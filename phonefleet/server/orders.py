"""Assignment orders: what an agent needs to run one assignment, built in one place from the database's rows.

The rows are trusted (the job's plan was validated when the job was made), so an order is never validated
again: at 10,000 phones validation was the fan-out's largest cost. An order is its job's fields
(``job_fields``, the plan among them) and its slot (``slot``, the phone's part); a fan-out sends each job once
and the slots to agents that take plans once (``PLANS_ONCE``), and whole orders (``whole``) to the others.
A test holds both halves to the models, so a change to ``AssignmentOrder`` that this side forgets fails the
suite.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg
from pydantic import BaseModel

from phonefleet.protocol.enums import AssignmentStatus
from phonefleet.protocol.events import AssignmentOrder

Row = asyncpg.Record | Mapping[str, Any]


def job_fields(job: Row) -> dict[str, Any]:
    """An ``OrderJob``'s fields: what every order of ``job`` shares (a jobs row, or any row with the job's
    columns). Sent once per job to agents that take plans once; merged into each order for the others."""
    return {
        "job_id": job["job_id"] if "job_id" in job else job["id"], "title": job["title"], "plan": job["plan"],
        "priority": job["priority"], "timeout_sec": job["timeout_sec"], "allow_shell": job["allow_shell"],
        "on_interrupt": job["on_interrupt"],
    }


PENDING = AssignmentStatus.pending.value
"""A claimed slot's status as a plain string: a dict of ints and strings is never tracked by the garbage
collector (an enum member would make it tracked), so a 10,000-phone fan-out adds nothing for a collection to
scan."""


def slot(job_id: int, *, assignment_id: int, device_id: int, serial: str, attempt: int,
         status: str) -> dict[str, Any]:
    """An ``OrderSlot``'s fields: one phone's part of an order (``status`` an ``AssignmentStatus``, or its
    value)."""
    return {"assignment_id": assignment_id, "job_id": job_id, "device_id": device_id, "serial": serial,
            "attempt": attempt, "status": status}


def fields(job: Row, *, assignment_id: int, device_id: int, serial: str, attempt: int,
           status: AssignmentStatus) -> dict[str, Any]:
    """An ``AssignmentOrder``'s fields for one assignment of ``job``: its job's fields and its slot, the one
    place a whole order is built. Orders are sent as dicts (10,000 orders: a model each would cost a fan-out
    more than a tenth); everything else wraps them in the model (``of_rows``)."""
    made = job_fields(job)
    made.update(slot(made["job_id"], assignment_id=assignment_id, device_id=device_id, serial=serial,
                     attempt=attempt, status=status))
    return made


def claimed(job: Row, rows: Iterable[Row]) -> list[dict[str, Any]]:
    """The slots of the orders a claim just made (pending, of ``job``), ready for the wire: each phone's part
    only, its job's fields being ``job_fields(job)``."""
    job_id = job["id"]
    return [slot(job_id, assignment_id=r["id"], device_id=r["device_id"], serial=r["serial"], attempt=r["attempt"],
                 status=PENDING) for r in rows]


def whole(jobs: Mapping[int, dict[str, Any]], slots: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Slots joined with their jobs' fields: whole orders, for an agent that does not take plans once."""
    return [{**jobs[s["job_id"]], **s} for s in slots]


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
