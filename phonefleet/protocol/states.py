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
    A.failed: frozenset(),
    A.cancelled: frozenset(),
    A.timed_out: frozenset(),
}
"""pending -> running/completed directly covers an agent whose ``delivered`` ack was lost."""

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
