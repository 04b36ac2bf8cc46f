"""Which team a new job or schedule belongs to, and whether a principal may see an existing object.

A person acts within their teams (``auth.Principal.team_ids``); an admin (an admin token, or a person with the
admin role) within every team. What a principal may see is ``Principal.sees``; this module decides the team of
what they create, and refuses what they name but may not see as if it did not exist."""

from typing import cast

import asyncpg

from phonefleet.server.auth import Principal
from phonefleet.server.errors import Invalid, NotFound
from phonefleet.server.routes import Owns
from phonefleet.server.store import DEFAULT_TEAM
from phonefleet.server.store import owners as owners_store
from phonefleet.server.store import teams as teams_store


async def check_visible(pool: asyncpg.Pool, principal: Principal, kind: Owns, object_id: int) -> None:
    """NotFound (``"<kind> <id> not found"``) unless ``principal`` sees the object's team, whether the object
    is another team's or missing altogether, so nobody learns that another team's object exists. Admins see
    every team; an agent's own work and a person's own tokens are checked by their services (by agent and by
    person), not by team."""
    if principal.sees_all or principal.kind == "agent" or kind not in owners_store.TEAM_KINDS:
        return
    async with pool.acquire() as conn:
        team_id = await owners_store.team_of(conn, cast(owners_store.TeamKind, kind), object_id)
    if team_id is None or team_id not in principal.team_ids:
        raise NotFound(f"{kind} {object_id} not found")


async def team_for_new(pool: asyncpg.Pool, principal: Principal, asked: int | None, field: str = "team_id") -> int:
    """The team of something ``principal`` creates: the one they named (theirs, or any existing team for an
    admin), else their only team (an admin's: the team 'default'). A 422 names ``field`` when the team is not
    theirs or does not exist, or when they belong to several teams and named none."""
    if asked is not None:
        if principal.sees(asked):
            async with pool.acquire() as conn:
                if await teams_store.exists(conn, asked):
                    return asked
        raise Invalid.field(field, f"no team {asked} among yours")
    if principal.sees_all:
        return DEFAULT_TEAM
    if len(principal.team_ids) == 1:
        return next(iter(principal.team_ids))
    if not principal.team_ids:
        raise Invalid.field(field, "you belong to no team: an admin adds you to one")
    raise Invalid.field(field, f"you belong to teams {sorted(principal.team_ids)}: name one")
