"""The REST surface described as data: each route's method, path, access, bodies and answers, and the query
models. ``api.ROUTES`` is the table; ``openapi`` builds the document from it."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from phonefleet.protocol.artifacts import ArtifactKind
from phonefleet.protocol.audit import ActorKind
from phonefleet.protocol.enums import AssignmentStatus, DeviceEventKind, JobStatus
from phonefleet.protocol.timeline import LogLevel

Handler = Callable[[Any, web.Request], Awaitable[web.StreamResponse]]
"""An ``Api`` method: (the api, the request) -> the response."""
Access = Literal["public", "viewer", "operator", "admin", "agent"]
"""Who may call a route: anyone; a person or token of at least this role (``protocol.enums.Role``); or an agent."""
ACCESS_LEVELS: tuple[Access, ...] = ("public", "viewer", "operator", "admin", "agent")
Owns = Literal["job", "assignment", "device", "agent", "schedule", "team", "own_token"]
"""What a path's ``{id}`` names. A team's object (all but ``own_token``) is checked before the handler runs: a
person who does not see its team gets the very 404 a missing one gets (``scope.check_visible``). ``own_token``:
one of the caller's own personal tokens, which its service finds among theirs only."""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    access: Access
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    tags: tuple[str, ...] = field(default_factory=tuple)
    many: bool = False
    """The answer is a JSON array of ``response``."""
    database: bool = True
    """Needs the database: 503 ``database_unavailable`` during an outage (and ``starting`` before it is up)."""
    raw_body: bool = False
    """Takes the request's bytes as they are (an upload), not a JSON document."""
    body_required: bool = True
    conflicts: bool = False
    """May answer 409 though it writes nothing (the phone it reads from is offline)."""
    gone: bool = False
    """May answer 410: what it names existed but was deleted (artifact retention), and the body says why."""
    produces: tuple[str, ...] = ("application/json",)
    also: tuple[tuple[str, str], ...] = ()
    """Error statuses it answers besides those its properties imply, each with why (for the OpenAPI document)."""
    owns: Owns | None = None
    """What the path's ``{id}`` is: every route with an ``{id}`` names it (a test holds the table to it)."""


MAX_OFFSET = 2**63 - 1
"""PostgreSQL's OFFSET is a bigint; a larger one must be a 422, not a driver overflow."""


class JobListQuery(BaseModel):
    status: list[JobStatus] | None = None
    search: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class AssignmentQuery(BaseModel):
    status: AssignmentStatus | None = None
    dead: bool = Field(default=False, description="Only dead letters: failed or timed out for good "
                                                  "(not retried on another phone, not requeued).")
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class LogcatQuery(BaseModel):
    level: LogLevel | None = Field(default=None, description="This severity and above (V D I W E F).")
    tag: str | None = Field(default=None, min_length=1, max_length=200, description="Exactly this tag.")
    q: str | None = Field(default=None, min_length=1, max_length=200,
                          description="Case-insensitive text in the tag or message.")
    limit: int = Field(default=1000, ge=1, le=10_000, description="At most this many lines (the first that match).")


class AssignmentListQuery(AssignmentQuery):
    device_id: int | None = Field(default=None, ge=1, le=MAX_OFFSET, description="One phone's runs (its page "
                                                                                  "in the dashboard).")


class DeviceEventQuery(BaseModel):
    before: int | None = Field(default=None, ge=1, le=MAX_OFFSET, description="Events older than this id.")
    limit: int = Field(default=50, ge=1, le=500)
    kind: list[DeviceEventKind] | None = None


class ArtifactQuery(BaseModel):
    kind: ArtifactKind | None = None
    limit: int = Field(default=50, ge=1, le=500)
    before: int | None = Field(default=None, ge=1, le=MAX_OFFSET, description="Artifacts older than this id "
                                                                             "(the previous page's next_before).")


class StatsQuery(BaseModel):
    window_sec: int = Field(default=86_400, ge=60, le=31_536_000,
                            description="Rates and times cover this many seconds back from now.")


class ScheduleListQuery(BaseModel):
    enabled: bool | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ScreenQuery(BaseModel):
    format: Literal["jpeg", "png"] = Field(default="jpeg", description="png: full size, lossless.")
    max_width: int | None = Field(default=None, ge=16, le=4000, description="Scaled down to this width at most "
                                                                            "(thumbnails).")




class AuditQuery(BaseModel):
    """The text filters are bounded so that a query string of them all, each percent-encoded at its longest,
    stays within a request line the server reads (8,190 bytes)."""

    actor: str | None = Field(default=None, min_length=1, max_length=200, description="Exactly this actor name.")
    actor_kind: ActorKind | None = None
    team_id: int | None = Field(default=None, ge=1, le=MAX_OFFSET)
    object_kind: str | None = Field(default=None, min_length=1, max_length=40,
                                    description="job, device, agent, schedule, admin_token, fleet_policy, scheduler")
    object_id: str | None = Field(default=None, min_length=1, max_length=100)
    action: str | None = Field(default=None, min_length=1, max_length=60, description="Exactly this action "
                                                                                       "(job.pause, ...).")
    since: datetime | None = Field(default=None, description="At or after this moment (ISO 8601).",
                                   json_schema_extra={"maxLength": 40})
    until: datetime | None = Field(default=None, description="Before this moment (ISO 8601).",
                                   json_schema_extra={"maxLength": 40})
    before: int | None = Field(default=None, ge=1, le=MAX_OFFSET, description="Events older than this id "
                                                                             "(the previous page's next_before).")
    limit: int = Field(default=50, ge=1, le=500)
