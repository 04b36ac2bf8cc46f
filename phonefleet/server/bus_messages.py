"""What server nodes (and the CLI) tell each other over the bus: one typed message per kind.

Small by design (``pg_notify`` carries 8 kB): a large payload travels as a ``Kick`` that makes the node
holding the agent read it from the database.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

KICK_BATCH = 400
"""Agents per ``Kick``: 400 ids of up to 15 digits stay within a NOTIFY's payload."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the sender's ``node`` rides along


class ToAgent(_Message):
    """An event for an agent connected to some other node."""

    kind: Literal["agent"] = "agent"
    agent_id: int
    event: str
    data: dict[str, Any] | None = None


class Kick(_Message):
    """The nodes holding these agents re-send their pending assignments from the database: one message for all
    the agents a fill reached on other nodes (a fan-out to 500 agents spread over three nodes is one NOTIFY, not
    one per agent)."""

    kind: Literal["kick"] = "kick"
    agent_ids: list[int] = Field(default_factory=list, max_length=KICK_BATCH)
    agent_id: int | None = Field(default=None, description="One agent: what a node of an earlier version sends.")

    def ids(self) -> list[int]:
        return self.agent_ids if self.agent_id is None else [*self.agent_ids, self.agent_id]


class Dirty(_Message):
    """Jobs and phones that changed on another node: its dashboards are told there, these are told here."""

    kind: Literal["dirty"] = "dirty"
    status: list[int] = Field(default_factory=list, description="Jobs whose status changed (sent at once).")
    jobs: list[int] = Field(default_factory=list, description="Jobs whose progress changed (throttled).")
    devices: list[int] = Field(default_factory=list)


class ToDashboards(_Message):
    """An event for the dashboards in some rooms (``server.rooms``: a team's and the admins'), or for all."""

    kind: Literal["dashboard"] = "dashboard"
    event: str
    data: Any = None
    rooms: list[str] | None = Field(default=None, max_length=10, description="None: every dashboard.")


class FillAll(_Message):
    """Every node fills (distribution was started again)."""

    kind: Literal["fill"] = "fill"


class Revoked(_Message):
    """A token was revoked or rotated away: its sockets drop on every node."""

    kind: Literal["revoked"] = "revoked"
    agent_id: int | None = None
    admin_token_id: int | None = None
    person_id: int | None = None
    """A person was disabled, changed role or password, signed out or revoked a token: their sockets are checked."""


BusMessage = Annotated[ToAgent | Kick | Dirty | ToDashboards | FillAll | Revoked, Field(discriminator="kind")]
BUS_MESSAGE: TypeAdapter[BusMessage] = TypeAdapter(BusMessage)
