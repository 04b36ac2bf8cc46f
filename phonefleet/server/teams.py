"""Teams: create, rename and delete them, add and remove their people, move an agent (and so its phones) from one
to another. The transactions both the REST API and ``phonefleet-server teams`` run, each audited with what it
changed.

A membership change sends its person's bus message in the same transaction (as a role change does), so every
node re-checks that person's dashboard sockets when it takes effect.
"""

from collections.abc import Sequence

import asyncpg
from pydantic import ValidationError

from phonefleet.protocol.teams import Team, TeamCreate
from phonefleet.server import audit, bus
from phonefleet.server.auth import Principal
from phonefleet.server.bus_messages import Revoked
from phonefleet.server.errors import Conflict, Invalid, NotFound
from phonefleet.server.revocations import Revocations
from phonefleet.server.store import DEFAULT_TEAM, Conn
from phonefleet.server.store import people as people_store
from phonefleet.server.store import teams as teams_store
from phonefleet.server.store.records import PersonRecord, TeamRecord


def team_model(row: TeamRecord) -> Team:
    return Team.model_validate(dict(row.items()))


def _valid_name(name: str) -> str:
    try:
        return TeamCreate(name=name).name
    except ValidationError as exc:
        raise Invalid.from_validation(exc) from None


async def team_ids_named(conn: Conn, names: Sequence[str], field: str = "teams") -> list[int]:
    """The ids of the teams ``names`` names (each once, in order); a 422 naming ``field`` for an unknown one."""
    unique = list(dict.fromkeys(names))
    found = await teams_store.ids_by_name(conn, unique)
    unknown = [n for n in unique if n not in found]
    if unknown:
        raise Invalid.field(field, f"no team named {unknown[0]!r}")
    return [found[n] for n in unique]


async def team_named(conn: Conn, name: str) -> int:
    """A team's id by name (the CLI names teams); 404 when there is none."""
    found = await teams_store.ids_by_name(conn, [name])
    if name not in found:
        raise NotFound(f"no team named {name!r}")
    return found[name]


async def _team(conn: Conn, team_id: int) -> TeamRecord:
    row = await teams_store.get(conn, team_id)
    if row is None:
        raise NotFound(f"team {team_id} not found")
    return row


async def _person(conn: Conn, name: str) -> PersonRecord:
    person = await people_store.by_name(conn, name)
    if person is None:
        raise NotFound(f"no person named {name!r}")
    return person


async def _locked(conn: Conn, team_id: int) -> str:
    name = await teams_store.lock(conn, team_id)
    if name is None:
        raise NotFound(f"team {team_id} not found")
    return name


async def create(conn: Conn, name: str) -> TeamRecord:
    name = _valid_name(name)
    async with conn.transaction():
        team_id = await teams_store.create(conn, name)
        if team_id is None:
            raise Conflict(f"a team named {name!r} exists")
        await audit.record(conn, "team.create", "team", team_id, after={"name": name})
        return await _team(conn, team_id)


async def rename(conn: Conn, team_id: int, name: str) -> TeamRecord:
    name = _valid_name(name)
    async with conn.transaction():
        was = await _locked(conn, team_id)
        try:
            async with conn.transaction():
                await teams_store.rename(conn, team_id, name)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a team named {name!r} exists") from None
        await audit.record_change(conn, "team.rename", "team", team_id, before={"name": was}, after={"name": name})
        return await _team(conn, team_id)


async def delete(conn: Conn, team_id: int) -> None:
    """Only an empty team goes: its agents moved, its jobs and schedules deleted first (409 naming what is left).
    The team 'default' stays (where things go when no team is named)."""
    if team_id == DEFAULT_TEAM:
        raise Conflict("the team 'default' cannot be deleted")
    async with conn.transaction():
        name = await _locked(conn, team_id)
        left = await teams_store.owned(conn, team_id)
        owned = [f"{n} {kind}" for kind, n in (("agent(s)", left.agents), ("job(s)", left.jobs),
                                                ("schedule(s)", left.schedules)) if n]
        if owned:
            raise Conflict(f"team {name!r} still owns {', '.join(owned)}: move or delete them first")
        try:
            async with conn.transaction():
                await teams_store.delete(conn, team_id)
        except asyncpg.ForeignKeyViolationError:  # a job made for it a moment ago
            raise Conflict(f"team {name!r} still owns agents, jobs or schedules: move or delete them first") from None
        await audit.record(conn, "team.delete", "team", team_id, before={"name": name})


async def add_member(conn: Conn, team_id: int, person_name: str, *, node: str) -> tuple[TeamRecord, int]:
    """(the team, the person's id); adding a member twice changes nothing (and records nothing)."""
    async with conn.transaction():
        team = await _locked(conn, team_id)
        person = await _person(conn, person_name)
        if await teams_store.add_member(conn, team_id, person.id):
            await audit.record(conn, "team.member_add", "team", team_id,
                               before={"person": person.name, "member": False},
                               after={"person": person.name, "member": True, "team": team})
            await bus.notify(conn, Revoked(person_id=person.id), node)
        return await _team(conn, team_id), person.id


async def remove_member(conn: Conn, team_id: int, person_name: str, *, node: str) -> tuple[TeamRecord, int]:
    """(the team, the person's id); 404 when they are not a member."""
    async with conn.transaction():
        team = await _locked(conn, team_id)
        person = await _person(conn, person_name)
        if not await teams_store.remove_member(conn, team_id, person.id):
            raise NotFound(f"{person.name!r} is not a member of team {team!r}")
        await audit.record(conn, "team.member_remove", "team", team_id,
                           before={"person": person.name, "member": True, "team": team},
                           after={"person": person.name, "member": False})
        await bus.notify(conn, Revoked(person_id=person.id), node)
        return await _team(conn, team_id), person.id


async def set_teams(conn: Conn, person_id: int, team_ids: Sequence[int], before: Sequence[int]) -> None:
    """A person belongs to exactly ``team_ids`` from now on (in the caller's transaction; audited as
    ``person.update``)."""
    await teams_store.set_teams_of(conn, person_id, team_ids)
    await audit.record_change(conn, "person.update", "person", person_id, before={"team_ids": sorted(before)},
                              after={"team_ids": sorted(team_ids)})


async def move_agent(conn: Conn, agent_id: int, team_id: int) -> tuple[int, list[int]]:
    """Move an agent, and so its phones, to ``team_id`` (422 naming team_id when there is no such team): from
    now on its phones are claimed only for that team's jobs; what runs on them now runs on. The team it left,
    and its phones' ids."""
    async with conn.transaction():
        if await teams_store.lock(conn, team_id) is None:
            raise Invalid.field("team_id", f"no team {team_id}")
        was = await teams_store.move_agent(conn, agent_id, team_id)
        if was is None:
            raise NotFound(f"agent {agent_id} not found")
        await audit.record_change(conn, "agent.move", "agent", agent_id, before={"team_id": was},
                                  after={"team_id": team_id})
        return was, await teams_store.device_ids_of_agent(conn, agent_id)


class Teams:
    """This node's REST side of teams: each call runs one transaction above; a membership change is applied to
    this node's sockets at once (the bus skips the sender's own messages)."""

    def __init__(self, pool: asyncpg.Pool, revocations: Revocations, node: str) -> None:
        self.pool = pool
        self.revocations = revocations
        self.node = node

    async def visible(self, principal: Principal) -> list[Team]:
        """Every team for an admin; a person's own teams otherwise."""
        async with self.pool.acquire() as conn:
            return [team_model(r) for r in await teams_store.list_all(conn, principal.teams)]

    async def get(self, team_id: int) -> Team:
        """One team (whether the caller sees it, the route's ``owns`` checked first)."""
        async with self.pool.acquire() as conn:
            return team_model(await _team(conn, team_id))

    async def create(self, name: str) -> Team:
        async with self.pool.acquire() as conn:
            return team_model(await create(conn, name))

    async def rename(self, team_id: int, name: str) -> Team:
        async with self.pool.acquire() as conn:
            return team_model(await rename(conn, team_id, name))

    async def delete(self, team_id: int) -> None:
        async with self.pool.acquire() as conn:
            await delete(conn, team_id)

    async def add_member(self, team_id: int, person_name: str) -> Team:
        async with self.pool.acquire() as conn:
            row, person_id = await add_member(conn, team_id, person_name, node=self.node)
        await self.revocations.apply(Revoked(person_id=person_id))
        return team_model(row)

    async def remove_member(self, team_id: int, person_name: str) -> Team:
        async with self.pool.acquire() as conn:
            row, person_id = await remove_member(conn, team_id, person_name, node=self.node)
        await self.revocations.apply(Revoked(person_id=person_id))
        return team_model(row)

