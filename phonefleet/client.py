"""A typed async client over the REST API: the protocol's models in, the protocol's models out.

``async with PhonefleetClient(url, token) as c: jobs = await c.list_jobs()``. A non-2xx answer raises
:class:`ApiError`; a server that cannot be reached (or answers too late) raises :class:`ServerUnreachable`.
"""

import json
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import aiohttp
from pydantic import BaseModel, TypeAdapter, ValidationError

from phonefleet.protocol.audit import AuditPage
from phonefleet.protocol.enums import AssignmentStatus, BatchAction, JobStatus, RecoveryRung, RequeueScope
from phonefleet.protocol.health import (
    DeviceDetail,
    DeviceEventList,
    FleetHealthReport,
    FleetPolicy,
    FleetPolicyPatch,
    QuarantineRequest,
    RecoverAccepted,
    RecoverRequest,
)
from phonefleet.protocol.models import (
    Agent,
    AgentCreated,
    AssignmentList,
    Device,
    ErrorBody,
    ErrorDetail,
    Health,
    Job,
    JobBatch,
    JobBatchResult,
    JobCreate,
    JobList,
    JobPatch,
    RequeueResult,
    Schedule,
    ScheduleCreate,
    ScheduleList,
    SchedulePatch,
    SchedulerStatus,
    Stats,
)
from phonefleet.protocol.teams import Team

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

DEFAULT_TIMEOUT_SEC = 30.0

_DEVICES = TypeAdapter(list[Device])
_AGENTS = TypeAdapter(list[Agent])
_TEAMS = TypeAdapter(list[Team])


class ApiError(Exception):
    """The server refused: its status, error code, message and the fields at fault."""

    def __init__(self, status: int, code: str, message: str, details: Sequence[ErrorDetail] = ()) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)

    @property
    def fields(self) -> list[str]:
        """The fields named by the details, in order (``plan.0.url``, ``depends_on``, ...)."""
        return [d.field for d in self.details if d.field]


class ServerUnreachable(Exception):
    """No answer: connection refused, DNS failure, or the timeout ran out."""


class UnexpectedAnswer(Exception):
    """A 2xx answer that is not what the contract says (not JSON, or not the model): a version mismatch."""


def _error(status: int, reason: str | None, raw: bytes) -> ApiError:
    """Read the contract's error body; anything else (a proxy's HTML page) still gives a readable error."""
    try:
        info = ErrorBody.model_validate_json(raw).error
    except ValidationError:
        text = raw.decode("utf-8", "replace").strip()
        return ApiError(status, "http_error", text[:300] or reason or f"HTTP {status}")
    return ApiError(status, info.code, info.message, info.details)


def _parse(adapter: TypeAdapter[T], data: Any, path: str) -> T:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise UnexpectedAnswer(f"{path}: the answer does not match the protocol ({exc.error_count()} errors: "
                               f"{exc.errors()[0]['msg']})") from exc


def _params(**values: Any) -> list[tuple[str, str]]:
    """Query parameters without the unset ones; lists are comma-joined, as the server splits them."""
    params: list[tuple[str, str]] = []
    for key, value in values.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if isinstance(value, list | tuple):
            params.append((key, ",".join(str(v) for v in value)))
        else:
            params.append((key, str(value)))
    return params


class PhonefleetClient:
    """One admin session to one server; use it as an async context manager."""

    def __init__(self, url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT_SEC,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    # ------------------------------------------------------------------ plumbing

    async def _call(self, method: str, path: str, *, body: BaseModel | dict[str, Any] | None = None,
                    params: list[tuple[str, str]] | None = None) -> Any:
        """One request; the decoded JSON answer (None for 204), or ApiError / ServerUnreachable."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data: bytes | None = None
        if body is not None:
            # exclude_unset: a PATCH sends only what the caller set, so "left out" stays "unchanged".
            payload = body.model_dump(mode="json", exclude_unset=True) if isinstance(body, BaseModel) else body
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(method, self.url + path, data=data, params=params, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _error(response.status, response.reason, raw)
        except aiohttp.ClientConnectionError as exc:
            raise ServerUnreachable(f"cannot reach {self.url}: {exc}") from exc
        except TimeoutError as exc:
            raise ServerUnreachable(f"no answer from {self.url} within {self.timeout:g}s") from exc
        except aiohttp.InvalidURL as exc:
            raise ServerUnreachable(f"not a valid server URL: {self.url}") from exc
        if response.status == 204 or not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise UnexpectedAnswer(f"{method} {path}: the answer is not JSON") from exc

    async def _model(self, model: type[M], method: str, path: str, *,
                     body: BaseModel | dict[str, Any] | None = None,
                     params: list[tuple[str, str]] | None = None) -> M:
        return _parse(TypeAdapter(model), await self._call(method, path, body=body, params=params), path)

    # ------------------------------------------------------------------ jobs

    async def list_jobs(self, status: Sequence[JobStatus | str] | None = None, search: str | None = None,
                        limit: int | None = None, offset: int | None = None) -> JobList:
        params = _params(status=list(status or []), search=search, limit=limit, offset=offset)
        return await self._model(JobList, "GET", "/api/jobs", params=params)

    async def create_job(self, job: JobCreate) -> Job:
        return await self._model(Job, "POST", "/api/jobs", body=job)

    async def get_job(self, job_id: int) -> Job:
        return await self._model(Job, "GET", f"/api/jobs/{job_id}")

    async def update_job(self, job_id: int, patch: JobPatch) -> Job:
        return await self._model(Job, "PATCH", f"/api/jobs/{job_id}", body=patch)

    async def pause_job(self, job_id: int) -> Job:
        return await self.update_job(job_id, JobPatch(status="paused"))

    async def resume_job(self, job_id: int) -> Job:
        return await self.update_job(job_id, JobPatch(status="active"))

    async def cancel_job(self, job_id: int) -> Job:
        return await self.update_job(job_id, JobPatch(status="cancelled"))

    async def delete_job(self, job_id: int) -> None:
        await self._call("DELETE", f"/api/jobs/{job_id}")

    async def requeue_job(self, job_id: int, scope: RequeueScope | Literal["failed", "all"] = "failed"
                          ) -> RequeueResult:
        return await self._model(RequeueResult, "POST", f"/api/jobs/{job_id}/requeue",
                                 body={"scope": str(RequeueScope(scope))})

    async def batch(self, batch: JobBatch) -> JobBatchResult:
        return await self._model(JobBatchResult, "POST", "/api/jobs/batch", body=batch)

    async def batch_ids(self, action: BatchAction | str, ids: Sequence[int]) -> JobBatchResult:
        """Pause, resume or cancel several jobs in one request."""
        return await self.batch(JobBatch(action=BatchAction(action), ids=list(ids)))

    async def job_assignments(self, job_id: int, status: AssignmentStatus | str | None = None) -> AssignmentList:
        return await self._model(AssignmentList, "GET", f"/api/jobs/{job_id}/assignments",
                                 params=_params(status=status))

    async def list_assignments(self, status: AssignmentStatus | str | None = None, limit: int | None = None,
                               offset: int | None = None, *, dead: bool = False,
                               device_id: int | None = None) -> AssignmentList:
        """``dead``: only the attempts that ended their slot for good (dead letters); ``device_id``: one phone's."""
        return await self._model(AssignmentList, "GET", "/api/assignments",
                                 params=_params(status=status, limit=limit, offset=offset,
                                                dead="true" if dead else None, device_id=device_id))

    # ------------------------------------------------------------------ fleet

    async def list_devices(self) -> list[Device]:
        return _parse(_DEVICES, await self._call("GET", "/api/devices"), "/api/devices")

    async def set_device_paused(self, device_id: int, paused: bool) -> Device:
        return await self._model(Device, "PATCH", f"/api/devices/{device_id}", body={"paused": paused})

    async def pause_device(self, device_id: int) -> Device:
        return await self.set_device_paused(device_id, True)

    async def resume_device(self, device_id: int) -> Device:
        return await self.set_device_paused(device_id, False)

    async def get_device(self, device_id: int) -> DeviceDetail:
        """One phone with its health, the thresholds it breaks and its reliability record."""
        return await self._model(DeviceDetail, "GET", f"/api/devices/{device_id}")

    async def device_events(self, device_id: int, *, before: int | None = None, limit: int | None = None,
                            kinds: Sequence[str] | None = None) -> DeviceEventList:
        return await self._model(DeviceEventList, "GET", f"/api/devices/{device_id}/events",
                                 params=_params(before=before, limit=limit, kind=list(kinds or [])))

    async def quarantine_device(self, device_id: int, reason: str) -> DeviceDetail:
        return await self._model(DeviceDetail, "POST", f"/api/devices/{device_id}/quarantine",
                                 body=QuarantineRequest(reason=reason))

    async def release_device(self, device_id: int) -> DeviceDetail:
        return await self._model(DeviceDetail, "POST", f"/api/devices/{device_id}/release")

    async def recover_device(self, device_id: int, rung: RecoveryRung | str) -> RecoverAccepted:
        return await self._model(RecoverAccepted, "POST", f"/api/devices/{device_id}/recover",
                                 body=RecoverRequest(rung=RecoveryRung(rung)))

    async def fleet_health(self) -> FleetHealthReport:
        return await self._model(FleetHealthReport, "GET", "/api/fleet/health")

    async def fleet_policy(self) -> FleetPolicy:
        return await self._model(FleetPolicy, "GET", "/api/fleet/policy")

    async def update_fleet_policy(self, patch: FleetPolicyPatch) -> FleetPolicy:
        return await self._model(FleetPolicy, "PATCH", "/api/fleet/policy", body=patch)

    async def list_agents(self) -> list[Agent]:
        return _parse(_AGENTS, await self._call("GET", "/api/agents"), "/api/agents")

    async def create_agent(self, name: str) -> AgentCreated:
        return await self._model(AgentCreated, "POST", "/api/agents", body={"name": name})

    async def set_agent_max_running(self, agent_id: int, max_running: int | None) -> Agent:
        """At most ``max_running`` phones of this agent run at once; None removes the limit."""
        return await self._model(Agent, "PATCH", f"/api/agents/{agent_id}", body={"max_running": max_running})

    async def move_agent(self, agent_id: int, team_id: int) -> Agent:
        """Move an agent, and so its phones, to another team (an admin's call)."""
        return await self._model(Agent, "PATCH", f"/api/agents/{agent_id}", body={"team_id": team_id})

    # ------------------------------------------------------------------ teams

    async def list_teams(self) -> list[Team]:
        """Your teams (an admin: every team)."""
        return _parse(_TEAMS, await self._call("GET", "/api/teams"), "/api/teams")

    # ------------------------------------------------------------------ schedules

    async def list_schedules(self, enabled: bool | None = None, limit: int | None = None,
                             offset: int | None = None) -> ScheduleList:
        params = _params(enabled=None if enabled is None else str(enabled).lower(), limit=limit, offset=offset)
        return await self._model(ScheduleList, "GET", "/api/schedules", params=params)

    async def create_schedule(self, schedule: ScheduleCreate) -> Schedule:
        return await self._model(Schedule, "POST", "/api/schedules", body=schedule)

    async def get_schedule(self, schedule_id: int) -> Schedule:
        return await self._model(Schedule, "GET", f"/api/schedules/{schedule_id}")

    async def update_schedule(self, schedule_id: int, patch: SchedulePatch) -> Schedule:
        return await self._model(Schedule, "PATCH", f"/api/schedules/{schedule_id}", body=patch)

    async def delete_schedule(self, schedule_id: int) -> None:
        await self._call("DELETE", f"/api/schedules/{schedule_id}")

    async def run_schedule(self, schedule_id: int) -> Job:
        """Fire the schedule now, outside its rule; the job it made."""
        return await self._model(Job, "POST", f"/api/schedules/{schedule_id}/run")

    async def schedule_jobs(self, schedule_id: int, status: Sequence[JobStatus | str] | None = None,
                            limit: int | None = None, offset: int | None = None) -> JobList:
        """The jobs a schedule made, newest first."""
        return await self._model(JobList, "GET", f"/api/schedules/{schedule_id}/jobs",
                                 params=_params(status=list(status or []), limit=limit, offset=offset))

    # ------------------------------------------------------------------ scheduler and ops

    async def scheduler_status(self) -> SchedulerStatus:
        return await self._model(SchedulerStatus, "GET", "/api/scheduler")

    async def stop_scheduler(self) -> SchedulerStatus:
        """No new assignments anywhere; running work finishes."""
        return await self._model(SchedulerStatus, "POST", "/api/scheduler/stop")

    async def start_scheduler(self) -> SchedulerStatus:
        return await self._model(SchedulerStatus, "POST", "/api/scheduler/start")

    async def stats(self, window_sec: int | None = None) -> Stats:
        return await self._model(Stats, "GET", "/api/stats", params=_params(window_sec=window_sec))

    async def health(self) -> Health:
        return await self._model(Health, "GET", "/healthz")

    async def audit(self, *, actor: str | None = None, actor_kind: str | None = None, team_id: int | None = None,
                    object_kind: str | None = None, object_id: int | str | None = None, action: str | None = None,
                    since: datetime | None = None, until: datetime | None = None, before: int | None = None,
                    limit: int | None = None) -> AuditPage:
        """The audit trail, newest first; ``before`` is the previous page's ``next_before``."""
        return await self._model(AuditPage, "GET", "/api/audit", params=_params(
            actor=actor, actor_kind=actor_kind, team_id=team_id, object_kind=object_kind, object_id=object_id,
            action=action, since=since.isoformat() if since else None, until=until.isoformat() if until else None,
            before=before, limit=limit))


__all__ = ["DEFAULT_TIMEOUT_SEC", "ApiError", "PhonefleetClient", "ServerUnreachable", "UnexpectedAnswer"]
