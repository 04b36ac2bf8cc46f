"""The audit trail's contract: who changed what, when, and the fields that changed (``GET /api/audit``)."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

ActorKind = Literal["person", "token", "agent", "cli", "system"]
Via = Literal["rest", "socket", "cli", "system"]


class AuditActor(BaseModel):
    """Who made a change: a person (signed in), a named admin token, an agent, the server's CLI, or the
    server itself (an idle timeout, a shutdown)."""

    kind: ActorKind
    id: str | None = Field(default=None, description="The person's, token's or agent's id; null for the "
                                                     "environment's token, the CLI and the server.")
    name: str


class AuditEvent(BaseModel):
    id: int
    at: datetime
    actor: AuditActor
    action: str = Field(description="Object kind and verb: job.pause, device.control.take, "
                                    "agent.token.rotate, scheduler.stop, ...")
    object_kind: str
    object_id: str | None = Field(description="Null for singletons: the fleet policy, the scheduler switch.")
    team_id: int | None
    before: dict[str, Any] | None = Field(description="The fields that changed, as they were; null for a "
                                                      "creation.")
    after: dict[str, Any] | None = Field(description="The same fields as they became; null for a deletion.")
    via: Via
    address: str | None = Field(description="The caller's network address (REST and sockets).")


class AuditPage(BaseModel):
    items: list[AuditEvent] = Field(description="Newest first.")
    next_before: int | None = Field(description="Pass as ?before= for the next (older) page; null at the end.")
