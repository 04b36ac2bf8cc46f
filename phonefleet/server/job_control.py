"""Creating jobs and moving them through their lifecycle, with every change pushed to agents."""

import asyncio
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import BatchAction, JobStatus, RequeueScope, TargetType
from phonefleet.protocol.events import AssignmentOrder
from phonefleet.protocol.models import BatchFailure, JobBatch, JobBatchResult, JobCreate, JobPatch, JobTemplate
from phonefleet.protocol.states import JOB_ACTIONS, JOB_TRANSITIONS
from phonefleet.server import audit
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import Conflict, Invalid, NotFound, ServiceError
from phonefleet.server.orders import of_rows as orders_of_rows
from phonefleet.server.realtime import Realtime
from phonefleet.server.rooms import of_team
from phonefleet.server.store import Conn
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store.records import DeviceChange, JobPlacement, JobRecord, Placement, RenderedJob
from phonefleet.server.transactions import in_transaction


def resolve_target(target_type: str, target_value: int | None, eligible: int) -> int:
    """Phones a job should reach: all eligible, a percentage of them (at least one), or a count."""
    if target_type == TargetType.all_devices:
        return eligible
    if target_type == TargetType.percentage:
        assert target_value is not None
        return max(1, math.ceil(eligible * target_value / 100))
    assert target_value is not None
    return target_value


def _audited(job: JobRecord) -> dict[str, object]:
    """What the trail keeps of a job created or deleted (its plan stays in the job's own record)."""
    return {"title": job.title, "status": job.status, "target_type": job.target_type,
            "target_value": job.target_value, "priority": job.priority, "steps": len(job.plan)}


def _by_agent(placed: Iterable[Placement]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for p in placed:
        out[p.agent_id].append(p.id)
    return out


class JobControl:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor

    async def create(self, body: JobCreate, actor: str = "admin", *, allow_shell: bool = True,
                     team_id: int) -> int:
        """Store and distribute a job of ``team_id``; returns its id (its row has changed since: read it again)."""
        async def work(conn: Conn) -> JobRecord:
            job = await self.insert(conn, body, actor, allow_shell=allow_shell, team_id=team_id)
            await audit.record(conn, "job.create", "job", job.id, after=_audited(job))
            return job

        row = await in_transaction(self.pool, work)
        await self.announce(row)
        return row.id

    async def insert(self, conn: Conn, body: JobTemplate, actor: str, *, allow_shell: bool = True,
                     schedule_id: int | None = None, scheduled_for: datetime | None = None,
                     team_id: int) -> JobRecord:
        """Validate and store a job (in the caller's transaction, if any: its one write is a single statement);
        ``announce`` it after the commit.

        A schedule's firing passes its ``schedule_id`` and ``scheduled_for``: the unique key on the
        pair makes a firing create its job once, whichever server process reaches it.
        """
        if not allow_shell and any(step.type == "shell" for step in body.plan):
            raise Invalid.field("plan", "shell steps need the shell right")
        run_at = body.run_at if isinstance(body, JobCreate) else None
        depends_on = body.depends_on if isinstance(body, JobCreate) else []
        if depends_on:
            missing = sorted(set(depends_on) - await jobs_store.existing_ids(conn, depends_on, [team_id]))
            if missing:
                raise Invalid.field("depends_on", f"unknown job ids {missing}")
        now = datetime.now(UTC)
        waiting = (run_at is not None and run_at > now) or bool(depends_on)
        filters = body.filters.model_dump(exclude_none=True)
        target_count = None
        if not waiting:
            eligible = 0 if body.target_type == TargetType.device_count else (
                await jobs_store.count_eligible_connected(conn, filters, team_id))  # a count needs no census
            target_count = resolve_target(body.target_type, body.target_value, eligible)
        return await jobs_store.insert(conn, {
            "title": body.title,
            "plan": [s.model_dump(mode="json", exclude_none=True) for s in body.plan],
            "target_type": str(body.target_type), "target_value": body.target_value,
            "target_count": target_count, "filters": filters, "priority": body.priority,
            "status": JobStatus.scheduled if waiting else JobStatus.active,
            "timeout_sec": body.timeout_sec, "max_retries": body.max_retries, "run_at": run_at,
            "depends_on": depends_on, "allow_shell": allow_shell, "max_parallel": body.max_parallel,
            "schedule_id": schedule_id, "scheduled_for": scheduled_for, "on_interrupt": body.on_interrupt,
            "team_id": team_id,
        }, actor=actor)

    async def announce(self, job: JobRecord) -> None:
        """After a job's creation committed: distribute it if it is open, and tell the dashboards."""
        if job.status == JobStatus.active:
            await self.distributor.fill([job.id])
        await self.realtime.job_status_changed([job.id])

    async def get(self, job_id: int) -> RenderedJob:
        """The job as it is now, with its live counts (what the API shows)."""
        async with self.pool.acquire() as conn:
            job = await jobs_store.get_rendered(conn, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    async def activate(self, conn: Conn, job: JobRecord) -> JobRecord | None:
        """A scheduled job whose time has come: resolve its target and open it for distribution."""
        eligible = await jobs_store.count_eligible_connected(conn, job.filters, job.team_id)
        target = resolve_target(job.target_type, job.target_value, eligible)
        activated = await jobs_store.activate(conn, job.id, target)
        if activated is not None:
            await jobs_store.add_event(conn, job.id, "activated", "scheduler", {"target_count": target})
            if target == 0:
                await jobs_store.complete_finished(conn, [job.id])
        return activated

    async def patch(self, job_id: int, body: JobPatch, actor: str = "admin") -> RenderedJob:
        """The transition first: when it is impossible (409) the edits are not made either."""
        depends_on = body.depends_on
        if depends_on is not None:  # checked before anything changes, so a 422 leaves the job as it was
            await in_transaction(self.pool, lambda conn: self._check_dependencies(conn, job_id, depends_on))
        if body.status == "paused":
            await self.pause(job_id, actor)
        elif body.status == "active":
            await self.resume(job_id, actor)
        elif body.status == "cancelled":
            await self.cancel(job_id, actor)
        fields = body.model_dump(exclude_unset=True, exclude={"status", "depends_on"})
        if fields or depends_on is not None:
            async def work(conn: Conn) -> None:
                was = await jobs_store.get(conn, job_id, for_update=True)
                now = await jobs_store.update_fields(conn, job_id, fields)
                if was is None or now is None:
                    raise NotFound(f"job {job_id} not found")
                if depends_on is not None:
                    await self._check_dependencies(conn, job_id, depends_on)
                    await jobs_store.set_depends_on(conn, job_id, depends_on)
                    await jobs_store.add_event(conn, job_id, "dependencies", actor, {"depends_on": depends_on})
                edited = [*fields, *(["depends_on"] if depends_on is not None else [])]
                after = {k: now[k] for k in fields} | ({"depends_on": depends_on} if depends_on is not None else {})
                await audit.record_change(conn, "job.update", "job", job_id, before={k: was[k] for k in edited},
                                          after=after)

            await in_transaction(self.pool, work)
            await self.realtime.job_status_changed([job_id])
            if "max_parallel" in fields:
                self.distributor.request_fill()
        return await self.get(job_id)

    async def _check_dependencies(self, conn: Conn, job_id: int, depends_on: list[int]) -> None:
        job = await jobs_store.get(conn, job_id, for_update=True)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status not in JOB_ACTIONS["edit_dependencies"]:
            raise Conflict(f"job {job_id} is {job.status}; its dependencies can change only while it waits")
        missing = sorted(set(depends_on) - await jobs_store.existing_ids(conn, depends_on, [job.team_id]))
        if missing:
            raise Invalid.field("depends_on", f"unknown job ids {missing}")
        if await jobs_store.would_cycle(conn, job_id, depends_on):
            raise Invalid.field("depends_on", f"job {job_id} would depend on itself (a cycle)")

    async def _transition(self, conn: Conn, job_id: int, target: JobStatus, action: str) -> JobRecord:
        """Move the job if its status allows ``action``; 404 or 409 (naming the status) otherwise."""
        sources = sorted(JOB_ACTIONS[action])
        assert all(target in JOB_TRANSITIONS[JobStatus(s)] for s in sources), (action, target)
        current = await jobs_store.get(conn, job_id, for_update=True)  # the status it leaves, for the trail
        if current is None:
            raise NotFound(f"job {job_id} not found")
        job = await jobs_store.transition(conn, job_id, target, sources)
        if job is None:
            raise Conflict(f"job {job_id} is {current.status}; it cannot {action}")
        await audit.record(conn, f"job.{action}", "job", job_id, before={"status": current.status},
                           after={"status": job.status})
        return job

    async def pause(self, job_id: int, actor: str = "admin") -> RenderedJob:
        async def work(conn: Conn) -> list[Placement]:
            await self._transition(conn, job_id, JobStatus.paused, "pause")
            paused = await assignments_store.pause_job(conn, job_id)
            await jobs_store.add_event(conn, job_id, "paused", actor, {"assignments": len(paused)})
            return paused

        paused = await in_transaction(self.pool, work)
        await asyncio.gather(*(
            self.realtime.to_agent(agent_id, ev.JOB_PAUSED,
                                   ev.JobControl(job_id=job_id, assignment_ids=ids).model_dump())
            for agent_id, ids in _by_agent(paused).items()
        ))
        # The agents know first; freeing their phones for other jobs can follow in its own transaction.
        device_ids = sorted({p.device_id for p in paused})
        devices = await in_transaction(self.pool, lambda conn: devices_store.refresh_states(conn, device_ids))
        await self._after(job_id, devices)
        return await self.get(job_id)

    async def resume(self, job_id: int, actor: str = "admin") -> RenderedJob:
        async def work(conn: Conn) -> tuple[list[Placement], list[DeviceChange]]:
            current = await jobs_store.get(conn, job_id, for_update=True)
            if current is not None and current.status == JobStatus.paused and current.activated_at is None:
                # Paused before it ever ran: it waits again for its time and its prerequisites.
                await self._transition(conn, job_id, JobStatus.scheduled, "resume")
                await jobs_store.add_event(conn, job_id, "resumed", actor, {"assignments": 0})
                return [], []
            job = await self._transition(conn, job_id, JobStatus.active, "resume")
            if job.target_count is None:
                eligible = await jobs_store.count_eligible_connected(conn, job.filters, job.team_id)
                target = resolve_target(job.target_type, job.target_value, eligible)
                await jobs_store.set_target(conn, job_id, target)
            resumed = await assignments_store.resume_job(conn, job_id)
            devices = await devices_store.refresh_states(conn, sorted({p.device_id for p in resumed}))
            await jobs_store.add_event(conn, job_id, "resumed", actor, {"assignments": len(resumed)})
            await jobs_store.complete_finished(conn, [job_id])
            return resumed, devices

        resumed, devices = await in_transaction(self.pool, work)
        if resumed:
            async with self.pool.acquire() as conn:
                rows = await assignments_store.orders_by_ids(conn, [p.id for p in resumed])
            per_agent: dict[int, list[AssignmentOrder]] = defaultdict(list)
            for row, made in zip(rows, orders_of_rows(rows), strict=True):
                per_agent[row.agent_id].append(made)
            for agent_id, agent_orders in per_agent.items():
                ids = [o.assignment_id for o in agent_orders]
                await self.realtime.to_agent(agent_id, ev.JOB_RESUMED,
                                             ev.JobControl(job_id=job_id, assignment_ids=ids).model_dump())
                await self.realtime.send_orders(agent_id, agent_orders, self.distributor.on_ack)
        await self.distributor.fill([job_id])
        await self._after(job_id, devices)
        return await self.get(job_id)

    async def cancel(self, job_id: int, actor: str = "admin") -> RenderedJob:
        async def work(conn: Conn) -> tuple[list[JobPlacement], list[DeviceChange]]:
            await self._transition(conn, job_id, JobStatus.cancelled, "cancel")
            cancelled = await assignments_store.cancel(conn, job_id=job_id, error="job cancelled")
            await assignments_store.cancel_retries(conn, job_id)
            devices = await devices_store.refresh_states(conn, sorted({p.device_id for p in cancelled}))
            await jobs_store.add_event(conn, job_id, "cancelled", actor, {"assignments": len(cancelled)})
            return cancelled, devices

        cancelled, devices = await in_transaction(self.pool, work)
        await self._tell_cancelled(job_id, cancelled)
        await self._after(job_id, devices)
        return await self.get(job_id)

    async def requeue(self, job_id: int, scope: RequeueScope, actor: str = "admin") -> int:
        """Run a job's finally failed slots (or all of them) again; returns how many."""

        async def work(conn: Conn) -> int:
            job = await jobs_store.get(conn, job_id, for_update=True)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            if job.status not in JOB_ACTIONS["requeue"]:
                raise Conflict(f"job {job_id} is {job.status}; it cannot requeue")
            n = await jobs_store.requeue(conn, job_id, str(scope))
            await jobs_store.add_event(conn, job_id, "requeued", actor, {"scope": str(scope), "slots": n})
            now = await jobs_store.get(conn, job_id)
            await audit.record(conn, "job.requeue", "job", job_id, before={"status": job.status},
                               after={"status": now.status if now else job.status, "requeued": n,
                                      "scope": str(scope)})
            return n

        n = await in_transaction(self.pool, work)
        await self.realtime.job_status_changed([job_id])
        if n:
            await self.distributor.fill([job_id])
        return n

    async def batch(self, body: JobBatch, actor: str = "admin", *, max_jobs: int = 10_000,
                    teams: Sequence[int] | None = None) -> JobBatchResult:
        """One action on many jobs, each exactly as a single request would do it (and tell the agents). ``teams``:
        the caller's (None: every team); a filter selects among their jobs, and an id of another team's job fails
        as a missing one does."""
        hidden: set[int] = set()
        if body.ids is not None:
            ids = list(dict.fromkeys(body.ids))
            if teams is not None:
                async with self.pool.acquire() as conn:
                    hidden = set(ids) - await jobs_store.existing_ids(conn, ids, teams)
        else:
            assert body.filter is not None
            async with self.pool.acquire() as conn:
                ids = await jobs_store.ids_matching(
                    conn, statuses=[str(s) for s in body.filter.status] if body.filter.status else None,
                    search=body.filter.search, schedule_id=body.filter.schedule_id, limit=max_jobs, teams=teams,
                )
        action = {BatchAction.pause: self.pause, BatchAction.resume: self.resume,
                  BatchAction.cancel: self.cancel}[body.action]
        changed: list[int] = []
        failed: list[BatchFailure] = []
        for job_id in ids:
            try:
                if job_id in hidden:
                    raise NotFound(f"job {job_id} not found")
                await action(job_id, actor)
            except ServiceError as exc:
                failed.append(BatchFailure(id=job_id, code=exc.code, message=exc.message))
            else:
                changed.append(job_id)
        return JobBatchResult(action=body.action, changed=changed, failed=failed)

    async def delete(self, job_id: int, actor: str = "admin") -> None:
        """Delete a job; its live assignments are cancelled on the phones first."""

        async def work(conn: Conn) -> tuple[list[JobPlacement], list[DeviceChange], int]:
            job = await jobs_store.get(conn, job_id, for_update=True)
            if job is None:
                raise NotFound(f"job {job_id} not found")
            cancelled = await assignments_store.cancel(conn, job_id=job_id, error="job deleted")
            device_ids = sorted({p.device_id for p in cancelled})
            await jobs_store.delete(conn, job_id)
            devices = await devices_store.refresh_states(conn, device_ids)
            await jobs_store.add_event(conn, None, "deleted", actor, {"job_id": job_id})
            await audit.record(conn, "job.delete", "job", job_id, before=_audited(job), team_id=job.team_id)
            return cancelled, devices, job.team_id

        cancelled, devices, team = await in_transaction(self.pool, work)
        await self._tell_cancelled(job_id, cancelled)
        self.realtime.devices_changed(d.id for d in devices)
        await self.realtime.broadcast(ev.JOB_DELETED, ev.JobDeleted(job_id=job_id).model_dump(), to=of_team(team))
        self.distributor.request_fill()

    async def _tell_cancelled(self, job_id: int, cancelled: list[JobPlacement]) -> None:
        for agent_id, ids in _by_agent(cancelled).items():
            await self.realtime.to_agent(
                agent_id, ev.JOB_CANCELLED,
                ev.JobControl(job_id=job_id, assignment_ids=ids, abort_running=True).model_dump(),
            )

    async def _after(self, job_id: int, devices: list[DeviceChange]) -> None:
        self.realtime.devices_changed(d.id for d in devices)
        await self.realtime.job_status_changed([job_id])
        self.distributor.request_fill()
