"""The rooms of ``/dashboard`` sockets: one per team and one for admins, so an event about something of a team
reaches only the dashboards that may see it (issue 15: a person of team A never sees anything of team B live).

A dashboard joins its principal's rooms when it connects: an admin (an admin token, or a person with the admin
role) the room ``ADMINS`` only, a person one room per team of theirs. Everything a team owns goes to
``of_team(team)``: that team's room and the admins'. The team is read when the event goes out (from the job's
row, or ``store.owners`` for phones, agents and schedules), never remembered, so an agent moved to another team
(``PATCH /api/agents/{id}``) takes its phones' events with it from the next one on. A person added to or
removed from a team is moved between rooms by ``sync`` (the token re-check, and a person's revocation message),
and at the latest when they reconnect.
"""

from collections.abc import Iterable, Sequence
from typing import Final

import asyncpg
import socketio

from phonefleet.protocol import events as ev
from phonefleet.server.auth import Principal
from phonefleet.server.store import owners

ADMINS: Final = "admins"
"""The room of every dashboard that sees all teams."""


def team_room(team_id: int) -> str:
    return f"team:{team_id}"


def rooms_of(principal: Principal) -> set[str]:
    """The rooms a dashboard of ``principal`` is in."""
    if principal.sees_all:
        return {ADMINS}
    return {team_room(t) for t in principal.team_ids}


def of_team(team_id: int) -> list[str]:
    """Where an event about something of ``team_id`` goes: the team's room and the admins'."""
    return [team_room(team_id), ADMINS]


class Rooms:
    """Joins dashboard sockets to their rooms, and reads the team of what an event is about."""

    def __init__(self, sio: socketio.AsyncServer, pool: asyncpg.Pool) -> None:
        self.sio = sio
        self.pool = pool

    async def join(self, sid: str, principal: Principal) -> None:
        for room in sorted(rooms_of(principal)):
            await self.sio.enter_room(sid, room, namespace=ev.DASHBOARD_NAMESPACE)

    async def move(self, sid: str, before: Principal, after: Principal) -> None:
        """The socket leaves the rooms ``before`` had and ``after`` has not, and joins the new ones."""
        old, new = rooms_of(before), rooms_of(after)
        for room in sorted(old - new):
            await self.sio.leave_room(sid, room, namespace=ev.DASHBOARD_NAMESPACE)
        for room in sorted(new - old):
            await self.sio.enter_room(sid, room, namespace=ev.DASHBOARD_NAMESPACE)

    async def people_teams(self, person_ids: Sequence[int]) -> dict[int, frozenset[int]]:
        async with self.pool.acquire() as conn:
            return await owners.people_teams(conn, person_ids)

    async def device_teams(self, device_ids: Iterable[int]) -> dict[int, int]:
        ids = sorted(set(device_ids))
        if not ids:
            return {}
        async with self.pool.acquire() as conn:
            return await owners.teams_of(conn, "device", ids)
