"""The state machines of jobs, assignments, devices and agents: one table each, every write checks them.

The server's store takes every SQL guard (``WHERE status = ANY(...)``) from these tables, or from a named
set next to them, so a transition that is not listed here cannot happen, whichever code path asks for it
(``tests/test_state_guards.py`` finds each status write in the store and checks it). Writing a state over
itself is no transition (a hello of an online agent, a rerun of a running assignment): the tables list
moves between different states. ``*_INITIAL`` are the states a new row may start in.
"""

from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import TypeVar

from phonefleet.protocol.artifacts import ArtifactStatus as R
from phonefleet.protocol.enums import AgentStatus as G
from phonefleet.protocol.enums import AssignmentStatus as A
from phonefleet.protocol.enums import DeviceState as D
from phonefleet.protocol.enums import FinishOutcome
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

JOB_INITIAL: frozenset[J] = frozenset({J.scheduled, J.active, J.completed})
"""A job waits (``run_at``, prerequisites) or starts at once; one with a target of 0 is stored completed."""

JOB_ACTIONS: Mapping[str, frozenset[J]] = {
    "pause": frozenset({J.scheduled, J.active}),
    "resume": frozenset({J.paused}),
    "cancel": frozenset({J.scheduled, J.active, J.paused, J.blocked}),
    "requeue": frozenset({J.active, J.paused, J.completed}),
    "edit_dependencies": frozenset({J.scheduled, J.blocked, J.paused}),
}
"""The states from which each operator action may start; every resulting move is in ``JOB_TRANSITIONS``."""

JOB_ACTIVATES_FROM: frozenset[J] = frozenset({J.scheduled})
"""Only a waiting job is activated when its time comes (a paused one waits for its resume)."""

JOB_UNBLOCKS_FROM: frozenset[J] = frozenset({J.blocked})
"""Only a blocked job waits again when its prerequisites stop failing (a paused one stays paused)."""

JOB_REQUEUE_REOPENS: frozenset[J] = frozenset({J.completed})
"""A requeue reopens a completed job; an active or paused one keeps its status."""

ASSIGNMENT_TRANSITIONS: Mapping[A, frozenset[A]] = {
    A.pending: frozenset({A.delivered, A.running, A.completed, A.failed, A.timed_out, A.paused, A.cancelled}),
    A.delivered: frozenset({A.running, A.completed, A.failed, A.timed_out, A.paused, A.cancelled}),
    A.running: frozenset({A.completed, A.failed, A.timed_out, A.cancelled}),
    A.paused: frozenset({A.pending, A.completed, A.failed, A.timed_out, A.cancelled}),
    A.completed: frozenset(),
    A.failed: frozenset({A.completed, A.timed_out}),
    A.cancelled: frozenset(),
    A.timed_out: frozenset(),
}
"""pending -> running/completed directly covers an agent whose ``delivered`` ack was lost.
paused -> an end: the phone had started the run when the job's pause reached the server (its ``started`` was
on the way); a job pause holds only unstarted work, so the run goes on and its agent's report ends it.
failed -> completed | timed_out: only a run the server declared lost, overturned by its phone (``LATE_RESULT_RULE``)."""

ASSIGNMENT_INITIAL: frozenset[A] = frozenset({A.pending})
"""A new assignment waits for its agent's ack (the column's default)."""

ASSIGNMENT_ENDINGS: frozenset[A] = frozenset(A(str(o)) for o in FinishOutcome)
"""What an ordinary result may make of an assignment: an agent's ``FinishOutcome``, a rescue's or timeout's."""

ASSIGNMENT_ENDING_FROM: frozenset[A] = frozenset({A.pending, A.delivered, A.running, A.paused})
"""Where an ordinary result may end an assignment (an agent's report, a lease rescue, a server timeout); an
ended one changes only by ``LATE_RESULTS``."""

ASSIGNMENT_RERUN_FROM: frozenset[A] = frozenset({A.pending, A.delivered, A.running})
"""A crash-interrupted run its agent starts again from step one: also (and mostly) from running."""

ASSIGNMENT_UNSTARTED: frozenset[A] = frozenset({A.pending, A.delivered, A.paused})
"""Work its phone has not begun: a retry made needless by a late result is cancelled from these."""

ASSIGNMENT_HAND_BACK_FROM: frozenset[A] = frozenset({A.pending, A.delivered})
"""Unstarted work on a phone that went away, paused or was taken goes back to its job (paused work is off it)."""

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

DEVICE_STATE_PRECEDENCE: tuple[D, ...] = (
    D.quarantined, D.recovering, D.offline, D.unhealthy, D.paused, D.busy, D.idle)
"""A phone's state is computed from facts that each change on their own, and the first that holds wins:
quarantined (set by the policy or an operator), recovering (the agent runs a rung), offline (not connected),
unhealthy (a threshold broken), paused (by anyone), busy (it holds unstarted or running work), else idle.
So a quarantined phone that drops off USB stays quarantined, and one that comes back is what its facts say."""

DEVICE_TRANSITIONS: Mapping[D, frozenset[D]] = {
    D.idle: frozenset({D.busy, D.paused, D.offline, D.unhealthy, D.quarantined, D.recovering}),
    D.busy: frozenset({D.idle, D.paused, D.offline, D.unhealthy, D.quarantined, D.recovering}),
    D.paused: frozenset({D.idle, D.busy, D.offline, D.unhealthy, D.quarantined, D.recovering}),
    D.offline: frozenset({D.idle, D.busy, D.paused, D.unhealthy, D.quarantined, D.recovering}),
    D.unhealthy: frozenset({D.idle, D.busy, D.paused, D.offline, D.quarantined, D.recovering}),
    D.recovering: frozenset({D.idle, D.busy, D.paused, D.offline, D.unhealthy, D.quarantined}),
    D.quarantined: frozenset({D.idle, D.busy, D.paused, D.offline, D.unhealthy, D.recovering}),
}
"""Every state may follow every other: ``devices.refresh_states`` computes the state from the facts
(``DEVICE_STATE_PRECEDENCE``), e.g. offline -> busy when its agent is back within its grace with the run still
on, quarantined -> busy when a phone quarantined mid-run is released before the run ends. What limits the
moves is who may change which fact: only a release or a passed self-test clears a quarantine
(``DEVICE_RELEASE_FROM``), and only an idle phone is claimed (``DEVICE_CLAIM_FROM``)."""

DEVICE_INITIAL: frozenset[D] = frozenset({D.idle, D.paused, D.offline, D.unhealthy})
"""A phone first reported has no work yet (never busy), nor a quarantine or a rung of recovery."""

DEVICE_CLAIM_FROM: frozenset[D] = frozenset({D.idle})
"""Only an idle phone is claimed; the claim marks it busy itself, in the statement that takes it."""

DEVICE_QUARANTINE_FROM: frozenset[D] = frozenset(D) - {D.quarantined}
"""Any phone may be quarantined (by the policy or by hand), whatever it is doing; a run already on it ends
as it would, its unstarted work goes back to its jobs."""

DEVICE_RELEASE_FROM: frozenset[D] = frozenset({D.quarantined})
"""Only a quarantined phone is released (by an operator, or by its passed self-test after the cool-down)."""

AGENT_TRANSITIONS: Mapping[G, frozenset[G]] = {
    G.online: frozenset({G.paused, G.offline}),
    G.paused: frozenset({G.online, G.offline}),
    G.offline: frozenset({G.online, G.paused}),
}
"""online <-> paused: the operator at the PC; -> offline: silent past its grace, or its token was retired;
offline -> online | paused: it calls in again, as it says it is."""

AGENT_INITIAL: frozenset[G] = frozenset({G.offline})
"""A registered agent is offline until its first hello (the column's default)."""

ARTIFACT_TRANSITIONS: Mapping[R, frozenset[R]] = {
    R.uploading: frozenset({R.stored, R.deleted}),
    R.stored: frozenset({R.deleted}),
    R.deleted: frozenset(),
}
"""uploading -> stored: its verified bytes arrived; -> deleted: retention, or the agent lost its copy (or the
server refused it for good); stored -> deleted: retention. A deleted artifact stays listed, with its reason."""

ARTIFACT_INITIAL: frozenset[R] = frozenset({R.uploading, R.stored, R.deleted})
"""A run's result describes it first (uploading: the column's default), or its upload comes first (stored), or
its agent reports it lost before the result lands (deleted)."""

ARTIFACT_NEVER_CAME_FROM: frozenset[R] = frozenset({R.uploading})
"""Only an artifact still expected is marked lost (one stored is kept: its verified bytes are here)."""


class TransitionError(ValueError):
    """A transition that its state machine does not allow."""

    def __init__(self, entity: str, current: str, target: str) -> None:
        super().__init__(f"{entity} cannot go from {current!r} to {target!r}")
        self.entity = entity
        self.current = current
        self.target = target


def can_transition(table: Mapping[S, frozenset[S]], current: S, target: S) -> bool:
    """A move the table lists, or a state written over itself (no move at all)."""
    return target == current or target in table[current]


def sources_of(table: Mapping[S, frozenset[S]], target: S) -> list[str]:
    """Every state from which ``target`` may be entered; used as a SQL guard."""
    return sorted(str(s) for s, targets in table.items() if target in targets)


def every_state(table: Mapping[S, frozenset[S]]) -> list[str]:
    """Every state of the table: the guard of a write whose targets each table row allows (its test checks)."""
    return sorted(str(s) for s in table)


def as_guard(states: Collection[S]) -> list[str]:
    """A named set of states as a SQL guard (``= ANY($n::text[])``)."""
    return sorted(str(s) for s in states)


def check_transition(entity: str, table: Mapping[S, frozenset[S]], current: S, target: S) -> None:
    if not can_transition(table, current, target):
        raise TransitionError(entity, str(current), str(target))


def _entity(kind: type[StrEnum]) -> str:
    return kind.__name__.removesuffix("Status").removesuffix("State").lower()


def checked_sources(table: Mapping[S, frozenset[S]], target: str, sources: Collection[str]) -> list[str]:
    """``sources`` as the SQL guard of a move to ``target`` known only at run time (an operator action);
    raises ``TransitionError`` when the table forbids a move from one of them."""
    kind = type(next(iter(table)))
    for source in sources:
        check_transition(_entity(kind), table, kind(source), kind(target))
    return sorted(str(s) for s in sources)


def checked_initial(initial: Collection[S], state: str) -> str:
    """``state`` for a new row, when ``initial`` allows it; raises ``TransitionError`` otherwise."""
    if state not in initial:
        raise TransitionError(_entity(type(next(iter(initial)))), "(new)", str(state))
    return state
