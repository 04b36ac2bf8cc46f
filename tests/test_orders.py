"""The orders the server sends are the protocol's ``AssignmentOrder``: every field, each valid, built in one place;
a ``job:assign`` to an agent that takes plans once carries each job's fields once (``OrderJob``) and a slot per
phone (``OrderSlot``), which join back into the same orders."""

import gc
from typing import Any

import pytest
from pydantic import ValidationError

from phonefleet.protocol.enums import AssignmentStatus
from phonefleet.protocol.events import AssignmentOrder, JobAssign, OrderJob, OrderSlot
from phonefleet.server import orders

JOB = {"id": 7, "title": "smoke", "plan": [{"type": "open_url", "url": "https://example.com", "duration_sec": 3}],
       "priority": 5, "timeout_sec": 600, "allow_shell": False, "on_interrupt": "rerun"}
ROWS: list[dict[str, Any]] = [{"id": 11, "device_id": 3, "serial": "pixel-1", "attempt": 2},
                              {"id": 12, "device_id": 4, "serial": "pixel-2", "attempt": 1}]


def test_an_order_is_its_jobs_fields_and_its_slot_and_nothing_else() -> None:
    assert set(OrderJob.model_fields) | set(OrderSlot.model_fields) == set(AssignmentOrder.model_fields)
    assert set(OrderJob.model_fields) & set(OrderSlot.model_fields) == {"job_id"}
    for name in AssignmentOrder.model_fields:
        half = OrderJob.model_fields.get(name) or OrderSlot.model_fields[name]
        assert half.annotation == AssignmentOrder.model_fields[name].annotation, name
        assert half.default == AssignmentOrder.model_fields[name].default, name


def test_claimed_slots_joined_with_their_job_are_whole_valid_orders() -> None:
    job = orders.job_fields(JOB)
    slots = orders.claimed(JOB, ROWS)
    assert set(job) == set(OrderJob.model_fields)
    assert all(set(s) == set(OrderSlot.model_fields) for s in slots)
    whole = [AssignmentOrder.model_validate(o) for o in orders.whole({7: job}, slots)]
    assert [(o.assignment_id, o.job_id, o.attempt, o.status) for o in whole] == [
        (11, 7, 2, AssignmentStatus.pending), (12, 7, 1, AssignmentStatus.pending)]
    assert whole[0].plan[0].type == "open_url"
    assert [o.model_dump() for o in whole] == [
        AssignmentOrder.model_validate(orders.fields(JOB, assignment_id=r["id"], device_id=r["device_id"],
                                                     serial=r["serial"], attempt=r["attempt"],
                                                     status=AssignmentStatus.pending)).model_dump()
        for r in ROWS], "one builder: the whole order and the joined slot are the same"


def test_claimed_slots_are_nothing_for_the_garbage_collector_to_scan() -> None:
    """A 10,000-phone fan-out makes 10,000 slots: plain ints and strings, so CPython never tracks them and a
    collection in the middle of the fan-out does not walk them (an enum member in one would)."""
    assert not any(gc.is_tracked(s) for s in orders.claimed(JOB, ROWS))


def test_a_job_assign_with_plans_once_reads_as_the_same_orders() -> None:
    job = orders.job_fields(JOB)
    slots = orders.claimed(JOB, ROWS)
    compact = JobAssign.model_validate({"jobs": [job], "slots": slots})
    legacy = JobAssign.model_validate({"assignments": orders.whole({7: job}, slots)})
    assert [o.model_dump() for o in compact.orders()] == [o.model_dump() for o in legacy.orders()]
    assert compact.orders()[0].plan is compact.orders()[1].plan, "the plan is read once per job, not per phone"


def test_a_slot_whose_job_is_not_in_the_message_does_not_fit() -> None:
    with pytest.raises(ValidationError, match="slots name jobs not in jobs"):
        JobAssign.model_validate({"jobs": [], "slots": orders.claimed(JOB, ROWS)})


def test_orders_from_rows_wire_as_they_were_built() -> None:
    row = {**JOB, "job_id": 7, "assignment_id": 12, "device_id": 4, "serial": "pixel-2", "attempt": 1,
           "status": "delivered"}
    (order,) = orders.of_rows([row])
    (wired,) = orders.wire([order])
    assert AssignmentOrder.model_validate(wired).status == AssignmentStatus.delivered
    assert wired["plan"] == JOB["plan"], "the plan travels as stored"

