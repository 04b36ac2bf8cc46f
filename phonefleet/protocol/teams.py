"""Teams: the REST bodies of ``/api/teams``. Agents (and so their phones), jobs and schedules belong to one team; a
person belongs to one or more, and sees and acts on their teams' things only (an admin on every team's)."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from phonefleet.protocol.models import TOKEN_NAME_PATTERN

DEFAULT_TEAM_NAME = "default"
"""The team everything made before teams belongs to (id 1); it cannot be deleted."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Team(BaseModel):
    id: int
    name: str
    members: list[str] = Field(description="Its people, by name.")
    agents: int = Field(description="How many agents (and so their phones) belong to it.")
    created_at: datetime | None = None


class TeamCreate(_Body):
    """``POST /api/teams``; the name follows the rules of people's names."""

    name: str = Field(min_length=1, max_length=100, pattern=TOKEN_NAME_PATTERN)


class TeamPatch(_Body):
    """``PATCH /api/teams/{id}``: rename."""

    name: str = Field(min_length=1, max_length=100, pattern=TOKEN_NAME_PATTERN)
