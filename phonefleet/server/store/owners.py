"""SQL of whose an object is: the team of a job, schedule, agent, phone (its agent's) or assignment (its job's),
so a request can be refused before it reads or touches what the caller may not see."""

from typing import Literal

from phonefleet.server.store import Conn

TeamKind = Literal["job", "assignment", "device", "agent", "schedule", "team"]

_TEAM_OF: dict[TeamKind, str] = {
    "job": "SELECT team_id FROM jobs WHERE id = $1",
    "assignment": "SELECT j.team_id FROM assignments a JOIN jobs j ON j.id = a.job_id WHERE a.id = $1",
    "device": "SELECT ag.team_id FROM devices d JOIN agents ag ON ag.id = d.agent_id WHERE d.id = $1",
    "agent": "SELECT team_id FROM agents WHERE id = $1",
    "schedule": "SELECT team_id FROM schedules WHERE id = $1",
    "team": "SELECT id FROM teams WHERE id = $1",
}
TEAM_KINDS: frozenset[str] = frozenset(_TEAM_OF)


async def team_of(conn: Conn, kind: TeamKind, object_id: int) -> int | None:
    """The team the object belongs to, or None when there is no such object."""
    team_id = await conn.fetchval(_TEAM_OF[kind], object_id)
    return None if team_id is None else int(team_id)
