"""SQL of who owns what: the team of agents, phones (their agent's), schedules and people's teams.

What the live dashboards need to send each event only to the team it belongs to (``server.rooms``); one
statement per kind, for many ids at once.
"""

from collections.abc import Sequence

from phonefleet.server.store import Conn


async def agent_teams(conn: Conn, agent_ids: Sequence[int]) -> dict[int, int]:
    """agent id -> its team (ids of no agent are left out)."""
    rows = await conn.fetch("SELECT id, team_id FROM agents WHERE id = ANY($1::bigint[])", list(agent_ids))
    return {r["id"]: r["team_id"] for r in rows}


async def device_teams(conn: Conn, device_ids: Sequence[int]) -> dict[int, int]:
    """phone id -> its agent's team (ids of no phone are left out)."""
    rows = await conn.fetch(
        "SELECT d.id, ag.team_id FROM devices d JOIN agents ag ON ag.id = d.agent_id WHERE d.id = ANY($1::bigint[])",
        list(device_ids),
    )
    return {r["id"]: r["team_id"] for r in rows}


async def schedule_teams(conn: Conn, schedule_ids: Sequence[int]) -> dict[int, int]:
    """schedule id -> its team (ids of no schedule are left out)."""
    rows = await conn.fetch("SELECT id, team_id FROM schedules WHERE id = ANY($1::bigint[])", list(schedule_ids))
    return {r["id"]: r["team_id"] for r in rows}


async def people_teams(conn: Conn, person_ids: Sequence[int]) -> dict[int, frozenset[int]]:
    """person id -> the teams they belong to now (a person of no team maps to an empty set)."""
    rows = await conn.fetch(
        """SELECT p.id, coalesce(array_agg(m.team_id) FILTER (WHERE m.team_id IS NOT NULL), '{}') AS team_ids
           FROM people p LEFT JOIN team_members m ON m.person_id = p.id
           WHERE p.id = ANY($1::bigint[]) GROUP BY p.id""",
        list(person_ids),
    )
    return {r["id"]: frozenset(r["team_ids"]) for r in rows}
