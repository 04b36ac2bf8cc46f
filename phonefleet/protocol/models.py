"""Resources and REST bodies: what the server stores, answers and accepts."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from phonefleet.protocol import recurrence
from phonefleet.protocol.enums import (
    AgentStatus,
    AssignmentStatus,
    BatchAction,
    DeviceState,
    JobStatus,
    MisfirePolicy,
    OnInterrupt,
    PausedBy,
    RecoveryRung,
    RequeueScope,
    TargetType,
)
from phonefleet.protocol.plan import Step
from phonefleet.protocol.timeline import MAX_CRASHES, Crash
from phonefleet.protocol.times import UtcDatetime

Id = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
"""A database id: a positive bigint, and a JSON integer: ``"12"``, ``12.0`` and ``true`` are not ids."""


def _present(value: Any) -> Any:
    """Patch fields: left out means unchanged; an explicit null would mean "no value", which these cannot have."""
    if value is None:
        raise ValueError("may be left out but not null")
    return value


"""A timestamp, taken as UTC when naive."""


class _Body(BaseModel):
    """Request bodies reject unknown fields, so a typo is a 422 rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class _Resource(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobFilters(_Body):
    """Which phones may take a job; every given criterion must match."""

    models: list[str] | None = Field(default=None, max_length=100)
    android_versions: list[str] | None = Field(default=None, max_length=100)
    tags: list[str] | None = Field(default=None, max_length=50, description="The phone must carry all of them.")
    agents: list[str] | None = Field(default=None, max_length=500, description="Agent names.")
    serials: list[str] | None = Field(default=None, max_length=20_000)


class JobTemplate(_Body):
    """What a job is, apart from when it runs: also the template a schedule fires.

    Integers are strict: ``true``, ``"5"`` and ``5.0`` are wrong types, not 1 and 5.
    """

    title: str = Field(min_length=1, max_length=200)
    plan: list[Step] = Field(min_length=1, max_length=200)
    target_type: TargetType
    target_value: int | None = Field(
        default=None,
        validate_default=True,
        ge=0,
        le=1_000_000,
        strict=True,
        description="Percentage (1-100) or phone count (>= 1); ignored for all_devices.",
    )
    priority: int = Field(default=0, ge=-1000, le=1000, strict=True)
    filters: JobFilters = Field(default_factory=JobFilters)
    timeout_sec: int = Field(default=3600, ge=1, le=7 * 86_400, strict=True, description="Per assignment.")
    max_retries: int = Field(default=0, ge=0, le=100, strict=True)
    max_parallel: int | None = Field(default=None, ge=1, le=1_000_000, strict=True,
                                     description="At most this many phones run the job at once.")
    on_interrupt: OnInterrupt = Field(
        default=OnInterrupt.fail,
        description="A run cut short by an agent crash: 'fail' reports it (error_code interrupted) and retries it "
                    "per max_retries on any eligible phone; 'rerun' runs it again from its first step on the same "
                    "phone, counted in the assignment's reruns. A plan that installs or runs shell never runs twice "
                    "without a record of both.")

    @field_validator("target_value")
    @classmethod
    def _target_value_in_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        target_type = info.data.get("target_type")
        if target_type is TargetType.percentage and (value is None or not 1 <= value <= 100):
            raise ValueError("a percentage must be between 1 and 100")
        if target_type is TargetType.device_count and (value is None or not 1 <= value <= 1_000_000):
            raise ValueError("a device count must be at least 1")
        return value


class JobCreate(JobTemplate):
    run_at: UtcDatetime | None = Field(default=None, description="Stays scheduled until then.")
    depends_on: list[Id] = Field(default_factory=list, max_length=100,
                                 description="Starts once every one of these jobs (of the same team) completed "
                                             "without failures.")
    team_id: Id | None = Field(default=None, description="The team it belongs to; by default the caller's team "
                                                         "(a person in several teams must name one; an admin's "
                                                         "default is the team 'default', id 1).")


class JobPatch(_Body):
    status: Literal["paused", "active", "cancelled"] | None = None
    title: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int | None = Field(default=None, ge=-1000, le=1000, strict=True)
    timeout_sec: int | None = Field(default=None, ge=1, le=7 * 86_400, strict=True)
    max_retries: int | None = Field(default=None, ge=0, le=100, strict=True)
    max_parallel: int | None = Field(default=None, ge=1, le=1_000_000, strict=True,
                                     description="null removes the limit.")
    depends_on: list[Id] | None = Field(default=None, max_length=100,
                                        description="Only while the job waits (scheduled, blocked or paused).")

    _not_null = field_validator("title", "priority", "timeout_sec", "max_retries", "depends_on")(_present)


class Job(_Resource):
    id: int
    title: str
    plan: list[Step | dict[str, Any]] = Field(
        description="As stored; a step type this server no longer knows is shown as it was.")
    target_type: TargetType
    target_value: int | None
    target_count: int | None = Field(description="Resolved phone count; null until the job is activated.")
    filters: JobFilters
    priority: int
    status: JobStatus
    timeout_sec: int
    max_retries: int
    max_parallel: int | None = None
    on_interrupt: OnInterrupt = OnInterrupt.fail
    run_at: datetime | None
    depends_on: list[int]
    blocked_reason: str | None = None
    schedule_id: int | None = None
    scheduled_for: datetime | None = Field(default=None, description="The schedule's firing that made this job.")
    team_id: int = Field(description="The team the job belongs to: it runs only on that team's phones, "
                                                "and only its people see it.")
    assigned_count: int
    completed_count: int
    failed_count: int
    running_count: int = 0
    paused_count: int = 0
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None = None
    finished_at: datetime | None = None


class JobList(BaseModel):
    items: list[Job]
    total: int
    limit: int
    offset: int


class Assignment(_Resource):
    id: int
    job_id: int
    device_id: int
    agent_id: int
    serial: str | None = None
    status: AssignmentStatus
    attempt: int
    progress: float
    progress_message: str | None = Field(default=None, description="What the running step is doing, as its agent's "
                                         "last progress report said (\"step 2/3 install_apk: pushing 5.0 of 12.0 MB "
                                         "· 4 s\").")
    step_index: int | None
    result: dict[str, Any] | None
    error: str | None
    error_code: str | None
    lease_until: datetime | None
    retry_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retried: bool = Field(default=False, description="Failed, and another phone took over its slot.")
    superseded: bool = Field(default=False, description="Ended, then requeued: a newer run replaces it.")
    slot_id: int | None = Field(default=None, description="The slot's first attempt, on a retry (null on a first "
                                                          "attempt: its own id names the slot).")
    reruns: int = Field(default=0, description="Times the run started again from its first step after an agent "
                                               "crash interrupted it (on_interrupt: rerun).")
    crashes: list[Crash] = Field(default_factory=list, max_length=MAX_CRASHES,
                                 description="Crashes and ANRs its phone's logcat showed during the run.")
    artifacts_pending: int = Field(default=0, description="The run's artifacts whose bytes are still uploading.")


class AssignmentList(BaseModel):
    items: list[Assignment]
    total: int


class Device(_Resource):
    id: int
    serial: str
    agent_id: int
    agent_name: str | None = None
    model: str | None
    android_version: str | None
    tags: list[str]
    battery: int | None
    state: DeviceState
    paused_by: PausedBy | None
    pause_reason: str | None = Field(default=None, description='Why it is paused, when it says ("in use by '
                                                               'NAME" while an operator controls it).')
    last_seen_at: datetime | None
    health_reason: str | None = Field(default=None, description="Why it is unhealthy (the thresholds broken).")
    battery_temp_c: float | None = None
    quarantine_reason: str | None = None
    recovering: RecoveryRung | None = Field(default=None, description="The recovery rung running on it now.")


class DevicePatch(_Body):
    paused: bool = Field(strict=True, description='A JSON boolean; "yes" and 1 are wrong types.')


class Agent(_Resource):
    id: int
    name: str
    hostname: str | None
    version: str | None
    status: AgentStatus
    paused: bool
    max_running: int | None = Field(default=None, description="Phones that may run at once on this agent.")
    connected: bool = Field(description="Seen within the grace period, by socket or by polling.")
    device_count: int = 0
    last_seen_at: datetime | None
    created_at: datetime
    token_revoked: bool = Field(default=False, description="Its token was revoked: it cannot connect until "
                                                           "rotated (POST /api/agents/{id}/token).")
    token_changed_at: datetime | None = Field(default=None, description="When its token was last revoked or "
                                                                        "rotated.")
    team_id: int = Field(description="The team it and its phones belong to.")


class AgentPatch(_Body):
    """Give at least one field; those left out stay as they are."""

    max_running: int | None = Field(default=None, strict=True, ge=1, le=100_000,
                                    description="Phones that may run at once on it; null removes the limit.")
    team_id: int | None = Field(default=None, strict=True, ge=1, le=2**63 - 1,
                                description="Move it, and so its phones, to this team: from then on they run "
                                            "only that team's jobs (what runs now finishes).")


class AgentCreated(BaseModel):
    agent: Agent
    token: str = Field(description="Shown once; the server keeps only its hash.")


TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class AdminToken(_Resource):
    """A named admin token (never its secret). ``env`` is the servers' ``PHONEFLEET_ADMIN_TOKEN``."""

    name: str
    source: Literal["stored", "env"] = Field(description="stored: made by the server or `admins add`, "
                                                         "revocable; env: from the environment, not revocable here.")
    created_at: datetime | None = None
    last_used_at: datetime | None = Field(default=None, description="Recorded at most once a minute.")


class AgentCreate(_Body):
    """Register an agent (``POST /api/agents``, ``phonefleet-server agents add NAME``)."""

    name: str = Field(min_length=1, max_length=100, pattern=TOKEN_NAME_PATTERN)


class AdminTokenCreate(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=TOKEN_NAME_PATTERN,
                      description="Unique; 'env' is reserved for the environment's token.")


class AdminTokenCreated(BaseModel):
    admin: AdminToken
    token: str = Field(description="Shown once; the server keeps only its hash.")


class DurationStats(BaseModel):
    count: int
    avg_sec: float | None
    p95_sec: float | None


class Stats(BaseModel):
    jobs: dict[str, int]
    assignments: dict[str, int]
    devices: dict[str, int]
    agents: dict[str, int]
    connected_devices: int
    window_sec: int = Field(default=86_400, description="Rates and times cover assignments ended this recently.")
    success_rate: float | None = Field(
        default=None, description="completed / (completed + failed + timed out), retried attempts included.")
    run_time: DurationStats | None = Field(default=None, description="started -> finished, completed only.")
    queue_wait: DurationStats | None = Field(
        default=None, description="job opened for distribution -> the phone started it.")


class RequeueBody(_Body):
    scope: RequeueScope = RequeueScope.failed


class RequeueResult(BaseModel):
    job: Job
    requeued: int = Field(description="Slots that will run again.")


class JobBatchFilter(_Body):
    status: list[JobStatus] | None = Field(default=None, max_length=10)
    search: str | None = Field(default=None, max_length=200)
    schedule_id: Id | None = None


class JobBatch(_Body):
    """Exactly one of ``ids`` and ``filter``."""

    action: BatchAction
    ids: list[Id] | None = Field(default=None, min_length=1, max_length=1000)
    filter: JobBatchFilter | None = Field(default=None, validate_default=True)

    @field_validator("filter")
    @classmethod
    def _one_selector(cls, value: JobBatchFilter | None, info: ValidationInfo) -> JobBatchFilter | None:
        if "ids" in info.data and (value is None) == (info.data["ids"] is None):
            raise ValueError("give either ids or filter")
        return value


class BatchFailure(BaseModel):
    id: int
    code: str = Field(description="not_found or conflict")
    message: str


class JobBatchResult(BaseModel):
    action: BatchAction
    changed: list[int]
    failed: list[BatchFailure]


class ScheduleCreate(_Body):
    """A job template fired by a cron expression (in ``timezone``) or every ``interval_sec``."""

    name: str = Field(min_length=1, max_length=200)
    template: JobTemplate
    cron: str | None = Field(default=None, max_length=200,
                             description="Five fields (minute hour day month weekday), six with seconds "
                                         "first, or @hourly/@daily/...")
    timezone: str = Field(default="UTC", max_length=64, description="IANA name, e.g. Europe/Berlin.")
    interval_sec: int | None = Field(default=None, ge=1, le=366 * 86_400, strict=True, validate_default=True)
    misfire_policy: MisfirePolicy = MisfirePolicy.run_once
    enabled: bool = Field(default=True, strict=True)
    team_id: Id | None = Field(default=None, description="The team it belongs to; by default the caller's team "
                                                         "(a person in several teams must name one; an admin's "
                                                         "default is the team 'default', id 1).")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else recurrence.check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        recurrence.zone(value)
        return value

    @field_validator("interval_sec", mode="after")
    @classmethod
    def _one_rule(cls, value: int | None, info: ValidationInfo) -> int | None:
        if "cron" not in info.data:  # the cron field itself was wrong: that is the error to report
            return value
        if (info.data["cron"] is None) == (value is None):
            raise ValueError("give either cron or interval_sec")
        return value


class SchedulePatch(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    template: JobTemplate | None = None
    cron: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    interval_sec: int | None = Field(default=None, ge=1, le=366 * 86_400, strict=True)
    misfire_policy: MisfirePolicy | None = None
    enabled: bool | None = Field(default=None, strict=True)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else recurrence.check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        recurrence.zone(_present(value))
        return value

    _not_null = field_validator("name", "template", "misfire_policy", "enabled")(_present)


class Schedule(_Resource):
    id: int
    name: str
    template: JobTemplate
    cron: str | None
    timezone: str
    interval_sec: int | None
    misfire_policy: MisfirePolicy
    enabled: bool
    next_run_at: datetime | None = Field(description="null while disabled.")
    last_run_at: datetime | None
    last_job_id: int | None
    team_id: int = Field(description="Its firings make jobs of this team.")
    created_at: datetime
    updated_at: datetime


class ScheduleList(BaseModel):
    items: list[Schedule]
    total: int


class ScheduleDue(BaseModel):
    id: int
    name: str
    next_run_at: datetime


class SchedulerStatus(BaseModel):
    running: bool = Field(description="false: no new assignments anywhere; running work finishes.")
    changed_at: datetime
    changed_by: str | None
    jobs: dict[str, int]
    assignments: dict[str, int] = Field(description="Open assignments: pending, delivered, running, paused.")
    connected_agents: int
    idle_devices: int
    next_schedule: ScheduleDue | None


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    version: str


class Liveness(BaseModel):
    """The process answers (``/livez``): nothing is asked of the database or its pool."""

    status: Literal["ok"]
    version: str


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str
    type: str | None = None


class ErrorInfo(BaseModel):
    code: str = Field(description="e.g. validation_error, not_found, conflict, unauthorized, forbidden")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    error: ErrorInfo
