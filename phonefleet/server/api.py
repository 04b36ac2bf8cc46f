"""REST under ``/api``: a table of routes (also the source of the OpenAPI document) and their handlers.

Handlers parse with the protocol's models and call a service; errors become
``{"error": {"code", "message", "details"}}`` with a 4xx status.
"""

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from phonefleet import __version__
from phonefleet.protocol import events as ev
from phonefleet.protocol import screen as sc
from phonefleet.protocol.artifacts import Artifact, ArtifactLost, ArtifactPage
from phonefleet.protocol.audit import AuditPage
from phonefleet.protocol.enums import Role
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
    AdminToken,
    AdminTokenCreate,
    AdminTokenCreated,
    Agent,
    AgentCreate,
    AgentCreated,
    AgentPatch,
    AssignmentList,
    Device,
    DevicePatch,
    ErrorBody,
    Health,
    Job,
    JobBatch,
    JobBatchResult,
    JobCreate,
    JobList,
    JobPatch,
    Liveness,
    RequeueBody,
    RequeueResult,
    Schedule,
    ScheduleCreate,
    ScheduleList,
    SchedulePatch,
    SchedulerStatus,
    Stats,
)
from phonefleet.protocol.people import (
    PasswordChange,
    Person,
    PersonalToken,
    PersonalTokenCreate,
    PersonalTokenCreated,
    PersonCreate,
    PersonCreated,
    PersonPatch,
    SessionInfo,
    SignIn,
)
from phonefleet.protocol.teams import Team, TeamCreate, TeamPatch
from phonefleet.protocol.timeline import LogcatAnswer, StepTimeline
from phonefleet.server import audit, outage, people
from phonefleet.server.accounts import Accounts, person_model
from phonefleet.server.agent_events import AgentEvents
from phonefleet.server.artifact_uploads import ArtifactUploads, Claim
from phonefleet.server.artifacts import ARTIFACT_TYPES, ArtifactStore, serving_headers
from phonefleet.server.audit import AuditTrail
from phonefleet.server.auth import SESSION_COOKIE, Authenticator, Principal, TokenCheck, bearer
from phonefleet.server.errors import Forbidden, Invalid, NotFound, ServiceError, Unauthorized
from phonefleet.server.evidence import Evidence
from phonefleet.server.fleet import Fleet
from phonefleet.server.fleet_health import FleetHealth
from phonefleet.server.job_control import JobControl
from phonefleet.server.metrics import CONTENT_TYPE, Metrics
from phonefleet.server.openapi import build_openapi
from phonefleet.server.orders import with_orders
from phonefleet.server.outage import OUTAGE_ERRORS
from phonefleet.server.pauses import Pauses
from phonefleet.server.queries import Queries, job_model
from phonefleet.server.revocations import Revocations
from phonefleet.server.routes import (
    Access,
    ArtifactQuery,
    AssignmentListQuery,
    AssignmentQuery,
    AuditQuery,
    DeviceEventQuery,
    JobListQuery,
    LogcatQuery,
    Route,
    ScheduleListQuery,
    ScreenQuery,
    StatsQuery,
)
from phonefleet.server.scheduler_control import SchedulerControl
from phonefleet.server.schedules import Schedules
from phonefleet.server.scope import check_visible, team_for_new
from phonefleet.server.screen_relay import ScreenRelay
from phonefleet.server.store.audit import AuditFilter
from phonefleet.server.teams import Teams

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
PRINCIPAL = web.RequestKey("principal", Principal)


def _actor(request: web.Request) -> str:
    """Who is asking, for a phone's timeline: the person, or the admin token's name."""
    return request[PRINCIPAL].name


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, default=str, separators=(",", ":")), status=status, content_type="application/json"
    )


def _error(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    response = json_response({"error": {"code": code, "message": message, "details": []}}, status)
    response.headers.update(headers or {})
    return response


def models_response(models: Sequence[BaseModel]) -> web.Response:
    """A JSON array of models."""
    body = b"[" + b",".join(m.model_dump_json().encode() for m in models) + b"]"
    return web.Response(body=body, content_type="application/json")


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json(), status=status, content_type="application/json")


def _int_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    # ASCII only: str.isdigit() also accepts superscripts (int() refuses them: a 500) and other
    # scripts' digits (int() reads fullwidth or Arabic-Indic one as 1: another job's id).
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise NotFound(f"no resource with id {raw[:40]!r}")
    return int(raw)


def _not_json_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


async def _body(request: web.Request, model: type[M], *, check_text: bool = True) -> M:
    raw = await request.read()
    try:
        data = json.loads(raw, parse_constant=_not_json_constant) if raw else None
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise Invalid.field("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise Invalid.field("body", "a JSON object is required")
    if check_text:
        Invalid.check_text(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid.from_validation(exc) from None


def _query(request: web.Request, model: type[M]) -> M:
    values: dict[str, Any] = {}
    for key in request.query:
        all_values = request.query.getall(key)
        annotation = model.model_fields[key].annotation if key in model.model_fields else None
        is_list = annotation is not None and "list" in str(annotation)
        values[key] = [v for item in all_values for v in item.split(",")] if is_list else all_values[-1]
    Invalid.check_text(values)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Invalid.from_validation(exc) from None


@dataclass(frozen=True)
class ApiServices:
    """Everything the handlers call, bound at once when the database is up."""

    tokens: TokenCheck
    queries: Queries
    jobs: JobControl
    pauses: Pauses
    agent_events: AgentEvents
    scheduler: SchedulerControl
    schedules: Schedules
    revocations: Revocations
    accounts: Accounts
    fleet: Fleet
    fleet_health: FleetHealth
    evidence: Evidence
    screen: ScreenRelay
    artifacts: ArtifactUploads
    audit: AuditTrail
    teams: Teams


class Api:
    """Routes are registered when the app is built; the services are bound once the database is up. Each
    handler parses, calls one service, and renders."""

    def __init__(self, authenticator: Authenticator, metrics: Metrics, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts
        self.authenticator = authenticator
        self.metrics = metrics
        self._services: ApiServices | None = None

    def bind(self, services: ApiServices) -> None:
        """All at once: a request sees either none of the services (503 while starting) or all of them."""
        self._services = services

    @property
    def s(self) -> ApiServices:
        assert self._services is not None
        return self._services

    # ------------------------------------------------------------------ plumbing

    def register(self, app: web.Application) -> None:
        for route in ROUTES:
            # Ids are digits in the router too: PATCH /api/jobs/batch is a method that path does not serve
            # (405, Allow: POST), not the job "batch" (404).
            app.router.add_route(route.method, route.path.replace("{id}", "{id:[0-9]+}"), self._wrap(route))

    def _wrap(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            if self._services is None and route.database:
                return _error("starting", "starting up", 503, {"Retry-After": str(outage.RETRY_AFTER_SEC)})
            if route.access == "public":
                return await route.handler(self, request)
            principal = request[PRINCIPAL] = await self._authorize(request, route.access)
            if route.owns is not None:  # before the handler: another team's object is a missing one
                await check_visible(self.s.tokens.pool, principal, route.owns, _int_id(request))
            with audit.acting(audit.actor_of(principal), "rest", request.remote):
                return await route.handler(self, request)

        return handler

    async def _authorize(self, request: web.Request, access: Access) -> Principal:
        """A bearer token, else the dashboard's session cookie; a cookie request that changes something must
        also send its session's CSRF token in ``X-CSRF-Token`` (a bearer request needs none: no browser sends
        one by itself)."""
        token = bearer(request.headers.get("Authorization"))
        if token is not None:
            principal = await self.s.tokens.authenticate(token)
            if principal is None:
                raise Unauthorized("unknown token")
        elif (cookie := request.cookies.get(SESSION_COOKIE)) is not None:
            principal = await self.s.tokens.session(cookie)
            if principal is None:
                raise Unauthorized("the session ended: sign in again")
            if request.method not in SAFE_METHODS and not people.same_secret(
                    request.headers.get(CSRF_HEADER), principal.csrf_token):
                raise Forbidden(f"a request made with the session cookie needs its {CSRF_HEADER} header")
        else:
            raise Unauthorized("sign in, or send a bearer token")
        if not principal.allows(access):
            raise Forbidden(f"this route needs an {access} token" if access == "agent" else
                            f"this route needs the {access} role (you are {principal.role or principal.kind})")
        return principal

    # ------------------------------------------------------------------ handlers

    async def live(self, _request: web.Request) -> web.Response:
        return model_response(Liveness(status="ok", version=__version__))

    async def health(self, _request: web.Request) -> web.Response:
        await self.s.queries.ping()
        return model_response(Health(status="ok", database="ok", version=__version__))

    async def metrics_text(self, _request: web.Request) -> web.Response:
        """Answered through a database outage too (when it matters most): ``phonefleet_database_up 0``, and
        without the gauges counted in the database rather than with stale ones."""
        fleet = None
        if self._services is not None:
            try:  # cluster-wide gauges come from the database, at scrape time
                fleet = await self.s.queries.fleet_counts()
            except OUTAGE_ERRORS as exc:
                outage.report(exc, "/metrics")
        if fleet is not None:
            self.metrics.set_fleet(fleet)
        self.metrics.database_up.set(0 if fleet is None else 1)
        return web.Response(body=self.metrics.render(fleet=fleet is not None), headers={"Content-Type": CONTENT_TYPE})

    async def openapi(self, _request: web.Request) -> web.Response:
        return json_response(build_openapi(ROUTES))

    async def create_job(self, request: web.Request) -> web.Response:
        body = await _body(request, JobCreate)
        team_id = await team_for_new(self.s.tokens.pool, request[PRINCIPAL], body.team_id)
        return model_response(await self.s.queries.job(await self.s.jobs.create(body, team_id=team_id)), status=201)

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = _query(request, JobListQuery)
        return model_response(await self.s.queries.jobs(
            statuses=[str(s) for s in q.status or []], search=q.search, limit=q.limit, offset=q.offset,
            teams=request[PRINCIPAL].teams))

    async def get_job(self, request: web.Request) -> web.Response:
        return model_response(await self.s.queries.job(_int_id(request)))

    async def patch_job(self, request: web.Request) -> web.Response:
        return model_response(job_model(await self.s.jobs.patch(_int_id(request), await _body(request, JobPatch))))

    async def delete_job(self, request: web.Request) -> web.Response:
        await self.s.jobs.delete(_int_id(request))
        return web.Response(status=204)

    async def job_assignments(self, request: web.Request) -> web.Response:
        job_id = _int_id(request)
        q = _query(request, AssignmentQuery)
        return model_response(await self.s.queries.job_assignments(job_id, str(q.status) if q.status else None))

    async def list_assignments(self, request: web.Request) -> web.Response:
        q = _query(request, AssignmentListQuery)
        return model_response(await self.s.queries.assignments(
            status=str(q.status) if q.status else None, dead=q.dead, device_id=q.device_id, limit=q.limit,
            offset=q.offset, teams=request[PRINCIPAL].teams))

    async def list_devices(self, request: web.Request) -> web.Response:
        return models_response(await self.s.queries.devices(request[PRINCIPAL].teams))

    async def patch_device(self, request: web.Request) -> web.Response:
        device_id = _int_id(request)
        body = await _body(request, DevicePatch)
        return model_response(await self.s.pauses.set_device_paused(device_id, body.paused, _actor(request)))

    async def get_device(self, request: web.Request) -> web.Response:
        return model_response(await self.s.fleet_health.device(_int_id(request)))

    async def device_events(self, request: web.Request) -> web.Response:
        q = _query(request, DeviceEventQuery)
        return model_response(await self.s.fleet_health.events(
            _int_id(request), before=q.before, limit=q.limit, kinds=[str(k) for k in q.kind or []]))

    async def release_device(self, request: web.Request) -> web.Response:
        return model_response(await self.s.fleet_health.release(_int_id(request), _actor(request)))

    async def quarantine_device(self, request: web.Request) -> web.Response:
        device_id = _int_id(request)
        body = await _body(request, QuarantineRequest)
        return model_response(await self.s.fleet_health.quarantine(device_id, body.reason, _actor(request)))

    async def recover_device(self, request: web.Request) -> web.Response:
        device_id = _int_id(request)
        body = await _body(request, RecoverRequest)
        return model_response(await self.s.fleet_health.recover(device_id, body.rung, _actor(request)), 202)

    async def fleet_health_report(self, request: web.Request) -> web.Response:
        return model_response(await self.s.fleet_health.report(request[PRINCIPAL].teams))

    async def fleet_policy(self, _request: web.Request) -> web.Response:
        return model_response(await self.s.fleet_health.policy())

    async def patch_fleet_policy(self, request: web.Request) -> web.Response:
        body = await _body(request, FleetPolicyPatch)
        return model_response(await self.s.fleet_health.patch_policy(body, _actor(request)))

    async def list_agents(self, request: web.Request) -> web.Response:
        return models_response(await self.s.queries.agents(request[PRINCIPAL].teams))

    async def create_agent(self, request: web.Request) -> web.Response:
        body = await _body(request, AgentCreate)
        return model_response(await self.s.fleet.register(body.name), 201)

    async def revoke_agent_token(self, request: web.Request) -> web.Response:
        await self.s.revocations.revoke_agent(_int_id(request))
        return web.Response(status=204)

    async def rotate_agent_token(self, request: web.Request) -> web.Response:
        agent_id = _int_id(request)
        token = await self.s.revocations.rotate_agent(agent_id)
        return model_response(AgentCreated(agent=await self.s.queries.agent(agent_id), token=token), 201)

    async def list_admins(self, _request: web.Request) -> web.Response:
        return models_response(await self.s.queries.admins(env_admin=self.authenticator.has_env_admin))

    async def create_admin(self, request: web.Request) -> web.Response:
        body = await _body(request, AdminTokenCreate)
        return model_response(await self.s.revocations.add_admin(body.name), 201)

    async def revoke_admin(self, request: web.Request) -> web.Response:
        await self.s.revocations.revoke_admin(request.match_info["name"])
        return web.Response(status=204)

    # ------------------------------------------------------------------ people: sessions, accounts, tokens

    async def sign_in(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":  # a cross-site form cannot send JSON without CORS
            raise Invalid.field("body", "send application/json")
        body = await _body(request, SignIn)
        new = await self.s.accounts.sign_in(body, request.remote or "unknown")
        response = model_response(SessionInfo(person=person_model(new.person), name=new.person.name,
                                              role=Role(new.person.role), csrf_token=new.csrf_token), 201)
        response.set_cookie(SESSION_COOKIE, new.cookie, path="/", httponly=True, samesite="Strict",
                            secure=_is_tls(request))
        return response

    async def get_session(self, request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        assert principal.role is not None
        return model_response(SessionInfo(person=await self.s.accounts.me(principal), name=principal.name,
                                          role=principal.role, csrf_token=principal.csrf_token))

    async def sign_out(self, request: web.Request) -> web.Response:
        await self.s.accounts.sign_out(request[PRINCIPAL])
        response = web.Response(status=204)
        response.del_cookie(SESSION_COOKIE, path="/", secure=_is_tls(request), samesite="Strict")
        return response

    async def change_password(self, request: web.Request) -> web.Response:
        body = await _body(request, PasswordChange)
        await self.s.accounts.change_password(request[PRINCIPAL], body.current_password, body.new_password)
        return web.Response(status=204)

    async def list_people(self, _request: web.Request) -> web.Response:
        return models_response(await self.s.accounts.everyone())

    async def create_person(self, request: web.Request) -> web.Response:
        body = await _body(request, PersonCreate)
        return model_response(await self.s.accounts.add(body.name, body.role, body.teams), 201)

    async def patch_person(self, request: web.Request) -> web.Response:
        body = await _body(request, PersonPatch)
        return model_response(await self.s.accounts.update(request.match_info["name"], body))

    async def list_tokens(self, request: web.Request) -> web.Response:
        return models_response(await self.s.accounts.tokens(request[PRINCIPAL]))

    async def create_token(self, request: web.Request) -> web.Response:
        body = await _body(request, PersonalTokenCreate)
        return model_response(await self.s.accounts.add_token(request[PRINCIPAL], body.name), 201)

    async def revoke_token(self, request: web.Request) -> web.Response:
        await self.s.accounts.revoke_token(request[PRINCIPAL], _int_id(request))
        return web.Response(status=204)

    # ------------------------------------------------------------------ teams (service: server/teams.py)

    async def list_teams(self, request: web.Request) -> web.Response:
        return models_response(await self.s.teams.visible(request[PRINCIPAL]))

    async def create_team(self, request: web.Request) -> web.Response:
        return model_response(await self.s.teams.create((await _body(request, TeamCreate)).name), 201)

    async def get_team(self, request: web.Request) -> web.Response:
        return model_response(await self.s.teams.get(_int_id(request)))

    async def patch_team(self, request: web.Request) -> web.Response:
        team_id = _int_id(request)
        return model_response(await self.s.teams.rename(team_id, (await _body(request, TeamPatch)).name))

    async def delete_team(self, request: web.Request) -> web.Response:
        await self.s.teams.delete(_int_id(request))
        return web.Response(status=204)

    async def add_team_member(self, request: web.Request) -> web.Response:
        return model_response(await self.s.teams.add_member(_int_id(request), request.match_info["name"]))

    async def remove_team_member(self, request: web.Request) -> web.Response:
        return model_response(await self.s.teams.remove_member(_int_id(request), request.match_info["name"]))

    async def stats(self, request: web.Request) -> web.Response:
        return model_response(await self.s.queries.stats(_query(request, StatsQuery).window_sec,
                                                         request[PRINCIPAL].teams))

    async def requeue_job(self, request: web.Request) -> web.Response:
        job_id = _int_id(request)
        body = await _body(request, RequeueBody) if request.can_read_body else RequeueBody()
        n = await self.s.jobs.requeue(job_id, body.scope)
        return model_response(RequeueResult(job=await self.s.queries.job(job_id), requeued=n))

    async def batch_jobs(self, request: web.Request) -> web.Response:
        return model_response(await self.s.jobs.batch(await _body(request, JobBatch), teams=request[PRINCIPAL].teams))

    async def patch_agent(self, request: web.Request) -> web.Response:
        agent_id = _int_id(request)
        return model_response(await self.s.fleet.patch(agent_id, await _body(request, AgentPatch)))

    async def scheduler_status(self, request: web.Request) -> web.Response:
        return model_response(await self.s.scheduler.status(request[PRINCIPAL].teams))

    async def scheduler_stop(self, _request: web.Request) -> web.Response:
        return model_response(await self.s.scheduler.set_running(False))

    async def scheduler_start(self, _request: web.Request) -> web.Response:
        return model_response(await self.s.scheduler.set_running(True))

    async def list_schedules(self, request: web.Request) -> web.Response:
        q = _query(request, ScheduleListQuery)
        return model_response(await self.s.schedules.list_page(enabled=q.enabled, limit=q.limit, offset=q.offset,
                                                               teams=request[PRINCIPAL].teams))

    async def create_schedule(self, request: web.Request) -> web.Response:
        body = await _body(request, ScheduleCreate)
        team_id = await team_for_new(self.s.tokens.pool, request[PRINCIPAL], body.team_id)
        return model_response(await self.s.schedules.create(body, team_id=team_id), status=201)

    async def get_schedule(self, request: web.Request) -> web.Response:
        return model_response(await self.s.schedules.get(_int_id(request)))

    async def patch_schedule(self, request: web.Request) -> web.Response:
        schedule_id = _int_id(request)
        return model_response(await self.s.schedules.patch(schedule_id, await _body(request, SchedulePatch)))

    async def delete_schedule(self, request: web.Request) -> web.Response:
        await self.s.schedules.delete(_int_id(request))
        return web.Response(status=204)

    async def run_schedule(self, request: web.Request) -> web.Response:
        job_id = await self.s.schedules.run_now(_int_id(request))
        return model_response(await self.s.queries.job(job_id), status=201)

    async def schedule_jobs(self, request: web.Request) -> web.Response:
        schedule_id = _int_id(request)
        q = _query(request, JobListQuery)
        await self.s.schedules.get(schedule_id)
        return model_response(await self.s.queries.jobs(
            statuses=[str(s) for s in q.status or []], search=q.search, limit=q.limit, offset=q.offset,
            schedule_id=schedule_id, teams=request[PRINCIPAL].teams))

    async def agent_poll(self, request: web.Request) -> web.Response:
        poll = await self.s.agent_events.poll(request[PRINCIPAL])
        return json_response(with_orders(poll, poll.assignments))

    async def upload_artifact(self, request: web.Request) -> web.Response:
        """An agent's file for one of its own assignments, kept only if its size and sha256 match."""
        agent = request[PRINCIPAL]
        assert agent.agent_id is not None
        claim = Claim.from_headers(request.headers)
        artifact, new = await self.s.artifacts.upload(agent.agent_id, _int_id(request), request.match_info["name"],
                                                      claim, request.content)
        return model_response(artifact, 201 if new else 200)

    async def artifact_lost(self, request: web.Request) -> web.Response:
        agent = request[PRINCIPAL]
        assert agent.agent_id is not None
        assignment_id = _int_id(request)
        body = await _body(request, ArtifactLost)
        return model_response(await self.s.artifacts.lost(agent.agent_id, assignment_id, request.match_info["name"],
                                                          body))

    async def list_artifacts(self, request: web.Request) -> web.Response:
        return models_response(await self.s.artifacts.for_assignment(_int_id(request)))

    async def device_artifacts(self, request: web.Request) -> web.Response:
        device_id = _int_id(request)
        q = _query(request, ArtifactQuery)
        return model_response(await self.s.artifacts.for_device(
            device_id, kind=str(q.kind) if q.kind else None, before=q.before, limit=q.limit))

    async def get_artifact(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.artifacts.path(_int_id(request), name)
        if not path.is_file():
            raise NotFound("no such artifact")
        return web.FileResponse(path, headers=serving_headers(name))

    async def assignment_steps(self, request: web.Request) -> web.Response:
        return model_response(await self.s.evidence.steps(_int_id(request)))

    async def assignment_logcat(self, request: web.Request) -> web.Response:
        assignment_id = _int_id(request)
        return model_response(await self.s.evidence.logcat(assignment_id, _query(request, LogcatQuery)))

    async def device_screen(self, request: web.Request) -> web.Response:
        """One current frame of the phone's screen (JPEG, or full-size PNG)."""
        q = _query(request, ScreenQuery)
        meta, data = await self.s.screen.frame(_int_id(request), fmt=q.format, max_width=q.max_width)
        return web.Response(body=data, content_type=f"image/{meta.get('format', 'jpeg')}", headers={
            "Cache-Control": "no-store", "X-Phone-Width": str(meta["phone_width"]),
            "X-Phone-Height": str(meta["phone_height"]), "X-Taken-At": str(meta["taken_at"])})

    async def device_input(self, request: web.Request) -> web.Response:
        """Tap, swipe, type or press a key on the phone; takes control when nobody holds it (see ScreenRelay)."""
        device_id = _int_id(request)
        body = await _body(request, sc.InputBody)  # the documented shape; then the exact command
        raw = json.loads(await request.read())
        try:
            command = sc.INPUT_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            raise Invalid.from_validation(_input_errors(exc, body.type)) from None
        principal = request[PRINCIPAL]
        accepted = await self.s.screen.input(device_id, command, principal, owner=_rest_owner(principal),
                                             implicit=True)
        return model_response(accepted)

    async def take_control(self, request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        return model_response(await self.s.screen.take(_int_id(request), principal, owner=_rest_owner(principal)))

    async def release_control(self, request: web.Request) -> web.Response:
        """Any admin may end a session (a forgotten one need not wait for the idle timeout)."""
        device_id = _int_id(request)
        await self.s.screen.release(device_id, f"released by {_actor(request)}")
        return model_response(self.s.screen.session(device_id))

    async def audit_events(self, request: web.Request) -> web.Response:
        q = _query(request, AuditQuery)
        if q.since is not None and q.until is not None and q.until <= q.since:
            raise Invalid.field("until", "must be after since")
        found = AuditFilter(actor=q.actor, actor_kind=q.actor_kind, team_id=q.team_id, object_kind=q.object_kind,
                            object_id=q.object_id, action=q.action, since=q.since, until=q.until,
                            teams=request[PRINCIPAL].teams)
        return model_response(await self.s.audit.page(found, before=q.before, limit=q.limit))

    async def agent_post_events(self, request: web.Request) -> web.Response:
        # Each event's payload is checked by the handler, so one bad event is one error ack, as on the socket.
        batch = await _body(request, ev.AgentEventBatch, check_text=False)
        results = [await self.s.agent_events.handle(request[PRINCIPAL], e.event, e.data) for e in batch.events]
        return json_response({"results": results})  # the very acks the socket answers


ROUTES: list[Route] = [
    Route("GET", "/healthz", Api.health, "Liveness and database reachability (a pooled connection answers)",
          "public", response=Health, tags=("ops",)),
    Route("GET", "/livez", Api.live, "The process answers, whatever its database or pool is doing (for a load "
          "balancer's check: a node busy with a large fan-out is not down)", "public", response=Liveness,
          tags=("ops",), database=False),
    Route("GET", "/metrics", Api.metrics_text, "Prometheus metrics; through a database outage too, with "
          "phonefleet_database_up 0 and without the gauges counted in the database", "public", tags=("ops",),
          database=False, produces=("text/plain",)),
    Route("GET", "/api/openapi.json", Api.openapi, "This document", "public", tags=("ops",), database=False),
    Route("POST", "/api/jobs", Api.create_job, "Create a job and distribute it",
          "operator", body=JobCreate, response=Job,
          status=201, tags=("jobs",)),
    Route("GET", "/api/jobs", Api.list_jobs, "Your teams' jobs (an admin's: every job)",
          "viewer", query=JobListQuery, response=JobList, tags=("jobs",)),
    Route("POST", "/api/jobs/batch", Api.batch_jobs, "Pause, resume or cancel many jobs (by ids or a filter)",
          "operator",
          body=JobBatch, response=JobBatchResult, tags=("jobs",)),
    Route("GET", "/api/jobs/{id}", Api.get_job, "One job", "viewer", response=Job, tags=("jobs",), owns="job"),
    Route("POST", "/api/jobs/{id}/requeue", Api.requeue_job,
          "Run a job's failed slots (or all of them) again; the body may be left out (failed)", "operator",
          body=RequeueBody, body_required=False, response=RequeueResult, tags=("jobs",), owns="job"),
    Route("PATCH", "/api/jobs/{id}", Api.patch_job, "Pause, resume, cancel or edit a job", "operator", body=JobPatch,
          response=Job, tags=("jobs",), owns="job"),
    Route("DELETE", "/api/jobs/{id}", Api.delete_job, "Delete a job, cancelling its work on the phones", "operator",
          status=204, tags=("jobs",), owns="job"),
    Route("GET", "/api/jobs/{id}/assignments", Api.job_assignments, "A job's assignments",
          "viewer", query=AssignmentQuery,
          response=AssignmentList, tags=("jobs",), owns="job"),
    Route("GET", "/api/assignments", Api.list_assignments, "Assignments by status (dead letters: failed) or "
          "phone, newest first", "viewer", query=AssignmentListQuery, response=AssignmentList, tags=("jobs",)),
    Route("GET", "/api/assignments/{id}/artifacts", Api.list_artifacts, "An assignment's artifacts (screenshots, "
          "logcat, files) with kind, size, sha256 and status (uploading, stored, deleted)", "viewer",
          response=Artifact, many=True, tags=("jobs",), owns="assignment"),
    Route("GET", "/api/assignments/{id}/steps", Api.assignment_steps, "A run's step timeline: each step's start, "
          "end, outcome, exit code and output tail (steps it never reached: not_run)", "viewer", response=StepTimeline,
          tags=("jobs",), owns="assignment"),
    Route("GET", "/api/assignments/{id}/logcat", Api.assignment_logcat, "A run's logcat, filtered on the server by "
          "level (and above), tag and text; 409 while it is still uploading, 410 once retention deleted it", "viewer",
          query=LogcatQuery, response=LogcatAnswer, tags=("jobs",), conflicts=True, gone=True, owns="assignment"),
    Route("GET", "/api/assignments/{id}/artifacts/{name}", Api.get_artifact,
          "One artifact's bytes: images and logs inline, anything else as an attachment", "viewer", tags=("jobs",),
          produces=ARTIFACT_TYPES, owns="assignment"),
    Route("GET", "/api/devices", Api.list_devices, "Your teams' phones (an admin's: every phone)",
          "viewer", response=Device, many=True, tags=("fleet",)),
    Route("PATCH", "/api/devices/{id}", Api.patch_device, "Pause or resume a phone", "operator", body=DevicePatch,
          response=Device, tags=("fleet",), owns="device"),
    Route("GET", "/api/devices/{id}", Api.get_device, "One phone: its health, the thresholds it breaks and its "
          "reliability record", "viewer", response=DeviceDetail, tags=("fleet",), owns="device"),
    Route("GET", "/api/devices/{id}/artifacts", Api.device_artifacts, "A phone's artifacts over all its runs, "
          "newest first, a page at a time", "viewer", query=ArtifactQuery, response=ArtifactPage, tags=("fleet",),
          owns="device"),
    Route("GET", "/api/devices/{id}/events", Api.device_events, "A phone's timeline, newest first, a page at a "
          "time", "viewer", query=DeviceEventQuery, response=DeviceEventList, tags=("fleet",), owns="device"),
    Route("POST", "/api/devices/{id}/quarantine", Api.quarantine_device, "Quarantine a phone by hand: it gets "
          "no work until released; its unstarted work goes back to its jobs", "operator", body=QuarantineRequest,
          response=DeviceDetail, tags=("fleet",), owns="device"),
    Route("POST", "/api/devices/{id}/release", Api.release_device, "Release a quarantined phone", "operator",
          response=DeviceDetail, tags=("fleet",), owns="device"),
    Route("POST", "/api/devices/{id}/recover", Api.recover_device, "Run one rung of the recovery ladder on a "
          "phone now (its agent reports what it did in the phone's timeline)", "operator", body=RecoverRequest,
          response=RecoverAccepted, status=202, tags=("fleet",), owns="device"),
    Route("GET", "/api/devices/{id}/screen", Api.device_screen, "One current frame of the phone's screen: JPEG "
          "(max_width scales it down), or full-size PNG; 409 when the phone is offline", "viewer", query=ScreenQuery,
          tags=("screen",), produces=("image/jpeg", "image/png"), conflicts=True, owns="device"),
    Route("POST", "/api/devices/{id}/input", Api.device_input, "Tap, swipe, type, press a key or rotate, in the "
          "phone's own pixels. The caller must hold control or nobody may: then it takes control implicitly "
          "(the phone leaves distribution until DELETE /api/devices/{id}/control or the idle timeout); 409 when "
          "someone else controls it", "operator", body=sc.InputBody, response=sc.InputAccepted,
          tags=("screen",), owns="device"),
    Route("POST", "/api/devices/{id}/control", Api.take_control, "Take remote control: the phone is paused out "
          "of distribution ('in use by NAME'); 409 when someone else controls it",
          "operator", response=sc.ScreenSession,
          tags=("screen",), owns="device"),
    Route("DELETE", "/api/devices/{id}/control", Api.release_control, "End remote control of the phone "
          "(whoever holds it) and give it back to distribution",
          "operator", response=sc.ScreenSession, tags=("screen",), owns="device"),
    Route("GET", "/api/fleet/health", Api.fleet_health_report, "Phones by state, and those needing attention "
          "(quarantined, recovering, unhealthy, flapping, hot) with reasons", "viewer", response=FleetHealthReport,
          tags=("fleet",)),
    Route("GET", "/api/fleet/policy", Api.fleet_policy, "The health thresholds and the quarantine policy", "viewer",
          response=FleetPolicy, tags=("fleet",)),
    Route("PATCH", "/api/fleet/policy", Api.patch_fleet_policy, "Change health thresholds or the quarantine "
          "policy (the fields given; agents hear new thresholds at once)", "admin", body=FleetPolicyPatch,
          response=FleetPolicy, tags=("fleet",)),
    Route("GET", "/api/agents", Api.list_agents, "Your teams' agents (an admin's: every agent)", "viewer",
          response=Agent, many=True, tags=("fleet",)),
    Route("POST", "/api/agents", Api.create_agent, "Register an agent; answers its token once", "admin",
          body=AgentCreate, response=AgentCreated, status=201, tags=("fleet",)),
    Route("PATCH", "/api/agents/{id}", Api.patch_agent, "Limit how many phones run at once on an agent, or move it "
          "(and its phones) to another team: they run only that team's jobs from then on", "admin",
          body=AgentPatch, response=Agent, tags=("fleet",), owns="agent"),
    Route("DELETE", "/api/agents/{id}/token", Api.revoke_agent_token,
          "Revoke an agent's token: its sockets drop at once on every node, its REST calls answer 401, its "
          "phones go offline and their work goes back to the jobs (as when its grace expires)", "admin",
          status=204, tags=("fleet",), owns="agent"),
    Route("POST", "/api/agents/{id}/token", Api.rotate_agent_token,
          "Give an agent a new token (answered once); the old one is revoked as by DELETE", "admin",
          response=AgentCreated, status=201, tags=("fleet",), owns="agent"),
    Route("GET", "/api/admins", Api.list_admins, "Admin tokens by name (never their secret); 'env' is the "
          "servers' PHONEFLEET_ADMIN_TOKEN", "admin", response=AdminToken, many=True, tags=("ops",)),
    Route("POST", "/api/admins", Api.create_admin, "Make a named admin token; answers it once", "admin",
          body=AdminTokenCreate, response=AdminTokenCreated, status=201, tags=("ops",)),
    Route("DELETE", "/api/admins/{name}", Api.revoke_admin,
          "Revoke an admin token: its dashboards drop at once on every node, its next call answers 401", "admin",
          status=204, tags=("ops",)),
    Route("POST", "/api/session", Api.sign_in, "Sign in with a name and password, or with a Supabase access "
          "token (supabase_token, where Supabase Auth is configured): sets the session cookie "
          "(HttpOnly, SameSite=Strict, Secure over TLS) and answers the session's CSRF token, which every request "
          "made with the cookie that changes something sends in X-CSRF-Token; 429 after too many failures",
          "public", body=SignIn, response=SessionInfo, status=201, tags=("people",),
          also=(("401", "Wrong name or password; a Supabase token refused (its reason in the message)"),
                ("403", "The person is disabled"),
                ("429", "Too many failed sign-ins for this name or from this address; try again later"))),
    Route("GET", "/api/session", Api.get_session, "Who is asking: the person (or admin token), their role, and "
          "the session's CSRF token", "viewer", response=SessionInfo, tags=("people",)),
    Route("DELETE", "/api/session", Api.sign_out, "Sign out: the session ends on the server and its dashboards "
          "drop on every node", "viewer", status=204, tags=("people",)),
    Route("POST", "/api/session/password", Api.change_password, "Change your own password (give the current "
          "one); your other sessions end", "viewer", body=PasswordChange, status=204, tags=("people",)),
    Route("GET", "/api/tokens", Api.list_tokens, "Your personal API tokens (never their secret)", "viewer",
          response=PersonalToken, many=True, tags=("people",)),
    Route("POST", "/api/tokens", Api.create_token, "Make a personal API token, answered once; it acts with your "
          "role and stops working when revoked or when you are disabled", "viewer", body=PersonalTokenCreate,
          response=PersonalTokenCreated, status=201, tags=("people",)),
    Route("DELETE", "/api/tokens/{id}", Api.revoke_token, "Revoke one of your personal tokens: its next call "
          "answers 401, its dashboards drop", "viewer", status=204, tags=("people",), owns="own_token"),
    Route("GET", "/api/users", Api.list_people, "People and their roles", "admin", response=Person, many=True,
          tags=("people",)),
    Route("POST", "/api/users", Api.create_person, "Add a person with a role and teams (by "
          "name; by default 'default'); answers a one-time password",
          "admin", body=PersonCreate, response=PersonCreated, status=201, tags=("people",)),
    Route("PATCH", "/api/users/{name}", Api.patch_person, "Change a person's role or teams, disable them (ending "
          "every session and token of theirs) or enable them again, set or clear (null) the email their first "
          "Supabase sign-in is matched by (409 if another person has it); the last enabled admin stays one", "admin",
          body=PersonPatch, response=Person, tags=("people",)),
    Route("GET", "/api/teams", Api.list_teams, "Teams with their people and agent count: yours (an admin: every "
          "team)", "viewer", response=Team, many=True, tags=("teams",)),
    Route("POST", "/api/teams", Api.create_team, "Make a team; 409 when the name is taken", "admin", body=TeamCreate,
          response=Team, status=201, tags=("teams",)),
    Route("GET", "/api/teams/{id}", Api.get_team, "One team (404 unless it is yours or you are an admin)", "viewer",
          response=Team, tags=("teams",), owns="team"),
    Route("PATCH", "/api/teams/{id}", Api.patch_team, "Rename a team; 409 when the name is taken", "admin",
          body=TeamPatch, response=Team, tags=("teams",), owns="team"),
    Route("DELETE", "/api/teams/{id}", Api.delete_team, "Delete an empty team: 409 while it owns agents, jobs or "
          "schedules, and for the team 'default'", "admin", status=204, tags=("teams",), owns="team"),
    Route("PUT", "/api/teams/{id}/members/{name}", Api.add_team_member, "Add a person to a team (again: no "
          "change); they see its agents, phones, jobs and schedules from their next request", "admin", response=Team,
          tags=("teams",), owns="team"),
    Route("DELETE", "/api/teams/{id}/members/{name}", Api.remove_team_member, "Remove a person from a team; 404 "
          "when they are not in it", "admin", response=Team, tags=("teams",), owns="team"),
    Route("GET", "/api/scheduler", Api.scheduler_status, "Is distribution running; counts; next schedule due", "viewer",
          response=SchedulerStatus, tags=("ops",)),
    Route("POST", "/api/scheduler/stop", Api.scheduler_stop,
          "Stop distribution on every node: no new assignments; running work finishes", "admin",
          response=SchedulerStatus, tags=("ops",)),
    Route("POST", "/api/scheduler/start", Api.scheduler_start, "Start distribution again", "admin",
          response=SchedulerStatus, tags=("ops",)),
    Route("GET", "/api/schedules", Api.list_schedules, "Your teams' recurring schedules (an admin's: all)", "viewer",
          query=ScheduleListQuery, response=ScheduleList, tags=("schedules",)),
    Route("POST", "/api/schedules", Api.create_schedule, "Create a schedule: a job template fired by cron or interval",
          "operator",
          body=ScheduleCreate, response=Schedule, status=201, tags=("schedules",)),
    Route("GET", "/api/schedules/{id}", Api.get_schedule, "One schedule",
          "viewer", response=Schedule, tags=("schedules",), owns="schedule"),
    Route("PATCH", "/api/schedules/{id}", Api.patch_schedule,
          "Edit, enable or disable a schedule; the next firing is computed again from now when the rule or "
          "enabled changes", "operator", body=SchedulePatch, response=Schedule, tags=("schedules",), owns="schedule"),
    Route("DELETE", "/api/schedules/{id}", Api.delete_schedule,
          "Delete a schedule; the jobs it created stay", "operator", status=204, tags=("schedules",), owns="schedule"),
    Route("POST", "/api/schedules/{id}/run", Api.run_schedule, "Create the schedule's job now", "operator",
          response=Job, status=201, tags=("schedules",), owns="schedule"),
    Route("GET", "/api/schedules/{id}/jobs", Api.schedule_jobs, "The jobs a schedule created, newest first", "viewer",
          query=JobListQuery, response=JobList, tags=("schedules",), owns="schedule"),
    Route("GET", "/api/audit", Api.audit_events, "The audit trail, newest first, a page at a time: every change "
          "by a person, token, agent or the CLI, with the fields that changed; append-only (nothing edits or "
          "deletes it). A person other than an admin sees their teams' events only", "viewer", query=AuditQuery,
          response=AuditPage, tags=("ops",)),
    Route("GET", "/api/stats", Api.stats, "Counts by state; success rate, run time and queue wait over a window",
          "viewer",
          query=StatsQuery, response=Stats, tags=("ops",)),
    Route("GET", "/api/agent/assignments", Api.agent_poll, "Polling fallback: the agent's open assignments",
          "agent", response=ev.AgentPoll, tags=("agent",)),
    Route("POST", "/api/agent/events", Api.agent_post_events, "Polling fallback: a batch of agent events",
          "agent", body=ev.AgentEventBatch, response=ev.AgentEventResults, tags=("agent",)),
    Route("PUT", "/api/agent/artifacts/{id}/{name}", Api.upload_artifact,
          "Upload a file for one of the agent's assignments (raw body, up to 32 MiB), with its expected size and "
          "sha256 in X-Artifact-Bytes and X-Artifact-Sha256: a mismatch is a 422 and nothing is kept; 201 when "
          "stored, 200 when it was already", "agent", status=201, response=Artifact, raw_body=True,
          tags=("agent",), owns="assignment"),
    Route("POST", "/api/agent/artifacts/{id}/{name}/lost", Api.artifact_lost,
          "The agent's copy of an artifact is gone or changed before it was sent: it lists as deleted",
          "agent", body=ArtifactLost, response=Artifact, tags=("agent",), owns="assignment"),
]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def _is_tls(request: web.Request) -> bool:
    """Secure cookies when the browser's connection is TLS: here, or at the proxy in front (X-Forwarded-Proto)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https"


def _rest_owner(principal: Principal) -> str:
    return f"rest:{principal.name}"


def _input_errors(exc: ValidationError, kind: str) -> ValidationError:
    """The command's errors with their fields named as sent (``x``, not ``tap.x``)."""
    errors = exc.errors(include_url=False)
    for err in errors:
        loc = err["loc"]
        if loc and loc[0] == kind:
            err["loc"] = loc[1:]
    return ValidationError.from_exception_data(exc.title, errors)  # type: ignore[arg-type]


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """Every failure answers JSON in the contract's error shape; bad input is never a 500."""
    try:
        return await handler(request)
    except OUTAGE_ERRORS as exc:  # before ServiceError: DatabaseUnavailable is one
        if request.transport is None or request.transport.is_closing():  # the client hung up (a reset while
            log.info("client hung up mid-request", extra={"path": request.path, "error": type(exc).__name__})
            return _error("client_gone", "the client hung up", 400)  # reading its body): no outage, no one to tell
        outage.report(exc, request.path)
        response = json_response(outage.outage_body(exc), 503)
        response.headers["Retry-After"] = str(outage.RETRY_AFTER_SEC)
        return response
    except ServiceError as exc:
        return json_response(exc.body(), exc.status)
    except web.HTTPRequestEntityTooLarge:
        return json_response(ErrorBody.model_validate(
            {"error": {"code": "too_large", "message": "request body above 1 MiB"}}).model_dump(), 413)
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith("/socket.io"):
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        kept = {name: exc.headers[name] for name in ("Allow",) if name in exc.headers}  # 405 names what is served
        return _error(code, exc.reason, exc.status, kept)
    except asyncpg.PostgresError as exc:  # a query's own failure (a deadlock retried to the end, ...)
        log.warning("database error", extra={"path": request.path, "error": type(exc).__name__})
        return _error("unavailable", type(exc).__name__, 503)
    except Exception:  # a bug: still the contract's shape, never a bare text page
        log.exception("request failed", extra={"path": request.path, "method": request.method})
        return _error("internal_error", "the server failed on this request", 500)
