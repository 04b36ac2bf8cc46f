"""Reads the API and the dashboards render: jobs, assignments, phones, agents, admin tokens and figures,
each as the protocol's model, so no handler reads the store itself."""

from collections.abc import Sequence

import asyncpg

from phonefleet.protocol.events import FleetStats
from phonefleet.protocol.health import DeviceEvent
from phonefleet.protocol.models import (
    AdminToken,
    Agent,
    Assignment,
    AssignmentList,
    Device,
    Job,
    JobList,
    Stats,
)
from phonefleet.server.errors import NotFound
from phonefleet.server.store import Conn
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import device_events as device_events_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store import stats as stats_store
from phonefleet.server.store.records import JobRecord, RenderedJob
from phonefleet.server.store.stats import FleetCounts


def job_model(job: RenderedJob) -> Job:
    """A job as the API shows it."""
    return Job.model_validate(dict(job.items()))


async def render_jobs(conn: Conn, jobs: Sequence[JobRecord]) -> list[Job]:
    """Jobs as the API shows them: each with its running and paused counts (one query for all)."""
    counts = await jobs_store.assignment_counts(conn, [j.id for j in jobs])
    return [Job.model_validate({**dict(j.items()), "running_count": counts.get(j.id, {}).get("running", 0),
                                "paused_count": counts.get(j.id, {}).get("paused", 0)}) for j in jobs]


class Queries:
    def __init__(self, pool: asyncpg.Pool, *, grace_sec: float) -> None:
        self.pool = pool
        self.grace_sec = grace_sec

    async def ping(self) -> None:
        """The database answers (``/healthz``); an outage raises."""
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    # ------------------------------------------------------------------ jobs

    async def job(self, job_id: int) -> Job:
        async with self.pool.acquire() as conn:
            job = await jobs_store.get_rendered(conn, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job_model(job)

    async def jobs(self, *, statuses: Sequence[str] | None, search: str | None, limit: int, offset: int,
                   schedule_id: int | None = None, teams: Sequence[int] | None = None) -> JobList:
        """A page of jobs; ``teams``: of these teams only (a principal's ``teams``; None: every team)."""
        async with self.pool.acquire() as conn:
            rows, total = await jobs_store.list_page(conn, statuses=statuses or None, search=search, limit=limit,
                                                     offset=offset, schedule_id=schedule_id, teams=teams)
            items = await render_jobs(conn, rows)
        return JobList(items=items, total=total, limit=limit, offset=offset)

    async def jobs_by_ids(self, job_ids: Sequence[int]) -> list[Job]:
        """Jobs that still exist among these (the dashboards' live updates)."""
        async with self.pool.acquire() as conn:
            return await render_jobs(conn, await jobs_store.get_many(conn, job_ids))

    async def job_assignments(self, job_id: int, status: str | None) -> AssignmentList:
        async with self.pool.acquire() as conn:
            if not await jobs_store.existing_ids(conn, [job_id]):
                raise NotFound(f"job {job_id} not found")
            rows = await assignments_store.list_for_job(conn, job_id, status)
        items = [Assignment.model_validate(dict(r.items())) for r in rows]
        return AssignmentList(items=items, total=len(items))

    async def assignments(self, *, status: str | None, dead: bool, limit: int, offset: int,
                          device_id: int | None = None, teams: Sequence[int] | None = None) -> AssignmentList:
        async with self.pool.acquire() as conn:
            rows, total = await assignments_store.list_page(conn, status=status, dead=dead, device_id=device_id,
                                                            limit=limit, offset=offset, teams=teams)
        return AssignmentList(items=[Assignment.model_validate(dict(r.items())) for r in rows], total=total)

    async def owns_assignment(self, agent_id: int, assignment_id: int) -> None:
        """NotFound unless the assignment is this agent's (an agent uploads files for its own work only)."""
        async with self.pool.acquire() as conn:
            if not await assignments_store.owned_by(conn, agent_id, [assignment_id]):
                raise NotFound(f"assignment {assignment_id} not found")

    # ------------------------------------------------------------------ fleet

    async def devices(self, teams: Sequence[int] | None = None) -> list[Device]:
        async with self.pool.acquire() as conn:
            rows = await devices_store.list_all(conn, teams=teams)
        return [Device.model_validate(dict(r.items())) for r in rows]

    async def devices_by_ids(self, device_ids: Sequence[int]) -> list[Device]:
        async with self.pool.acquire() as conn:
            rows = await devices_store.get_many(conn, device_ids)
        return [Device.model_validate(dict(r.items())) for r in rows]

    async def newest_device_event_id(self) -> int:
        async with self.pool.acquire() as conn:
            return await device_events_store.newest_id(conn)

    async def device_events_after(self, after_id: int, *, limit: int) -> list[DeviceEvent]:
        """Every phone's timeline entries newer than ``after_id``, oldest first (what dashboards are sent)."""
        async with self.pool.acquire() as conn:
            rows = await device_events_store.after(conn, after_id, limit)
        return [DeviceEvent.model_validate(dict(r.items())) for r in rows]

    async def fleet_stats(self) -> FleetStats:
        """Connected agents and phones by state, for the dashboards' header."""
        async with self.pool.acquire() as conn:
            states = await devices_store.counts_by_state(conn)
            agents = await agents_store.counts_by_status(conn, self.grace_sec)
            connected = await devices_store.count_connected(conn)
        return FleetStats(agents_online=agents["connected"], devices=states, connected_devices=connected)

    async def agents(self, teams: Sequence[int] | None = None) -> list[Agent]:
        async with self.pool.acquire() as conn:
            rows = await agents_store.list_all(conn, self.grace_sec, teams)
        return [Agent.model_validate(dict(r.items())) for r in rows]

    async def agent(self, agent_id: int) -> Agent:
        async with self.pool.acquire() as conn:
            row = await agents_store.get(conn, agent_id, self.grace_sec)
        if row is None:
            raise NotFound(f"agent {agent_id} not found")
        return Agent.model_validate(dict(row.items()))

    async def admins(self, *, env_admin: bool) -> list[AdminToken]:
        """Admin tokens by name, never their secret; ``env`` first when the servers have one."""
        async with self.pool.acquire() as conn:
            rows = await admin_tokens_store.list_all(conn)
        stored = [AdminToken.model_validate({**dict(r.items()), "source": "stored"}) for r in rows]
        return ([AdminToken(name="env", source="env")] if env_admin else []) + stored

    # ------------------------------------------------------------------ figures

    async def fleet_counts(self) -> FleetCounts:
        async with self.pool.acquire() as conn:
            return await stats_store.fleet_counts(conn, self.grace_sec)

    async def stats(self, window_sec: int, teams: Sequence[int] | None = None) -> Stats:
        """The figures of ``teams``' jobs, phones and agents (None: the whole fleet)."""
        async with self.pool.acquire() as conn:
            counts = await stats_store.fleet_counts(conn, self.grace_sec, teams)
            figures = await stats_store.window_figures(conn, window_sec, teams)
        return Stats.model_validate({"jobs": counts.jobs, "assignments": counts.assignments, "devices": counts.devices,
                                     "agents": counts.agents, "connected_devices": counts.connected_devices,
                                     **figures})
