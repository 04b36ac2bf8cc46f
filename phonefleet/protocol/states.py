"""The state machines of jobs, assignments and devices: one table each, every write checks them.

The server's store derives its SQL guards (``WHERE status = ANY(...)``) from these tables, so a
transition that is not listed here cannot happen, whichever code path asks for it.
"""

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from phonefleet.protocol.enums import AssignmentStatus as A
from phonefleet.protocol.enums import DeviceState as D
from phonefleet.protocol.enums import JobStatus as J

S = TypeVar("S", bound=StrEnum)

JOB_TRANSITIONS: Mapping[J, frozenset[J]] = {
    J.scheduled: frozenset({J.active, J.paused, J.cancelled, J.blocked}),
    J.active: frozenset({J.paused, J.completed, J.cancelled}),
    J.paused: frozenset({J.active, J.scheduled, J.cancelled}),
    J.completed: frozenset({J.active}),
    J.cancelled: frozenset(),
    J.blocked: frozenset({J.scheduled, J.cancelled}),
}
"""paused -> scheduled: resuming a job that was paused before it ever ran sends it back to wait.
completed -> active: only a requeue (``JOB_ACTIONS``); blocked -> scheduled: a prerequisite was requeued."""

JOB_ACTIONS: Mapping[str, frozenset[J]] = {
    "pause": frozenset({J.scheduled, J.active}),
    "resume": frozenset({J.paused}),
    "cancel": frozenset({J.scheduled, J.active, J.paused, J.blocked}),
    "requeue": frozenset({J.active, J.paused, J.completed}),
    "edit_dependencies": frozenset({J.scheduled, J.blocked, J.paused}),
}
"""The states from which each operator action may start; every resulting move is in ``JOB_TRANSITIONS``."""

ASSIGNMENT_TRANSITIONS: Mapping[A, frozenset[A]] = {
    A.pending: frozenset({A.delivered, A.running, A.completed, A.failed, A.timed_out, A.paused, A.cancelled}),
    A.delivered: frozenset({A.running, A.completed, A.failed, A.timed_out, A.paused, A.cancelled}),
    A.running: frozenset({A.completed, A.failed, A.timed_out, A.cancelled}),
    A.paused: frozenset({A.pending, A.cancelled}),
    A.completed: frozenset(),
    A.failed: frozenset({A.completed, A.timed_out}),
    A.cancelled: frozenset(),
    A.timed_out: frozenset(),
}
"""pending -> running/completed directly covers an agent whose ``delivered`` ack was lost.
failed -> completed | timed_out: only a run the server declared lost, overturned by its phone (``LATE_RESULT_RULE``)."""

ASSIGNMENT_ENDING_FROM: frozenset[A] = frozenset({A.pending, A.delivered, A.running, A.paused})
"""Where an ordinary result may end an assignment (an agent's report, a lease rescue, a server timeout)."""

LOST_ERROR_CODE = "lost"

LATE_RESULTS: Mapping[A, frozenset[A]] = {A.failed: frozenset({A.completed, A.failed, A.timed_out})}
"""What a late result may do to an assignment the server ended as ``failed`` with ``LOST_ERROR_CODE``."""

LATE_RESULT_RULE = """
A late result wins over the server's guess. When an agent is silent past its grace, the server ends its
open assignments as failed with error_code 'lost' and, within max_retries, makes a retry for each slot.
If the phone that ran such an assignment later reports its result (from the same agent, out of its
durable outbox), that result replaces the guess:
- failed or timed_out: the assignment keeps its place in the accounting (it was counted as a failure or
  its retry is under way); only the outcome, error and times become the phone's own.
- completed: the assignment becomes completed, and its slot is settled exactly once:
  - the slot already has a completed attempt (its retry completed first): the late result is kept as
    history and nothing is counted again;
  - a retry of the slot is waiting for its backoff: it is dropped (retry_pending - 1, completed + 1);
  - a retry of the slot is made but not started (pending, delivered, paused): it is cancelled with
    error_code 'superseded' and its phone freed (completed + 1);
  - a retry of the slot is running: it runs on, and its own end is kept as history (completed + 1 now);
  - the slot ended failed for good, by the guess or by a failed retry: failed - 1, completed + 1.
A retry that ends after its slot was settled this way is history too: it is not counted and not retried.
The agent's own results never overturn anything else: a server-detected timeout, a cancel, or a result
of another agent stay as they are.
"""

DEVICE_TRANSITIONS: Mapping[D, frozenset[D]] = {
    D.idle: frozenset({D.busy, D.paused, D.offline, D.unhealthy}),
    D.busy: frozenset({D.idle, D.paused, D.offline, D.unhealthy}),
    D.paused: frozenset({D.idle, D.busy, D.offline, D.unhealthy}),
    D.offline: frozenset({D.idle, D.busy, D.paused, D.unhealthy}),
    D.unhealthy: frozenset({D.idle, D.busy, D.paused, D.offline}),
}


class TransitionError(ValueError):
    """A transition that its state machine does not allow."""

    def __init__(self, entity: str, current: str, target: str) -> None:
        super().__init__(f"{entity} cannot go from {current!r} to {target!r}")
        self.entity = entity
        self.current = current
        self.target = target


def can_transition(table: Mapping[S, frozenset[S]], current: S, target: S) -> bool:
    return target in table[current]


def sources_of(table: Mapping[S, frozenset[S]], target: S) -> list[str]:
    """Every state from which ``target`` may be entered; used as a SQL guard."""
    return sorted(str(s) for s, targets in table.items() if target in targets)


def check_transition(entity: str, table: Mapping[S, frozenset[S]], current: S, target: S) -> None:
    if not can_transition(table, current, target):
        raise TransitionError(entity, str(current), str(target))
