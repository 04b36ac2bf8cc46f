"""SQL of the fleet's figures per team: what a team's dashboards show in their header (``fleet:stats``)."""

from collections.abc import Sequence
from typing import NamedTuple

from phonefleet.protocol.enums import DeviceState
from phonefleet.server.store import Conn


class TeamFleet(NamedTuple):
    agents_online: int
    connected_devices: int
    devices: dict[str, int]


async def fleet_by_team(conn: Conn, team_ids: Sequence[int], grace_sec: float) -> dict[int, TeamFleet]:
    """Each team's connected agents and its phones by state (every team asked for is in the answer)."""
    phones = await conn.fetch(
        """SELECT ag.team_id, d.state, count(*)::int AS n, count(*) FILTER (WHERE d.connected)::int AS connected
           FROM devices d JOIN agents ag ON ag.id = d.agent_id
           WHERE ag.team_id = ANY($1::bigint[]) GROUP BY ag.team_id, d.state""",
        list(team_ids),
    )
    agents = await conn.fetch(
        """SELECT team_id, count(*) FILTER (WHERE last_seen_at > now() - make_interval(secs => $2))::int AS online
           FROM agents WHERE team_id = ANY($1::bigint[]) GROUP BY team_id""",
        list(team_ids), grace_sec,
    )
    online = {r["team_id"]: r["online"] for r in agents}
    figures = {t: TeamFleet(online.get(t, 0), 0, {str(s): 0 for s in DeviceState}) for t in team_ids}
    for r in phones:
        team = figures[r["team_id"]]
        team.devices[r["state"]] = r["n"]
        figures[r["team_id"]] = team._replace(connected_devices=team.connected_devices + r["connected"])
    return figures
