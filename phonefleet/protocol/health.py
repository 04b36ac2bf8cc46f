"""Fleet health: the probe's facts and thresholds, each phone's reliability record and timeline, the
quarantine policy, recovery, and the fleet's "needs attention" list."""

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from phonefleet.protocol.enums import DeviceEventKind, DeviceState, RecoveryRung
from phonefleet.protocol.models import Device, _Body


class HealthThresholds(BaseModel):
    """When a phone is fit for work. The server sends the fleet's in the hello ack; an agent's own settings
    override them one by one. A phone that fails one is unhealthy (no work) until it passes again."""

    min_battery: int = Field(default=15, ge=0, le=100, description="Battery level (%) below which a phone rests.")
    max_battery_temp_c: float = Field(default=45.0, ge=0, le=100, description="Battery temperature (°C) above "
                                      "which a phone rests.")
    min_data_free_mb: int = Field(default=500, ge=0, le=1_000_000, description="Free space on /data (MB) below "
                                  "which a phone rests.")
    max_probe_sec: float = Field(default=5.0, gt=0, le=600, description="A health probe slower than this marks "
                                 "the phone unhealthy (an overloaded phone or USB hub).")


class QuarantinePolicy(BaseModel):
    """When the server takes a phone out of distribution by itself, and when it lets it back."""

    model_config = ConfigDict(extra="forbid")

    consecutive_failures: int = Field(default=3, ge=1, le=1000, description=(
        "Phone-attributed failures in a row (device_lost, adb_error, probe_failed, and timeouts of jobs that "
        "succeed elsewhere; a job failing on most of its phones is blamed instead)."))
    outlier_failures: int = Field(default=6, ge=1, le=1000, description=(
        "Failures in a row, of any error code, of jobs that succeed on most of the other phones they ran on: a "
        "phone that fails what works elsewhere (an app that will not start on it). Higher than "
        "consecutive_failures, so the ordinary failures of a busy fleet never add up to it."))
    flap_disconnects: int = Field(default=4, ge=2, le=10_000, description="Disconnects within flap_window_sec.")
    flap_window_sec: int = Field(default=600, ge=1, le=86_400)
    unhealthy_max_sec: int = Field(default=1800, ge=1, le=7 * 86_400, description=(
        "Unhealthy (connected, a threshold broken) for longer than this."))
    cooldown_sec: int = Field(default=900, ge=0, le=7 * 86_400, description=(
        "After this long in quarantine the built-in self-test runs on the phone; a pass releases it."))
    selftest_every_sec: int = Field(default=300, ge=1, le=86_400, description=(
        "A failed (or unanswered) self-test is tried again after this long."))


class FleetPolicy(BaseModel):
    thresholds: HealthThresholds
    quarantine: QuarantinePolicy
    changed_at: datetime | None = None
    changed_by: str | None = None


class ThresholdsPatch(_Body):
    min_battery: int | None = Field(default=None, ge=0, le=100)
    max_battery_temp_c: float | None = Field(default=None, ge=0, le=100)
    min_data_free_mb: int | None = Field(default=None, ge=0, le=1_000_000)
    max_probe_sec: float | None = Field(default=None, gt=0, le=600)


class QuarantinePatch(_Body):
    consecutive_failures: int | None = Field(default=None, ge=1, le=1000)
    outlier_failures: int | None = Field(default=None, ge=1, le=1000)
    flap_disconnects: int | None = Field(default=None, ge=2, le=10_000)
    flap_window_sec: int | None = Field(default=None, ge=1, le=86_400)
    unhealthy_max_sec: int | None = Field(default=None, ge=1, le=7 * 86_400)
    cooldown_sec: int | None = Field(default=None, ge=0, le=7 * 86_400)
    selftest_every_sec: int | None = Field(default=None, ge=1, le=86_400)


class FleetPolicyPatch(_Body):
    """``PATCH /api/fleet/policy``: the fields given change, the rest stay."""

    thresholds: ThresholdsPatch | None = None
    quarantine: QuarantinePatch | None = None


class DeviceHealth(BaseModel):
    """What the agent's last probe found."""

    adb_state: str | None = None
    boot_completed: bool | None = None
    battery: int | None = None
    battery_temp_c: float | None = None
    charging: bool | None = None
    screen_on: bool | None = None
    screen_locked: bool | None = None
    data_free_mb: int | None = None
    probe_ms: float | None = None


Blame = Literal["phone", "job", "none"]


class FailureCount(BaseModel):
    phone: int = Field(default=0, description="Counted against the phone.")
    job: int = Field(default=0, description="Counted against the job: it fails on most phones it runs on.")
    none: int = Field(default=0, description="Neither: the job's own failure (a step, a test), or too little "
                                             "evidence elsewhere.")


class LastFailure(BaseModel):
    assignment_id: int
    job_id: int
    error_code: str | None
    error: str | None
    finished_at: datetime
    blame: Blame


class Reliability(BaseModel):
    """A phone's record, from its runs and its timeline."""

    runs: int = Field(description="Runs that ended (completed, failed, timed out), ever.")
    runs_24h: int
    success_rate_50: float | None = Field(description="Completed share of its last 50 runs.")
    success_rate_24h: float | None
    failure_streak: int = Field(description="Phone-attributed failures in a row, since its last release.")
    outlier_streak: int = Field(default=0, description="Failures in a row of jobs that succeed on most other "
                                                       "phones (phone-attributed ones included), since its last "
                                                       "release.")
    failures_by_code: dict[str, FailureCount] = Field(description="Failures of the last 24 h, by error code.")
    disconnects_24h: int
    mtbf_sec: float | None = Field(description="Run time per phone-attributed failure over 7 days; null without "
                                               "such a failure.")
    last_failure: LastFailure | None
    avg_queue_wait_sec: float | None = Field(description="Assignment made -> run started, over its last 50 runs.")


class DeviceDetail(Device):
    """``GET /api/devices/{id}``: the phone, its health, the thresholds it breaks, and its reliability record."""

    health: DeviceHealth | None = None
    broken: list[str] = Field(default_factory=list, description="One reason per threshold broken.")
    unhealthy_since: datetime | None = None
    quarantined_at: datetime | None = None
    quarantined_by: str | None = None
    released_at: datetime | None = None
    reliability: Reliability
    thresholds: HealthThresholds


class DeviceEvent(BaseModel):
    id: int
    device_id: int
    kind: DeviceEventKind
    actor: str = Field(description="Who or what: agent, server, policy, an admin's name, the phone's self-test.")
    reason: str | None
    data: dict[str, Any]
    created_at: datetime


class DeviceEventList(BaseModel):
    items: list[DeviceEvent]
    next_before: int | None = Field(description="Pass as ?before= for the next (older) page; null at the end.")


Problem = Literal["quarantined", "recovering", "unhealthy", "flapping", "hot"]


class AttentionItem(BaseModel):
    device_id: int
    serial: str
    agent_name: str
    state: DeviceState
    problem: Problem
    reason: str | None
    since: datetime | None


class FleetHealthReport(BaseModel):
    """``GET /api/fleet/health``."""

    devices: dict[str, int] = Field(description="Phones by state.")
    attention: list[AttentionItem] = Field(description="Phones that need a look, worst first.")


class QuarantineRequest(_Body):
    reason: str = Field(min_length=1, max_length=500)


class RecoverRequest(_Body):
    rung: RecoveryRung


class RecoverAccepted(BaseModel):
    device_id: int
    serial: str
    rung: RecoveryRung
    sent: bool = Field(description="The agent was told now (false: it is not connected by socket; try again).")


# ------------------------------------------------------------------------------------------- socket events

DEVICE_RECOVER: Final = "device:recover"
"""Server -> agent: run one rung of the recovery ladder on a phone now (an operator asked)."""
DEVICE_SELFTEST: Final = "device:selftest"
"""Server -> agent: run the built-in self-test on a quarantined phone past its cool-down."""
DEVICE_RECOVERY: Final = "device:recovery"
"""Agent -> server: a rung started or ended on a phone (the ladder by itself, or an operator's rung)."""
DEVICE_SELFTEST_RESULT: Final = "device:selftest_result"
"""Agent -> server: what the self-test found; a pass releases a quarantined phone past its cool-down."""
FLEET_THRESHOLDS: Final = "fleet:thresholds"
"""Server -> agent: the fleet's health thresholds changed (payload: ``HealthThresholds``); the agent's own
overrides still win."""
DEVICE_EVENT: Final = "device:event"
"""Server -> dashboard: an entry of a phone's timeline (payload: ``DeviceEvent``)."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceRecover(_Payload):
    serial: str = Field(min_length=1, max_length=200)
    rung: RecoveryRung
    by: str = Field(max_length=200, description="Who asked.")


class SelftestRequest(_Payload):
    serial: str = Field(min_length=1, max_length=200)


RecoveryOutcome = Literal["healed", "failed", "skipped", "timed_out"]


class RecoveryReport(_Payload):
    serial: str = Field(min_length=1, max_length=200)
    rung: RecoveryRung
    phase: Literal["started", "ended"]
    outcome: RecoveryOutcome | None = Field(default=None, description="With phase 'ended'.")
    detail: str | None = Field(default=None, max_length=1000)
    by: str = Field(default="agent", max_length=200, description="agent (its ladder) or the operator who asked.")
    give_up: bool = Field(default=False, description="The ladder has no rung left (or its reboot budget is "
                                                     "spent): the server quarantines the phone.")


class SelftestCheck(_Payload):
    name: str = Field(min_length=1, max_length=100)
    passed: bool
    detail: str | None = Field(default=None, max_length=1000)


class SelftestResult(_Payload):
    serial: str = Field(min_length=1, max_length=200)
    passed: bool
    checks: list[SelftestCheck] = Field(default_factory=list, max_length=50)
