"""Typed records: what the store's queries return, one class per row shape.

Each is an ``asyncpg.Record`` subclass passed to asyncpg as ``record_class``: asyncpg's C decoder builds the
row once, as this class, so a record costs nothing more than the row it is (no copy into a dataclass or a
model on the hot path), and its columns read as typed attributes (``job.status``) that mypy checks. A
record is still a mapping, so the API renders it into a protocol model with ``dict(record.items())``.

``tests/test_records.py`` holds each class's columns to the SQL that returns it: a column a query stops
selecting, or one a class declares but no query returns, fails the suite.
"""

from datetime import datetime
from operator import itemgetter
from typing import Any, Generic, TypedDict, TypeVar

import asyncpg

T = TypeVar("T")


class Col(Generic[T]):
    """A typed column of a record. At class creation it replaces itself with a C-level getter
    (``property(itemgetter(name))``): reading ``record.name`` costs about as much as ``record["name"]``."""

    def __set_name__(self, owner: type, name: str) -> None:
        setattr(owner, name, property(itemgetter(name)))

    def __get__(self, obj: object, owner: type | None = None) -> T:  # the type mypy sees; never called
        raise AssertionError("replaced by a property in __set_name__")


def columns(record_class: type[asyncpg.Record]) -> list[str]:
    """The columns a record class declares, in order, its bases' first."""
    names: list[str] = []
    for klass in reversed(record_class.__mro__):
        names.extend(n for n, v in vars(klass).items() if isinstance(v, property) and n not in names)
    return names


# --------------------------------------------------------------------------------------------------- jobs


class JobRecord(asyncpg.Record):
    """A job's row (``jobs.JOB_COLUMNS``)."""

    id = Col[int]()
    title = Col[str]()
    plan = Col[list[dict[str, Any]]]()
    target_type = Col[str]()
    target_value = Col[int | None]()
    target_count = Col[int | None]()
    filters = Col[dict[str, Any]]()
    priority = Col[int]()
    status = Col[str]()
    timeout_sec = Col[int]()
    max_retries = Col[int]()
    run_at = Col[datetime | None]()
    depends_on = Col[list[int]]()
    assigned_count = Col[int]()
    completed_count = Col[int]()
    failed_count = Col[int]()
    retry_pending = Col[int]()
    allow_shell = Col[bool]()
    created_at = Col[datetime]()
    updated_at = Col[datetime]()
    finished_at = Col[datetime | None]()
    max_parallel = Col[int | None]()
    blocked_reason = Col[str | None]()
    schedule_id = Col[int | None]()
    scheduled_for = Col[datetime | None]()
    activated_at = Col[datetime | None]()
    on_interrupt = Col[str]()
    team_id = Col[int]()


class RenderedJob(JobRecord):
    """A job with its live counts: what ``GET /api/jobs/{id}`` shows."""

    running_count = Col[int]()
    paused_count = Col[int]()


class FillJob(JobRecord):
    """A job locked for a claim, with the distribution switch read under the same lock."""

    distribution_running = Col[bool]()


class ClaimedRow(TypedDict):
    """An assignment a claim just made. A plain dict (the single-statement claim returns them as JSON), typed
    for mypy at no cost: the fan-out makes 10,000 of them at a time."""

    id: int
    device_id: int
    agent_id: int
    attempt: int
    serial: str


class ClaimedJob(JobRecord):
    """A job after a single-statement claim: its row, the new assignments as parallel arrays, and the
    serials of the phones picked (``claim_simple`` makes the ``ClaimedRow``s)."""

    claimed_ids = Col[list[int]]()
    claimed_device_ids = Col[list[int]]()
    claimed_agent_ids = Col[list[int]]()
    picked_ids = Col[list[int]]()
    picked_serials = Col[list[str]]()


class BlockedJob(asyncpg.Record):
    id = Col[int]()
    blocked_reason = Col[str]()


class JobOutcome(asyncpg.Record):
    """A job's counters right after a batch of results was added."""

    id = Col[int]()
    status = Col[str]()
    target_count = Col[int | None]()
    assigned_count = Col[int]()
    retry_pending = Col[int]()


class JobEventRecord(asyncpg.Record):
    id = Col[int]()
    kind = Col[str]()
    actor = Col[str]()
    data = Col[dict[str, Any]]()
    created_at = Col[datetime]()


# -------------------------------------------------------------------------------------------- assignments


class AssignmentRecord(asyncpg.Record):
    """An assignment's row (``assignments.ASSIGNMENT_COLUMNS``) and its phone's serial."""

    id = Col[int]()
    job_id = Col[int]()
    device_id = Col[int]()
    agent_id = Col[int]()
    status = Col[str]()
    attempt = Col[int]()
    progress = Col[float]()
    progress_message = Col[str | None]()
    step_index = Col[int | None]()
    result = Col[dict[str, Any] | None]()
    error = Col[str | None]()
    error_code = Col[str | None]()
    lease_until = Col[datetime | None]()
    retry_at = Col[datetime | None]()
    created_at = Col[datetime]()
    started_at = Col[datetime | None]()
    finished_at = Col[datetime | None]()
    retried = Col[bool]()
    superseded = Col[bool]()
    slot_id = Col[int | None]()
    reruns = Col[int]()
    crashes = Col[list[dict[str, Any]]]()
    artifacts_pending = Col[int]()
    serial = Col[str]()


class OrderRecord(asyncpg.Record):
    """What an agent is told of an assignment (``assignments.ORDER_COLUMNS``): ``orders.fields`` reads it."""

    assignment_id = Col[int]()
    job_id = Col[int]()
    device_id = Col[int]()
    serial = Col[str]()
    title = Col[str]()
    plan = Col[list[dict[str, Any]]]()
    priority = Col[int]()
    timeout_sec = Col[int]()
    attempt = Col[int]()
    status = Col[str]()
    allow_shell = Col[bool]()
    on_interrupt = Col[str]()


class AgentOrderRecord(OrderRecord):
    """An order and the agent it is for."""

    agent_id = Col[int]()


class AssignmentRef(asyncpg.Record):
    """An assignment a statement changed, and its job."""

    id = Col[int]()
    job_id = Col[int]()


class Rerun(AssignmentRef):
    reruns = Col[int]()


class Placement(asyncpg.Record):
    """An assignment a statement changed, and where it was: its phone and agent."""

    id = Col[int]()
    device_id = Col[int]()
    agent_id = Col[int]()


class JobPlacement(Placement):
    job_id = Col[int]()


class Ended(asyncpg.Record):
    """An assignment ``assignments.finish`` ended."""

    id = Col[int]()
    job_id = Col[int]()
    device_id = Col[int]()
    agent_id = Col[int]()
    status = Col[str]()
    retry_at = Col[datetime | None]()
    started_at = Col[datetime | None]()
    finished_at = Col[datetime]()
    settled = Col[bool]()
    error_code = Col[str | None]()


# ------------------------------------------------------------------------------------------------ devices


class DeviceRecord(asyncpg.Record):
    """A phone's row (``devices.DEVICE_COLUMNS``)."""

    id = Col[int]()
    serial = Col[str]()
    agent_id = Col[int]()
    agent_name = Col[str]()
    model = Col[str | None]()
    android_version = Col[str | None]()
    tags = Col[list[str]]()
    battery = Col[int | None]()
    state = Col[str]()
    paused_by = Col[str | None]()
    pause_reason = Col[str | None]()
    last_seen_at = Col[datetime | None]()
    health_reason = Col[str | None]()
    battery_temp_c = Col[float | None]()
    quarantine_reason = Col[str | None]()
    recovering = Col[str | None]()


class DeviceDetailRecord(DeviceRecord):
    """A phone with its health and quarantine (``devices.DETAIL_COLUMNS``)."""

    health = Col[dict[str, Any] | None]()
    broken = Col[list[str]]()
    unhealthy_since = Col[datetime | None]()
    quarantined_at = Col[datetime | None]()
    quarantined_by = Col[str | None]()
    released_at = Col[datetime | None]()


class AttentionRecord(DeviceRecord):
    """A phone that needs a look, and since when (``devices.needing_attention``)."""

    since = Col[datetime | None]()


class DeviceEventRecord(asyncpg.Record):
    """One entry of a phone's timeline (``device_events.EVENT_COLUMNS``)."""

    id = Col[int]()
    device_id = Col[int]()
    kind = Col[str]()
    actor = Col[str]()
    reason = Col[str | None]()
    data = Col[dict[str, Any]]()
    created_at = Col[datetime]()


class DeviceChange(asyncpg.Record):
    """A phone whose state the facts just changed, before and after."""

    id = Col[int]()
    agent_id = Col[int]()
    serial = Col[str]()
    old_state = Col[str]()
    state = Col[str]()


# ------------------------------------------------------------------------------------------------- agents


class AgentRecord(asyncpg.Record):
    """An agent's row (``agents.AGENT_COLUMNS``)."""

    id = Col[int]()
    name = Col[str]()
    hostname = Col[str | None]()
    version = Col[str | None]()
    status = Col[str]()
    paused = Col[bool]()
    max_running = Col[int | None]()
    last_seen_at = Col[datetime | None]()
    created_at = Col[datetime]()
    connected = Col[bool]()
    device_count = Col[int]()
    token_revoked = Col[bool]()
    token_changed_at = Col[datetime | None]()
    team_id = Col[int]()


class AgentIdentity(asyncpg.Record):
    """Who a valid agent token names."""

    id = Col[int]()
    name = Col[str]()
    paused = Col[bool]()
    team_id = Col[int]()


class AdminTokenRecord(asyncpg.Record):
    id = Col[int]()
    name = Col[str]()
    created_at = Col[datetime]()
    last_used_at = Col[datetime | None]()


class PersonRecord(asyncpg.Record):
    """A person's row without the password hash (``people.COLUMNS``)."""

    id = Col[int]()
    name = Col[str]()
    role = Col[str]()
    disabled = Col[bool]()
    created_at = Col[datetime]()
    team_ids = Col[list[int]]()
    teams = Col[list[str]]()


class PersonCredentials(PersonRecord):
    """A person with the hash a sign-in checks (``people.COLUMNS`` and ``password_hash``)."""

    password_hash = Col[str]()


class SessionRecord(asyncpg.Record):
    """A live session or personal token with its enabled owner (``people.SESSION_COLUMNS``)."""

    id = Col[int]()
    person_id = Col[int]()
    person_name = Col[str]()
    role = Col[str]()
    csrf_token = Col[str | None]()
    last_used_at = Col[datetime | None]()
    team_ids = Col[list[int]]()


class PersonTokenRecord(asyncpg.Record):
    id = Col[int]()
    name = Col[str]()
    created_at = Col[datetime]()
    last_used_at = Col[datetime | None]()


# ------------------------------------------------------------------------------------ scheduling, switch


class ScheduleRecord(asyncpg.Record):
    """A schedule's row (``schedules.SCHEDULE_COLUMNS``)."""

    id = Col[int]()
    name = Col[str]()
    template = Col[dict[str, Any]]()
    cron = Col[str | None]()
    timezone = Col[str]()
    interval_sec = Col[int | None]()
    misfire_policy = Col[str]()
    enabled = Col[bool]()
    next_run_at = Col[datetime | None]()
    last_run_at = Col[datetime | None]()
    last_job_id = Col[int | None]()
    created_at = Col[datetime]()
    updated_at = Col[datetime]()
    team_id = Col[int]()


class NextDue(asyncpg.Record):
    id = Col[int]()
    name = Col[str]()
    next_run_at = Col[datetime]()


class SwitchState(asyncpg.Record):
    """The distribution switch."""

    running = Col[bool]()
    changed_at = Col[datetime]()
    changed_by = Col[str | None]()


class FillContext(asyncpg.Record):
    """What a fill pass reads first: idle phones, the switch, whether any online agent caps its phones."""

    idle = Col[int]()
    running = Col[bool]()
    agent_caps = Col[bool]()


# -------------------------------------------------------------------------------------------- artifacts


class ArtifactRecord(asyncpg.Record):
    """An artifact's row (``artifacts.ARTIFACT_COLUMNS``)."""

    id = Col[int]()
    assignment_id = Col[int]()
    device_id = Col[int | None]()
    name = Col[str]()
    kind = Col[str]()
    bytes = Col[int]()
    sha256 = Col[str]()
    step_index = Col[int | None]()
    taken_at = Col[datetime | None]()
    status = Col[str]()
    created_at = Col[datetime]()
    stored_at = Col[datetime | None]()
    deleted_at = Col[datetime | None]()
    deleted_reason = Col[str | None]()


# --------------------------------------------------------------------------------------------- evidence


class StepRow(asyncpg.Record):
    """A run's step as its agent recorded it (``steps.STEP_COLUMNS``)."""

    step_index = Col[int]()
    type = Col[str]()
    name = Col[str | None]()
    started_at = Col[datetime | None]()
    finished_at = Col[datetime | None]()
    outcome = Col[str]()
    exit_code = Col[int | None]()
    output_tail = Col[str | None]()
    error = Col[str | None]()


class RunEvidence(asyncpg.Record):
    """What a run's timeline needs of the run (``steps.run_of``)."""

    status = Col[str]()
    crashes = Col[list[dict[str, Any]] | None]()
    step_index = Col[int | None]()
    plan = Col[list[dict[str, Any]] | None]()


# --------------------------------------------------------------------------------------------------- teams


class TeamRecord(asyncpg.Record):
    """A team with its members' names and its agent count (``teams.TEAM_COLUMNS``)."""

    id = Col[int]()
    name = Col[str]()
    created_at = Col[datetime]()
    members = Col[list[str]]()
    agents = Col[int]()


class TeamOwnings(asyncpg.Record):
    """How many agents, jobs and schedules belong to a team (``teams.owned``)."""

    agents = Col[int]()
    jobs = Col[int]()
    schedules = Col[int]()


# --------------------------------------------------------------------------------------------------- audit


class AuditRecord(asyncpg.Record):
    """One entry of the audit trail (``audit.AUDIT_COLUMNS``)."""

    id = Col[int]()
    at = Col[datetime]()
    actor_kind = Col[str]()
    actor_id = Col[str | None]()
    actor_name = Col[str]()
    team_id = Col[int | None]()
    action = Col[str]()
    object_kind = Col[str]()
    object_id = Col[str | None]()
    before = Col[dict[str, Any] | None]()
    after = Col[dict[str, Any] | None]()
    via = Col[str]()
    address = Col[str | None]()
