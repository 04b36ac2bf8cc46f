"""The orders the server sends are the protocol's ``AssignmentOrder``: every field, each valid, built in one place."""

from phonefleet.protocol.enums import AssignmentStatus
from phonefleet.protocol.events import AssignmentOrder
from phonefleet.server import orders

JOB = {"id": 7, "title": "smoke", "plan": [{"type": "open_url", "url": "https://example.com", "duration_sec": 3}],
       "priority": 5, "timeout_sec": 600, "allow_shell": False, "on_interrupt": "rerun"}


def test_an_orders_fields_are_exactly_the_models_and_validate() -> None:
    (made,) = orders.claimed(JOB, [{"id": 11, "device_id": 3, "serial": "pixel-1", "attempt": 2}])
    assert set(made) == set(AssignmentOrder.model_fields)
    order = AssignmentOrder.model_validate(made)
    assert (order.assignment_id, order.job_id, order.attempt, order.status) == (11, 7, 2, AssignmentStatus.pending)
    assert order.plan[0].type == "open_url"


def test_orders_from_rows_wire_as_they_were_built() -> None:
    row = {**JOB, "job_id": 7, "assignment_id": 12, "device_id": 4, "serial": "pixel-2", "attempt": 1,
           "status": "delivered"}
    (order,) = orders.of_rows([row])
    (wired,) = orders.wire([order])
    assert AssignmentOrder.model_validate(wired).status == AssignmentStatus.delivered
    assert wired["plan"] == JOB["plan"], "the plan travels as stored"
