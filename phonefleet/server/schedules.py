"""Recurring schedules: a job template fired by cron (in a time zone) or every N seconds.

``Schedules`` keeps the definitions and runs one now; ``ScheduleFirer`` is the maintenance duty that
fires the due ones. Both read time from ``Schedules.clock``, so tests move time by swapping it.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import ValidationError

from phonefleet.protocol import events as ev
from phonefleet.protocol import recurrence
from phonefleet.protocol.enums import MisfirePolicy
from phonefleet.protocol.models import JobTemplate, Schedule, ScheduleCreate, ScheduleList, SchedulePatch
from phonefleet.server import audit
from phonefleet.server.config import Settings
from phonefleet.server.errors import Conflict, Invalid, NotFound, ServiceError
from phonefleet.server.job_control import JobControl
from phonefleet.server.realtime import Realtime
from phonefleet.server.rooms import of_team
from phonefleet.server.store import Conn, owners
from phonefleet.server.store import schedules as schedules_store
from phonefleet.server.store.records import JobRecord, ScheduleRecord
from phonefleet.server.transactions import in_transaction

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

ACTOR = "scheduler"
MISFIRE_MIN_SEC = 60.0
"""A firing later than this (or two maintenance intervals, if longer) was missed, not merely late."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def first_firing(rule: Mapping[str, Any], now: datetime) -> datetime:
    """The first firing strictly after ``now``: on create, on enable, and when the rule changes."""
    return recurrence.next_fire(cron=rule["cron"], interval_sec=rule["interval_sec"], timezone=rule["timezone"],
                                after=now)


@dataclass(frozen=True)
class Firing:
    """What one due schedule does now: create a job for ``scheduled_for`` (None: none), then wait for
    ``next_run_at``."""

    scheduled_for: datetime | None
    next_run_at: datetime
    missed: bool


def plan_firing(schedule: ScheduleRecord, now: datetime, misfire_after: timedelta) -> Firing:
    """An on-time firing runs its due time and moves to the next one (a short lag is caught up one
    firing at a time); a firing more than ``misfire_after`` late was missed while no server ran, and the
    schedule's misfire policy decides: ``skip`` creates nothing, ``run_once`` one job for the latest
    missed firing. Either way the schedule moves to its first future firing."""
    due = schedule.next_run_at
    assert due is not None, "only an enabled schedule is due"
    rule = {"cron": schedule.cron, "interval_sec": schedule.interval_sec, "timezone": schedule.timezone}
    if now - due <= misfire_after:
        return Firing(due, recurrence.next_fire(cron=schedule.cron, interval_sec=schedule.interval_sec,
                                                timezone=schedule.timezone, after=due), missed=False)
    if schedule.interval_sec is not None:  # keep the interval's phase: due + k * interval
        step = timedelta(seconds=schedule.interval_sec)
        latest = due + ((now - due) // step) * step
        upcoming = latest + step
    else:
        assert schedule.cron is not None, "a schedule has a cron or an interval"
        latest = max(due, recurrence.last_cron_fire(cron=schedule.cron, timezone=schedule.timezone,
                                                    at_or_before=now))
        upcoming = first_firing(rule, now)
    keep = schedule.misfire_policy == MisfirePolicy.run_once
    return Firing(latest if keep else None, upcoming, missed=True)


def _template(schedule: ScheduleRecord) -> JobTemplate:
    return JobTemplate.model_validate(schedule.template)


def schedule_model(schedule: ScheduleRecord) -> Schedule:
    """A schedule as the API shows it."""
    return Schedule.model_validate(dict(schedule.items()))


def _one_rule(cron: str | None, interval_sec: int | None, patched: set[str]) -> None:
    if (cron is None) == (interval_sec is None):
        field = "interval_sec" if "interval_sec" in patched else "cron"
        raise Invalid.field(field, "give either cron or interval_sec")


class Schedules:
    """Schedule definitions; ``next_run_at`` is computed from ``clock`` whenever the rule or
    ``enabled`` changes (null while disabled), so firings missed while disabled never count."""

    def __init__(self, pool: asyncpg.Pool, jobs: JobControl, realtime: Realtime, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.jobs = jobs
        self.realtime = realtime
        self.clock = clock

    async def changed(self, schedule_id: int, *, deleted_of: int | None = None) -> None:
        """Tell the dashboards (on every node) of the schedule's team to re-read it; ``deleted_of``: it was
        deleted, and was of that team."""
        team = deleted_of
        if team is None:
            async with self.pool.acquire() as conn:
                team = await owners.team_of(conn, "schedule", schedule_id)
        if team is not None:
            await self.realtime.broadcast(ev.SCHEDULE_CHANGED, ev.ScheduleChanged(
                schedule_id=schedule_id, deleted=deleted_of is not None).model_dump(), to=of_team(team))

    async def create(self, body: ScheduleCreate, *, team_id: int) -> Schedule:
        """A schedule of ``team_id``: its firings make jobs of that team."""
        values = body.model_dump(mode="json", exclude={"template"})
        values["team_id"] = team_id
        values["template"] = body.template.model_dump(mode="json", exclude_none=True)
        values["next_run_at"] = first_firing(values, self.clock()) if body.enabled else None
        async def work(conn: Conn) -> ScheduleRecord:
            made = await schedules_store.insert(conn, values)
            await audit.record(conn, "schedule.create", "schedule", made.id, after=_audited(made))
            return made

        try:
            schedule = await in_transaction(self.pool, work)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a schedule named {body.name!r} exists") from None
        await self.changed(schedule.id)
        return schedule_model(schedule)

    async def get(self, schedule_id: int) -> Schedule:
        async with self.pool.acquire() as conn:
            schedule = await schedules_store.get(conn, schedule_id)
        if schedule is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return schedule_model(schedule)

    async def list_page(self, *, enabled: bool | None, limit: int, offset: int,
                        teams: Sequence[int] | None = None) -> ScheduleList:
        async with self.pool.acquire() as conn:
            rows, total = await schedules_store.list_page(conn, enabled=enabled, limit=limit, offset=offset,
                                                          teams=teams)
        return ScheduleList(items=[schedule_model(r) for r in rows], total=total)

    async def patch(self, schedule_id: int, body: SchedulePatch) -> Schedule:
        patched = set(body.model_fields_set)
        fields = body.model_dump(mode="json", include=patched, exclude={"template"})
        if body.template is not None:
            fields["template"] = body.template.model_dump(mode="json", exclude_none=True)

        async def work(conn: Conn) -> ScheduleRecord:
            current = await schedules_store.get(conn, schedule_id, for_update=True)
            if current is None:
                raise NotFound(f"schedule {schedule_id} not found")
            changes = dict(fields)
            merged = {**dict(current.items()), **changes}
            _one_rule(merged["cron"], merged["interval_sec"], patched)
            rule_changed = any(merged[k] != current[k] for k in ("cron", "interval_sec", "timezone"))
            if not merged["enabled"]:
                changes["next_run_at"] = None
            elif rule_changed or not current.enabled:
                changes["next_run_at"] = first_firing(merged, self.clock())
            updated = await schedules_store.update(conn, schedule_id, changes)
            assert updated is not None
            await audit.record_change(conn, "schedule.update", "schedule", schedule_id,
                                      before={k: current[k] for k in fields}, after={k: updated[k] for k in fields})
            return updated

        try:
            updated = await in_transaction(self.pool, work)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a schedule named {body.name!r} exists") from None
        await self.changed(schedule_id)
        return schedule_model(updated)

    async def delete(self, schedule_id: int) -> None:
        """The jobs it created stay, no longer linked to it."""
        async def work(conn: Conn) -> int:
            schedule = await schedules_store.get(conn, schedule_id, for_update=True)
            if schedule is None or not await schedules_store.delete(conn, schedule_id):
                raise NotFound(f"schedule {schedule_id} not found")
            await audit.record(conn, "schedule.delete", "schedule", schedule_id, before=_audited(schedule),
                               team_id=schedule.team_id)
            return schedule.team_id

        team = await in_transaction(self.pool, work)
        await self.changed(schedule_id, deleted_of=team)

    async def run_now(self, schedule_id: int, actor: str = "admin") -> int:
        """Create the template's job at once, for the clock's now, and return its id; the next firing stays
        as it was."""
        now = self.clock()

        async def work(conn: Conn) -> JobRecord:
            schedule = await schedules_store.get(conn, schedule_id, for_update=True)
            if schedule is None:
                raise NotFound(f"schedule {schedule_id} not found")
            job = await self.jobs.insert(conn, _template(schedule), actor, schedule_id=schedule_id,
                                         scheduled_for=now, team_id=schedule.team_id)
            await schedules_store.record_run(conn, schedule_id, now, job.id)
            await audit.record(conn, "schedule.run", "schedule", schedule_id, after={"job_id": job.id})
            return job

        try:
            job = await in_transaction(self.pool, work)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"schedule {schedule_id} already has a job for {now.isoformat()}") from None
        await self.jobs.announce(job)
        await self.changed(schedule_id)
        return job.id


def _audited(schedule: ScheduleRecord) -> dict[str, object]:
    return {"name": schedule.name, "cron": schedule.cron, "interval_sec": schedule.interval_sec,
            "timezone": schedule.timezone, "enabled": schedule.enabled}


class ScheduleFirer:
    """Fires due schedules, each firing in one transaction with its schedule row locked (SKIP LOCKED);
    the unique (schedule_id, scheduled_for) key backs that up, so a firing makes one job cluster-wide."""

    name = "schedule_firer"
    max_firings = 1000
    """Per run: a bound on catching up, the rest waits for the next run."""

    def __init__(self, pool: asyncpg.Pool, schedules: Schedules, jobs: JobControl, settings: Settings) -> None:
        self.pool = pool
        self.schedules = schedules
        self.jobs = jobs
        self.misfire_after = timedelta(seconds=max(MISFIRE_MIN_SEC, 2 * settings.maintenance_sec))
        self.interval_sec = settings.maintenance_sec

    async def run_once(self) -> int:
        now = self.schedules.clock()
        created = 0
        for _ in range(self.max_firings):
            schedule_id, job = await in_transaction(self.pool, lambda conn: self._fire_next(conn, now))
            if schedule_id is None:
                break
            if job is not None:
                await self.jobs.announce(job)
                created += 1
            await self.schedules.changed(schedule_id)
        return created

    async def _fire_next(self, conn: Conn, now: datetime) -> tuple[int | None, JobRecord | None]:
        """Fire the oldest due schedule: (its id, or None when none was due; the job it created or None)."""
        due = await schedules_store.claim_due(conn, now)
        if not due:
            return None, None
        schedule = due[0]
        try:
            firing = plan_firing(schedule, now, self.misfire_after)
        except (ValueError, StopIteration):  # a rule this tz database or cron reader no longer knows
            log.warning("schedule disabled: no next firing", extra={"schedule": schedule.id}, exc_info=True)
            await schedules_store.update(conn, schedule.id, {"enabled": False, "next_run_at": None})
            return schedule.id, None
        if firing.missed:
            log.info("schedule missed firings", extra={
                "schedule": schedule.id, "due": schedule.next_run_at and schedule.next_run_at.isoformat(),
                "policy": schedule.misfire_policy, "next_run_at": firing.next_run_at.isoformat()})
        job = await self._create_job(conn, schedule, firing.scheduled_for) if firing.scheduled_for else None
        await schedules_store.advance(conn, schedule.id, firing.next_run_at, ran_at=now if job else None,
                                      job_id=job.id if job else None)
        return schedule.id, job

    async def _create_job(self, conn: Conn, schedule: ScheduleRecord,
                          scheduled_for: datetime) -> JobRecord | None:
        """The firing's job, or None when it exists already (another node, or a run-now at that instant)
        or the template cannot make one; the schedule advances either way."""
        try:
            async with conn.transaction():  # a savepoint: a refused insert leaves the advance possible
                return await self.jobs.insert(conn, _template(schedule), ACTOR, schedule_id=schedule.id,
                                              scheduled_for=scheduled_for, team_id=schedule.team_id)
        except asyncpg.UniqueViolationError:
            log.info("schedule firing exists", extra={"schedule": schedule.id,
                                                      "scheduled_for": scheduled_for.isoformat()})
        except (ServiceError, ValidationError):
            log.warning("schedule template refused", extra={"schedule": schedule.id}, exc_info=True)
        return None
