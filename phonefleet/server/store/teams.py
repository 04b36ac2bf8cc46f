"""SQL of teams and their members (migration 0016), and of moving an agent between teams."""

from collections.abc import Sequence

from phonefleet.server.store import Conn
from phonefleet.server.store.records import TeamOwnings, TeamRecord

TEAM_COLUMNS = """
    t.id, t.name, t.created_at,
    ARRAY(SELECT p.name FROM team_members m JOIN people p ON p.id = m.person_id WHERE m.team_id = t.id
          ORDER BY p.name) AS members,
    (SELECT count(*) FROM agents a WHERE a.team_id = t.id)::int AS agents
"""


async def exists(conn: Conn, team_id: int) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)", team_id))


async def get(conn: Conn, team_id: int) -> TeamRecord | None:
    return await conn.fetchrow(f"SELECT {TEAM_COLUMNS} FROM teams t WHERE t.id = $1", team_id,
                               record_class=TeamRecord)


async def list_all(conn: Conn, team_ids: Sequence[int] | None) -> list[TeamRecord]:
    """Every team (``team_ids`` None), or those of ``team_ids``, by name."""
    return await conn.fetch(
        f"SELECT {TEAM_COLUMNS} FROM teams t WHERE $1::bigint[] IS NULL OR t.id = ANY($1::bigint[]) ORDER BY t.name",
        None if team_ids is None else list(team_ids), record_class=TeamRecord)


async def ids_by_name(conn: Conn, names: Sequence[str]) -> dict[str, int]:
    """The ids of those of ``names`` that name a team."""
    rows = await conn.fetch("SELECT name, id FROM teams WHERE name = ANY($1::text[])", list(names))
    return {r["name"]: int(r["id"]) for r in rows}


async def create(conn: Conn, name: str) -> int | None:
    """The new team's id, or None when the name is taken (the key decides, across processes)."""
    found = await conn.fetchval("INSERT INTO teams (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
                                name)
    return None if found is None else int(found)


async def lock(conn: Conn, team_id: int) -> str | None:
    """The team's name, its row locked to the end of the transaction (None: no such team)."""
    name: str | None = await conn.fetchval("SELECT name FROM teams WHERE id = $1 FOR UPDATE", team_id)
    return name


async def rename(conn: Conn, team_id: int, name: str) -> None:
    """Raises ``asyncpg.UniqueViolationError`` when another team has the name."""
    await conn.execute("UPDATE teams SET name = $2 WHERE id = $1", team_id, name)


async def owned(conn: Conn, team_id: int) -> TeamOwnings:
    """What belongs to the team and stops its deletion."""
    row: TeamOwnings | None = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM agents WHERE team_id = $1)::int AS agents,
                  (SELECT count(*) FROM jobs WHERE team_id = $1)::int AS jobs,
                  (SELECT count(*) FROM schedules WHERE team_id = $1)::int AS schedules""",
        team_id, record_class=TeamOwnings)
    assert row is not None  # a SELECT without FROM has one row
    return row


async def delete(conn: Conn, team_id: int) -> None:
    """Raises ``asyncpg.ForeignKeyViolationError`` while an agent, job or schedule still belongs to it."""
    await conn.execute("DELETE FROM teams WHERE id = $1", team_id)


async def add_member(conn: Conn, team_id: int, person_id: int) -> bool:
    """True when they were not a member yet."""
    return await conn.fetchval(
        """INSERT INTO team_members (team_id, person_id) VALUES ($1, $2) ON CONFLICT DO NOTHING
           RETURNING true""", team_id, person_id) is not None


async def remove_member(conn: Conn, team_id: int, person_id: int) -> bool:
    """True when they were a member."""
    return await conn.fetchval("DELETE FROM team_members WHERE team_id = $1 AND person_id = $2 RETURNING true",
                               team_id, person_id) is not None


async def set_teams_of(conn: Conn, person_id: int, team_ids: Sequence[int]) -> None:
    """The person belongs to exactly ``team_ids`` from now on."""
    await conn.execute("DELETE FROM team_members WHERE person_id = $1 AND team_id <> ALL($2::bigint[])",
                       person_id, list(team_ids))
    await conn.execute("""INSERT INTO team_members (team_id, person_id) SELECT t, $1 FROM unnest($2::bigint[]) t
                          ON CONFLICT DO NOTHING""", person_id, list(team_ids))


async def move_agent(conn: Conn, agent_id: int, team_id: int) -> int | None:
    """Move the agent (and so its phones) to ``team_id``; the team it was in, or None when there is no such
    agent."""
    was = await conn.fetchval("SELECT team_id FROM agents WHERE id = $1 FOR UPDATE", agent_id)
    if was is None:
        return None
    await conn.execute("UPDATE agents SET team_id = $2 WHERE id = $1", agent_id, team_id)
    return int(was)


async def device_ids_of_agent(conn: Conn, agent_id: int) -> list[int]:
    return [int(r["id"]) for r in await conn.fetch("SELECT id FROM devices WHERE agent_id = $1", agent_id)]
