"""People, their sessions and personal tokens: the REST bodies of ``/api/session``, ``/api/users`` and
``/api/tokens``."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from phonefleet.protocol.enums import Role
from phonefleet.protocol.models import TOKEN_NAME_PATTERN

PASSWORD_MIN = 10
PASSWORD_MAX = 200


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Person(BaseModel):
    """A person (never their password)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: Role
    disabled: bool
    created_at: datetime
    team_ids: list[int] = Field(description="The teams they belong to (what they see and act on, unless an "
                                            "admin), by id.")
    teams: list[str] = Field(description="The same teams by name, in the order of team_ids.")


TeamNames = list[Annotated[str, Field(min_length=1, max_length=100)]]


class PersonCreate(_Body):
    """``POST /api/users``; the answer carries a one-time password."""

    name: str = Field(min_length=1, max_length=100, pattern=TOKEN_NAME_PATTERN)
    role: Role = Role.viewer
    teams: TeamNames = Field(default_factory=lambda: ["default"], max_length=1000,
                             description="The teams they join, by name (by default the team 'default').")


class PersonCreated(BaseModel):
    person: Person
    password: str = Field(description="Shown once; the server keeps only its argon2id hash.")


class PersonPatch(_Body):
    """``PATCH /api/users/{name}``: change a role or teams, disable (ending every session and token) or enable
    again."""

    role: Role | None = None
    disabled: bool | None = None
    teams: TeamNames | None = Field(default=None, max_length=1000,
                                    description="Replaces the teams they belong to, by name.")


class SignIn(_Body):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class SessionInfo(BaseModel):
    """Who is signed in. ``csrf_token`` (cookie sessions only) goes in ``X-CSRF-Token`` on every request that
    changes something."""

    person: Person | None = Field(default=None, description="None for a shared admin token.")
    name: str
    role: Role
    csrf_token: str | None = None


class PasswordChange(_Body):
    current_password: str = Field(min_length=1, max_length=PASSWORD_MAX)
    new_password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class PersonalToken(BaseModel):
    """A personal API token (never its secret)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None = Field(default=None, description="Recorded at most once a minute.")


class PersonalTokenCreate(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=TOKEN_NAME_PATTERN)


class PersonalTokenCreated(BaseModel):
    token: PersonalToken
    secret: str = Field(description="Shown once; send as `Authorization: Bearer ...`. It acts with its owner's "
                                    "role and stops working when revoked or when its owner is disabled.")
