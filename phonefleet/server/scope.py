"""Which team a new job or schedule belongs to, decided from who asks and what they named.

A person acts within their teams (``auth.Principal.team_ids``); an admin (an admin token, or a person with the
admin role) within every team. What a principal may see is ``Principal.sees``; this module decides the team of
what they create."""

import asyncpg

from phonefleet.server.auth import Principal
from phonefleet.server.errors import Invalid
from phonefleet.server.store import DEFAULT_TEAM
from phonefleet.server.store import teams as teams_store


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
