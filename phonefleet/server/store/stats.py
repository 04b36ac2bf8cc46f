"""SQL of the fleet's figures: counts by state (``/api/stats`` and ``/metrics``) and rates and
durations of the assignments of a recent window."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from phonefleet.server.store import Conn, teams_arg
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store


@dataclass(frozen=True)
class PhoneFigures:
    serial: str
    agent: str
    state: str
    battery: int | None
    battery_temp_c: float | None
    success_rate_1h: float | None


@dataclass(frozen=True)
class FleetCounts:
    jobs: dict[str, int]
    assignments: dict[str, int]
    devices: dict[str, int]
    agents: dict[str, int]
    """online, paused, offline by status; ``connected``: seen within the grace period, on any node."""
    connected_devices: int
    """Phones their agents report plugged in, whatever their state."""
    phones: list[PhoneFigures]
    """Each phone's health and recent success, for the per-phone gauges."""



async def fleet_counts(conn: Conn, grace_sec: float, teams: Sequence[int] | None = None) -> FleetCounts:
    """Everything counted by state, one small query per table; ``teams``: only what these teams own (None: all)."""
    return FleetCounts(
        jobs=await jobs_store.counts_by_status(conn, teams),
        assignments=await assignments_store.counts_by_status(conn, teams),
        devices=await devices_store.counts_by_state(conn, teams),
        agents=await agents_store.counts_by_status(conn, grace_sec, teams),
        connected_devices=await devices_store.count_connected(conn, teams),
        phones=[PhoneFigures(**dict(r.items())) for r in await conn.fetch(_PHONES_SQL, teams_arg(teams))],
    )


_PHONES_SQL = """
    SELECT d.serial, ag.name AS agent, d.state, d.battery, (d.health->>'battery_temp_c')::float8 AS battery_temp_c,
           (SELECT round(count(*) FILTER (WHERE a.status = 'completed')::numeric / nullif(count(*), 0), 4)::float8
            FROM assignments a WHERE a.device_id = d.id AND a.finished_at > now() - interval '1 hour'
              AND a.status IN ('completed', 'failed', 'timed_out')) AS success_rate_1h
    FROM devices d JOIN agents ag ON ag.id = d.agent_id
    WHERE (d.connected OR d.state = 'quarantined') AND ($1::bigint[] IS NULL OR ag.team_id = ANY($1))
    ORDER BY d.id
"""
"""Phones plugged in (and quarantined ones): a gone phone's gauges go with it."""


# Times are clamped at zero: agents may report their own start and finish times, and a phone's
# clock a little behind the server's must not make a negative duration.
_FINISHED_SQL = """
    WITH ended AS (
        SELECT a.status, greatest(0, extract(epoch FROM a.finished_at - a.started_at))::float8 AS run_sec
        FROM assignments a
        WHERE a.finished_at > now() - make_interval(secs => $1)
          AND a.status IN ('completed', 'failed', 'timed_out') AND {of_teams}
    )
    SELECT count(*) FILTER (WHERE status = 'completed')::int AS completed,
           count(*)::int AS ended,
           count(run_sec) FILTER (WHERE status = 'completed')::int AS run_count,
           avg(run_sec) FILTER (WHERE status = 'completed') AS run_avg,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY run_sec) FILTER (WHERE status = 'completed') AS run_p95
    FROM ended
"""

_STARTED_SQL = """
    WITH started AS (
        SELECT greatest(0, extract(epoch FROM a.started_at - coalesce(j.activated_at, j.created_at)))::float8
                   AS wait_sec
        FROM assignments a JOIN jobs j ON j.id = a.job_id
        WHERE a.started_at > now() - make_interval(secs => $1) AND ($2::bigint[] IS NULL OR j.team_id = ANY($2))
    )
    SELECT count(*)::int AS count, avg(wait_sec) AS avg_sec,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY wait_sec) AS p95_sec
    FROM started
"""


async def window_figures(conn: Conn, window_sec: int, teams: Sequence[int] | None = None) -> dict[str, Any]:
    """Success rate and run time of the assignments that ended in the last ``window_sec`` seconds
    (retried attempts included, cancelled ones not), and queue wait of those that started in it; of ``teams``'
    jobs only (None: all)."""
    ended = await conn.fetchrow(_FINISHED_SQL.format(of_teams=assignments_store.of_teams(2)), float(window_sec),
                                teams_arg(teams))
    started = await conn.fetchrow(_STARTED_SQL, float(window_sec), teams_arg(teams))
    assert ended is not None and started is not None
    return {
        "window_sec": window_sec,
        "success_rate": ended["completed"] / ended["ended"] if ended["ended"] else None,
        "run_time": {"count": ended["run_count"], "avg_sec": ended["run_avg"], "p95_sec": ended["run_p95"]},
        "queue_wait": dict(started.items()),
    }
