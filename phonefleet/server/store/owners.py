"""SQL of whose an object is: the team of a job, schedule, agent, phone (its agent's), assignment (its job's) or
team, and the teams people belong to. REST refuses what the caller may not see before it reads or touches it
(``scope.check_visible``); the live dashboards send each event only to the team it belongs to (``server.rooms``).
One statement per kind, for one id or many at once."""

from collections.abc import Sequence
from typing import Literal

from phonefleet.server.store import Conn

TeamKind = Literal["job", "assignment", "device", "agent", "schedule", "team"]

_TEAMS_OF: dict[TeamKind, str] = {
    "job": "SELECT id, team_id FROM jobs WHERE id = ANY($1::bigint[])",
    "assignment": "SELECT a.id, j.team_id FROM assignments a JOIN jobs j ON j.id = a.job_id "
                  "WHERE a.id = ANY($1::bigint[])",
    "device": "SELECT d.id, ag.team_id FROM devices d JOIN agents ag ON ag.id = d.agent_id "
              "WHERE d.id = ANY($1::bigint[])",
    "agent": "SELECT id, team_id FROM agents WHERE id = ANY($1::bigint[])",
    "schedule": "SELECT id, team_id FROM schedules WHERE id = ANY($1::bigint[])",
    "team": "SELECT id, id AS team_id FROM teams WHERE id = ANY($1::bigint[])",
}
TEAM_KINDS: frozenset[str] = frozenset(_TEAMS_OF)


async def teams_of(conn: Conn, kind: TeamKind, ids: Sequence[int]) -> dict[int, int]:
    """object id -> its team (ids of no such object are left out)."""
    rows = await conn.fetch(_TEAMS_OF[kind], list(ids))
    return {r["id"]: r["team_id"] for r in rows}


async def team_of(conn: Conn, kind: TeamKind, object_id: int) -> int | None:
    """The team the object belongs to, or None when there is no such object."""
    return (await teams_of(conn, kind, [object_id])).get(object_id)


async def people_teams(conn: Conn, person_ids: Sequence[int]) -> dict[int, frozenset[int]]:
    """person id -> the teams they belong to now (a person of no team maps to an empty set)."""
    rows = await conn.fetch(
        """SELECT p.id, coalesce(array_agg(m.team_id) FILTER (WHERE m.team_id IS NOT NULL), '{}') AS team_ids
           FROM people p LEFT JOIN team_members m ON m.person_id = p.id
           WHERE p.id = ANY($1::bigint[]) GROUP BY p.id""",
        list(person_ids),
    )
    return {r["id"]: frozenset(r["team_ids"]) for r in rows}
