"""Enumerations shared by every side of the contract."""

from enum import StrEnum


class JobStatus(StrEnum):
    scheduled = "scheduled"
    active = "active"
    paused = "paused"
    completed = "completed"
    cancelled = "cancelled"
    blocked = "blocked"
    """A prerequisite failed or was cancelled; ``blocked_reason`` says which."""


class AssignmentStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    running = "running"
    paused = "paused"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"


class DeviceState(StrEnum):
    idle = "idle"
    busy = "busy"
    paused = "paused"
    offline = "offline"
    unhealthy = "unhealthy"
    """Connected, but a health threshold is broken (the reason says which)."""
    quarantined = "quarantined"
    """Taken out by the policy or an operator; leaves only by a release or a passed self-test."""
    recovering = "recovering"
    """The agent's recovery ladder runs on it."""


class RecoveryRung(StrEnum):
    """The agent's recovery ladder, gentlest first: it stops at the first rung after which the phone is healthy."""

    reconnect = "reconnect"
    usb_reset = "usb_reset"
    reboot = "reboot"
    power_cycle = "power_cycle"


class DeviceEventKind(StrEnum):
    """What a phone's append-only timeline records."""

    connected = "connected"
    disconnected = "disconnected"
    health_changed = "health_changed"
    quarantined = "quarantined"
    released = "released"
    recovery_started = "recovery_started"
    recovery_ended = "recovery_ended"
    selftest = "selftest"
    paused = "paused"
    resumed = "resumed"
    control_started = "control_started"
    """An operator took remote control of the screen (the phone left distribution meanwhile)."""
    control_ended = "control_ended"
    """Remote control ended: released, the page closed, or no input for the idle timeout (the reason says)."""


PHONE_ERROR_CODES = frozenset({"device_lost", "adb_error", "timeout", "probe_failed"})
"""Failures that speak of the phone (or its cable, or adb), not of the job's plan: they count against the
phone, unless the job fails on most phones it runs on (then its plan is wrong, and the job takes the blame)."""


class MisfirePolicy(StrEnum):
    """What a schedule does about firings missed while no server ran: skip them, or run once."""

    skip = "skip"
    run_once = "run_once"


class BatchAction(StrEnum):
    pause = "pause"
    resume = "resume"
    cancel = "cancel"


class RequeueScope(StrEnum):
    failed = "failed"
    """Slots that finally failed or timed out."""
    all = "all"
    """Every ended slot: the job runs again from the start."""


class OnInterrupt(StrEnum):
    """What a run cut short by an agent crash means (the agent journals each step it starts)."""

    fail = "fail"
    """Reported as a failure with error_code ``interrupted``, retried per ``max_retries`` on any eligible phone."""
    rerun = "rerun"
    """Run again from its first step on the same phone, recorded as a rerun of the same attempt."""


class ErrorCode(StrEnum):
    """Error codes the server and agents give ended assignments (third-party steps may add their own)."""

    lost = "lost"
    """The server's guess: the agent went silent past its grace, or the lease ran out."""
    interrupted = "interrupted"
    """The agent crashed or stopped while the run was on a step; it says so when it is back."""
    device_lost = "device_lost"
    timeout = "timeout"
    adb_error = "adb_error"
    cancelled = "cancelled"
    dropped = "dropped"
    """The agent stopped a run the server still counted on (it believed the server no longer listed it)."""
    handed_back = "handed_back"
    """Unstarted work given back to its job because its phone went away, paused or was taken."""
    superseded = "superseded"
    """An unstarted retry, made needless by the late result of the attempt it replaced."""


class AgentStatus(StrEnum):
    online = "online"
    offline = "offline"
    paused = "paused"


class TargetType(StrEnum):
    all_devices = "all_devices"
    percentage = "percentage"
    device_count = "device_count"


class PausedBy(StrEnum):
    agent = "agent"
    server = "server"
    control = "control"
    """An operator controls the phone's screen (its ``pause_reason`` says who)."""


class PauseScope(StrEnum):
    agent = "agent"
    device = "device"
    job = "job"


class FinishOutcome(StrEnum):
    """What an agent reports when an assignment ends on a phone."""

    completed = "completed"
    failed = "failed"
    timed_out = "timed_out"
    cancelled = "cancelled"


OPEN_ASSIGNMENT_STATUSES: tuple[AssignmentStatus, ...] = (
    AssignmentStatus.pending,
    AssignmentStatus.delivered,
    AssignmentStatus.running,
)
"""Statuses in which an assignment still occupies its phone."""

LIVE_ASSIGNMENT_STATUSES: tuple[AssignmentStatus, ...] = (*OPEN_ASSIGNMENT_STATUSES, AssignmentStatus.paused)
"""Statuses from which an assignment can still end (cancel reaches these)."""


class Role(StrEnum):
    """What a person (or a token) may do, each including the one before: viewer reads everything; operator also
    creates, pauses, resumes and cancels jobs and pauses and controls phones; admin also manages agents, people,
    tokens, policies and the distribution switch."""

    viewer = "viewer"
    operator = "operator"
    admin = "admin"


ROLE_ORDER: tuple[Role, ...] = (Role.viewer, Role.operator, Role.admin)


def role_at_least(role: Role, needed: Role) -> bool:
    return ROLE_ORDER.index(role) >= ROLE_ORDER.index(needed)
