"""Socket.IO namespaces, event names and payloads.

Payloads that can concern many assignments carry lists, so a fleet of thousands of phones costs a
handful of messages per job rather than one per phone. The polling fallback carries the very same
payloads (``POST /api/agent/events``), so server and agent have one code path per event.
"""

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from phonefleet.protocol import health
from phonefleet.protocol.artifacts import MAX_ARTIFACTS_PER_RUN, ArtifactInfo
from phonefleet.protocol.enums import (
    AssignmentStatus,
    FinishOutcome,
    JobStatus,
    OnInterrupt,
    PausedBy,
    PauseScope,
)
from phonefleet.protocol.health import HealthThresholds
from phonefleet.protocol.models import Device, Id
from phonefleet.protocol.plan import AnyStep
from phonefleet.protocol.timeline import MAX_CRASHES, MAX_STEPS, Crash, StepRecord
from phonefleet.protocol.times import UtcDatetime

AGENT_NAMESPACE: Final = "/agent"
DASHBOARD_NAMESPACE: Final = "/dashboard"

# agent -> server
AGENT_HELLO: Final = "agent:hello"
AGENT_HEARTBEAT: Final = "agent:heartbeat"
AGENT_PING: Final = "agent:ping"
"""Socket only: the probe an agent sends when its socket has been quiet, to notice a half-open link in
seconds. The server answers ``{"ok": true}`` at once, without touching the database."""
DEVICE_UPDATE: Final = "device:update"
ASSIGNMENT_STARTED: Final = "assignment:started"
ASSIGNMENT_PROGRESS: Final = "assignment:progress"
ASSIGNMENT_FINISHED: Final = "assignment:finished"
AGENT_PAUSE: Final = "agent:pause"
AGENT_RESUME: Final = "agent:resume"
ARTIFACT_UPLOAD: Final = "artifact:upload"
"""Not a socket event: the agent's outbox entry for a file, sent as ``PUT /api/agent/artifacts/{id}/{name}``."""

# server -> agent
JOB_ASSIGN: Final = "job:assign"
JOB_PAUSED: Final = "job:paused"
JOB_RESUMED: Final = "job:resumed"
JOB_CANCELLED: Final = "job:cancelled"
DEVICE_PAUSE: Final = "device:pause"
DEVICE_RESUME: Final = "device:resume"

# server -> dashboard
JOB_STATUS_UPDATE: Final = "job:status:update"
JOB_PROGRESS: Final = "job:progress"
DASHBOARD_DEVICE_UPDATE: Final = "device:update"
FLEET_STATS: Final = "fleet:stats"
PAUSE_CHANGED: Final = "pause:changed"
AGENT_UPDATE: Final = "agent:update"
JOB_DELETED: Final = "job:deleted"
SCHEDULER_UPDATE: Final = "scheduler:update"
"""Distribution was stopped or started (payload: ``SchedulerSwitch``)."""
SCHEDULE_CHANGED: Final = "schedule:changed"
"""A schedule was created, edited, deleted or fired (payload: ``ScheduleChanged``)."""

# dashboard -> server
DASHBOARD_PING: Final = "dashboard:ping"
"""The dashboard's heartbeat (about once a second): the server acks ``{"ok": true}`` at once, without touching the
database, so a page notices within seconds that it lost the server even while its socket still looks open."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- agent -> server


class DeviceReport(_Payload):
    """What an agent knows of one phone."""

    serial: str = Field(min_length=1, max_length=200)
    online: bool = True
    healthy: bool = True
    health_reason: str | None = Field(default=None, max_length=500)
    model: str | None = Field(default=None, max_length=200)
    android_version: str | None = Field(default=None, max_length=50)
    battery: int | None = Field(default=None, ge=0, le=100)
    screen_on: bool | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    adb_state: str | None = Field(default=None, max_length=100, description=(
        "adb's word for the phone as track-devices gives it: device, offline, unauthorized, recovery, "
        "no permissions ...; left out when adb no longer lists it."))
    boot_completed: bool | None = Field(default=None, description="sys.boot_completed is 1.")
    battery_temp_c: float | None = Field(default=None, ge=-50, le=150)
    charging: bool | None = Field(default=None, description="AC, USB or wireless powered, or charging.")
    screen_locked: bool | None = Field(default=None, description="The keyguard is showing.")
    data_free_mb: int | None = Field(default=None, ge=0, le=1_000_000_000, description="Free space on /data.")
    probe_ms: float | None = Field(default=None, ge=0, le=3_600_000, description="The health probe's round trip.")
    broken: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=20,
        description="One entry per health threshold the phone fails (health_reason joins them with '; ').")


def _unique_serials(devices: list[DeviceReport]) -> list[DeviceReport]:
    """One report per phone: the store upserts a batch in one statement, which cannot touch a row twice."""
    seen: set[str] = set()
    for d in devices:
        if d.serial in seen:
            raise ValueError(f"serial {d.serial!r} is reported twice")
        seen.add(d.serial)
    return devices


class AgentHello(_Payload):
    version: str | None = Field(default=None, max_length=100)
    hostname: str | None = Field(default=None, max_length=255)
    devices: list[DeviceReport] = Field(default_factory=list, max_length=10_000)
    paused: bool = False
    paused_serials: list[str] = Field(default_factory=list, max_length=10_000)
    paused_job_ids: list[Id] = Field(default_factory=list, max_length=10_000)
    max_running: int | None = Field(
        default=None, ge=1, le=100_000, strict=True,
        description="Phones that may run at once on this PC, as its operator set it (USB hub or CPU limits); "
                    "when given it replaces the agent's limit on the server. Left out: the server's stays.")

    _devices_unique = field_validator("devices")(_unique_serials)


class DeviceUpdate(_Payload):
    devices: list[DeviceReport] = Field(max_length=10_000)
    full: bool = Field(default=False, description="The list is every phone the agent has; others are gone.")

    _devices_unique = field_validator("devices")(_unique_serials)


class Heartbeat(_Payload):
    running: list[Id] = Field(default_factory=list, description="Assignment ids running now.")


class StartedItem(_Payload):
    assignment_id: Id
    at: UtcDatetime | None = None
    rerun_after_step: int | None = Field(
        default=None, ge=0, le=10_000,
        description="This start runs the plan again from its first step after an agent crash interrupted it on "
                    "this step (the job's on_interrupt is rerun); the server records the rerun.")


class AssignmentStarted(_Payload):
    items: list[StartedItem] = Field(min_length=1, max_length=10_000)


class ProgressItem(_Payload):
    assignment_id: Id
    step_index: int = Field(ge=0, le=10_000)
    step_count: int = Field(ge=1, le=10_000)
    progress: float = Field(ge=0, le=1)
    message: str | None = Field(default=None, max_length=1000)


class AssignmentProgress(_Payload):
    items: list[ProgressItem] = Field(min_length=1, max_length=10_000)


class FinishedItem(_Payload):
    assignment_id: Id
    outcome: FinishOutcome
    error: str | None = Field(default=None, max_length=10_000)
    error_code: str | None = Field(default=None, max_length=100)
    retryable: bool = True
    result: dict[str, Any] | None = None
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    steps: list[StepRecord] = Field(default_factory=list, max_length=MAX_STEPS,
                                    description="The plan steps the run reached (``protocol.timeline``).")
    crashes: list[Crash] = Field(default_factory=list, max_length=MAX_CRASHES,
                                 description="Crashes and ANRs in the run's logcat.")
    artifacts: list[ArtifactInfo] = Field(
        default_factory=list, max_length=MAX_ARTIFACTS_PER_RUN,
        description="The run's files, described before their bytes are sent: the server lists them as uploading "
                    "until each arrives verified.")


class AssignmentFinished(_Payload):
    results: list[FinishedItem] = Field(min_length=1, max_length=10_000)


class PauseRequest(_Payload):
    """``agent:pause`` / ``agent:resume``: the whole agent, one phone, or one job on this agent."""

    scope: PauseScope
    serial: str | None = None
    job_id: Id | None = None


class Ack(BaseModel):
    """Every agent event is acknowledged with one of these."""

    ok: bool
    error: dict[str, Any] | None = None
    data: dict[str, Any] | None = None

    @classmethod
    def refused(cls, code: str, message: str) -> "Ack":
        """A refusal, its error shaped as the REST API's (``code``, ``message``, ``details``)."""
        return cls(ok=False, error={"code": code, "message": message, "details": []})


# ---------------------------------------------------------------- server -> agent


class AssignmentOrder(BaseModel):
    """One assignment as an agent needs it to run the plan on one phone."""

    assignment_id: int
    job_id: int
    device_id: int
    serial: str
    title: str
    plan: list[AnyStep] = Field(description="The agent fails a step type it does not know.")
    priority: int
    timeout_sec: int
    attempt: int
    status: AssignmentStatus
    allow_shell: bool = Field(default=False, description="The job's creator holds the shell right.")
    on_interrupt: OnInterrupt = Field(default=OnInterrupt.fail,
                                      description="What the agent does with this run if it crashes mid-plan.")


class OrderJob(BaseModel):
    """What every order of one job shares (``AssignmentOrder``'s job fields): a ``job:assign`` to an agent that
    takes plans once carries it once per job, however many of that job's phones the agent drives."""

    job_id: int
    title: str
    plan: list[AnyStep] = Field(description="The agent fails a step type it does not know.")
    priority: int
    timeout_sec: int
    allow_shell: bool = False
    on_interrupt: OnInterrupt = OnInterrupt.fail


class OrderSlot(BaseModel):
    """One phone's part of an order (``AssignmentOrder``'s own fields); its job's fields are in ``jobs``."""

    assignment_id: int
    job_id: int
    device_id: int
    serial: str
    attempt: int
    status: AssignmentStatus


PLANS_ONCE: Final = "plans_once"
"""An agent feature, named in its connect ``auth`` (``{"token": ..., "features": ["plans_once"]}``): it reads a
``job:assign`` whose orders come as ``jobs`` + ``slots`` (each job's plan once) instead of whole ``assignments``.
An agent that does not name it gets whole orders, as before."""


class JobAssign(BaseModel):
    assignments: list[AssignmentOrder] = Field(default_factory=list, description="Whole orders (agents without "
                                               "the plans_once feature, and re-sends).")
    jobs: list[OrderJob] = Field(default_factory=list, max_length=100_000,
                                 description="The jobs of ``slots``, each once (plans_once).")
    slots: list[OrderSlot] = Field(default_factory=list, max_length=100_000,
                                   description="Orders without their job's fields, which are in ``jobs``.")

    @model_validator(mode="after")
    def _slots_have_jobs(self) -> "JobAssign":
        known = {j.job_id for j in self.jobs}
        missing = sorted({s.job_id for s in self.slots} - known)
        if missing:
            raise ValueError(f"slots name jobs not in jobs: {missing[:10]}")
        return self

    def orders(self) -> list[AssignmentOrder]:
        """Every order whole: ``assignments``, then each slot joined with its job (validated once per job)."""
        jobs = {j.job_id: j.__dict__ for j in self.jobs}
        return [*self.assignments,
                *(AssignmentOrder.model_construct(**{**jobs[s.job_id], **s.__dict__}) for s in self.slots)]


class JobAssignAck(BaseModel):
    received: list[Id] = Field(max_length=100_000)


class RefusedDevice(BaseModel):
    """A phone this agent reported that another connected agent already drives (two agents on one adb
    server, or one network phone seen from two PCs): the server leaves it to the first."""

    serial: str
    held_by: str = Field(description="The name of the agent that drives the phone.")


class HelloAck(BaseModel):
    agent_id: int
    agent_name: str
    assignments: list[AssignmentOrder]
    paused: bool
    paused_serials: list[str]
    paused_job_ids: list[int]
    heartbeat_sec: float
    poll_sec: float
    refused_devices: list[RefusedDevice] = Field(default_factory=list)
    thresholds: HealthThresholds | None = Field(default=None, description="The fleet's health thresholds; "
                                                "an agent's own settings override them one by one.")


class DeviceUpdateAck(BaseModel):
    devices: int = Field(description="Phones recorded.")
    handed_back: list[int] = Field(description="Unstarted assignments given back because their phone went away.")
    refused_devices: list[RefusedDevice] = Field(default_factory=list)


class JobControl(BaseModel):
    """``job:paused`` / ``job:resumed`` / ``job:cancelled``."""

    job_id: int
    assignment_ids: list[int]
    abort_running: bool = False


class DeviceControl(BaseModel):
    """``device:pause`` / ``device:resume``."""

    device_id: int
    serial: str


class AgentPoll(BaseModel):
    """``GET /api/agent/assignments``: the agent's open assignments, which it reconciles against."""

    agent_id: int
    assignments: list[AssignmentOrder]
    paused: bool
    paused_serials: list[str]
    paused_job_ids: list[int]
    poll_sec: float
    hello_required: bool = Field(default=False, description="The server had considered the agent gone.")


class AgentEvent(BaseModel):
    event: str
    data: Any = Field(default=None, description="The event's payload; checked per event, like on the socket.")


class AgentEventBatch(_Payload):
    events: list[AgentEvent] = Field(min_length=1, max_length=1_000)


class AgentEventResults(BaseModel):
    results: list[Ack]


# ---------------------------------------------------------------- server -> dashboard


class JobStatusUpdate(BaseModel):
    job_id: int
    title: str
    status: JobStatus
    priority: int
    target_count: int | None
    assigned_count: int
    completed_count: int
    failed_count: int
    running_count: int
    paused_count: int
    updated_at: datetime
    blocked_reason: str | None = None
    max_parallel: int | None = None


class DeviceUpdateBroadcast(BaseModel):
    devices: list[Device]


class FleetStats(BaseModel):
    agents_online: int
    connected_devices: int
    devices: dict[str, int]


class PauseChanged(BaseModel):
    source: PausedBy
    paused: bool
    scope: PauseScope
    agent_id: int | None = None
    agent_name: str | None = None
    serial: str | None = None
    device_id: int | None = None
    job_id: int | None = None


class JobDeleted(BaseModel):
    job_id: int


class AgentUpdate(BaseModel):
    agent_id: int
    name: str
    status: str
    paused: bool
    connected: bool
    team_id: int = Field(description="The team it and its phones belong to (it changes when an admin moves it).")


AGENT_EVENT_MODELS: dict[str, type[BaseModel]] = {
    AGENT_HELLO: AgentHello,
    AGENT_HEARTBEAT: Heartbeat,
    DEVICE_UPDATE: DeviceUpdate,
    ASSIGNMENT_STARTED: AssignmentStarted,
    ASSIGNMENT_PROGRESS: AssignmentProgress,
    ASSIGNMENT_FINISHED: AssignmentFinished,
    AGENT_PAUSE: PauseRequest,
    AGENT_RESUME: PauseRequest,
    health.DEVICE_RECOVERY: health.RecoveryReport,
    health.DEVICE_SELFTEST_RESULT: health.SelftestResult,
}
"""Every event an agent may send, with the model that validates its payload."""

JobControlKind = Literal["paused", "resumed", "cancelled"]


class SchedulerSwitch(_Payload):
    running: bool
    changed_at: datetime
    changed_by: str | None


class ScheduleChanged(_Payload):
    schedule_id: int
    deleted: bool = False
