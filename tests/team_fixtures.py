"""Teams for tests, made in SQL (not through ``/api/teams``, so these tests stand on the scoping alone): a team,
people who belong to it only (each with a personal token), and agents moved into it."""

from dataclasses import dataclass

from tests.conftest import RunningServer


@dataclass(frozen=True)
class Member:
    name: str
    role: str
    token: str
    """A personal token: it acts with the person's role and teams as they are at each request."""


async def add_team(server: RunningServer, name: str) -> int:
    async with server.services.pool.acquire() as conn:
        return int(await conn.fetchval("INSERT INTO teams (name) VALUES ($1) RETURNING id", name))


async def set_teams(server: RunningServer, person: str, team_ids: list[int]) -> None:
    """Make ``person`` a member of exactly these teams."""
    async with server.services.pool.acquire() as conn, conn.transaction():
        person_id = await conn.fetchval("SELECT id FROM people WHERE name = $1", person)
        assert person_id is not None, person
        await conn.execute("DELETE FROM team_members WHERE person_id = $1", person_id)
        await conn.execute("INSERT INTO team_members (team_id, person_id) SELECT unnest($1::bigint[]), $2",
                           team_ids, person_id)


async def personal_token(server: RunningServer, name: str, password: str) -> str:
    """Sign ``name`` in and make a personal token with the session."""
    async with server.session.post(server.url + "/api/session", json={"name": name, "password": password}) as r:
        assert r.status == 201, await r.text()
        cookie = r.cookies["pf_session"].value
        csrf = (await r.json())["csrf_token"]
    async with server.session.post(server.url + "/api/tokens", json={"name": "tests"},
                                   headers={"Cookie": f"pf_session={cookie}", "X-CSRF-Token": csrf}) as r:
        assert r.status == 201, await r.text()
        secret: str = (await r.json())["secret"]
        return secret


async def add_member(server: RunningServer, name: str, role: str, team_ids: list[int]) -> Member:
    """A new person with ``role`` who belongs to ``team_ids`` only, and a personal token of theirs."""
    created = await server.ok("POST", "/api/users", {"name": name, "role": role})
    await set_teams(server, name, team_ids)
    return Member(name=name, role=role, token=await personal_token(server, name, created["password"]))


async def move_agent(server: RunningServer, agent: str, team_id: int) -> int:
    """Move the agent named ``agent`` (and so its phones) to ``team_id``; its id."""
    async with server.services.pool.acquire() as conn:
        agent_id = await conn.fetchval("UPDATE agents SET team_id = $2 WHERE name = $1 RETURNING id", agent, team_id)
    assert agent_id is not None, agent
    return int(agent_id)
