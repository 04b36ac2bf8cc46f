"""What dashboards see live, rendered by the same queries the REST API answers with.

Status changes (paused, completed, ...) go out at once; progress and phones are coalesced and
throttled (``progress_hz`` per job at most), so a busy fleet costs the browsers a bounded number of
messages whatever the rate of agent events. Other nodes hear of this node's changes through the bus
(one message per flush) and show them to their own dashboards.

Each event goes only to the dashboards that may see what it is about (``rooms``): a job's, phone's or agent's
team and the admins. The fleet's figures are sent per view: each team's own to its room, the whole fleet's to
the admins.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol import health
from phonefleet.protocol.models import Device, Job
from phonefleet.server.bus import Bus
from phonefleet.server.bus_messages import Dirty, ToDashboards
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.presence import Presence
from phonefleet.server.queries import Queries
from phonefleet.server.rooms import ADMINS, Rooms, of_team, team_room
from phonefleet.server.store import team_stats

log = logging.getLogger(__name__)


def job_update(job: Job) -> dict[str, Any]:
    return ev.JobStatusUpdate(
        job_id=job.id, title=job.title, status=job.status, priority=job.priority, target_count=job.target_count,
        assigned_count=job.assigned_count, completed_count=job.completed_count, failed_count=job.failed_count,
        running_count=job.running_count, paused_count=job.paused_count, updated_at=job.updated_at,
        blocked_reason=job.blocked_reason, max_parallel=job.max_parallel,
    ).model_dump(mode="json")


class DashboardPush:
    def __init__(self, sio: socketio.AsyncServer, presence: Presence, queries: Queries, rooms: Rooms, bus: Bus, *,
                 progress_hz: float) -> None:
        self.sio = sio
        self.presence = presence
        self.queries = queries
        self.rooms = rooms
        self.bus = bus
        self._interval = 1.0 / progress_hz
        self._dirty_jobs: set[int] = set()
        self._dirty_devices: set[int] = set()
        self._status_for_bus: set[int] = set()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._event_cursor: int | None = None
        """The newest phone timeline entry this node's dashboards were sent (None: none connected)."""

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="dashboard-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    # ------------------------------------------------------------------ what services say

    def jobs_changed(self, job_ids: Iterable[int]) -> None:
        self._dirty_jobs.update(job_ids)
        self._wake.set()

    def devices_changed(self, device_ids: Iterable[int]) -> None:
        self._dirty_devices.update(device_ids)
        self._wake.set()

    async def job_status_changed(self, job_ids: Iterable[int]) -> None:
        """Out at once to this node's dashboards; other nodes hear of it with the next flush."""
        ids = sorted(set(job_ids))
        if not ids:
            return
        await self._emit_jobs(ids, ev.JOB_STATUS_UPDATE)
        self._status_for_bus.update(ids)
        self._wake.set()

    async def broadcast(self, event: str, data: dict[str, Any], *, to: list[str] | None) -> None:
        """An event for the dashboards in the rooms ``to`` (``rooms.of_team``; None: every dashboard) on every
        node."""
        await self.emit(event, data, to=to)
        try:
            await self.bus.publish(ToDashboards(event=event, data=data, rooms=to))
        except ValueError:
            log.warning("dashboard broadcast too large for other nodes", extra={"event": event})

    async def emit(self, event: str, data: Any, *, to: list[str] | None) -> None:
        """To this node's dashboards in the rooms ``to`` (None: all of them)."""
        if self.presence.dashboards:
            await self.sio.emit(event, data, to=to, namespace=ev.DASHBOARD_NAMESPACE)

    async def show_remote(self, dirty: Dirty) -> None:
        """Another node's changes: shown here, never published again."""
        await self._emit_jobs(dirty.status, ev.JOB_STATUS_UPDATE)
        await self._emit_local(dirty.jobs, dirty.devices)

    # ------------------------------------------------------------------ flushing

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except DATABASE_ERRORS as exc:  # an outage must not end the loop for good
                log.warning("dashboard flush failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self._interval)

    async def flush(self) -> None:
        jobs, self._dirty_jobs = sorted(self._dirty_jobs), set()
        devices, self._dirty_devices = sorted(self._dirty_devices), set()
        status, self._status_for_bus = sorted(self._status_for_bus), set()
        if status or jobs or devices:
            await self.bus.publish(Dirty(status=status[:500], jobs=jobs[:200], devices=devices[:500]))
        await self._emit_local(jobs, devices)

    async def _emit_local(self, jobs: list[int], devices: list[int]) -> None:
        if not self.presence.dashboards:
            self._event_cursor = None  # nobody to tell: the next dashboard starts from what is new then
            return
        await self._emit_jobs(jobs, ev.JOB_PROGRESS)
        if devices:
            await self._emit_devices(await self.queries.devices_by_ids(devices))
            await self._emit_device_events()
            await self._emit_fleet_stats()

    async def _emit_devices(self, devices: list[Device]) -> None:
        """The whole list to the admins, each team its own phones (the team read now: an agent that moved
        takes its phones along)."""
        await self.emit(ev.DASHBOARD_DEVICE_UPDATE, ev.DeviceUpdateBroadcast(devices=devices).model_dump(mode="json"),
                        to=[ADMINS])
        if not self._team_views():
            return
        teams = await self.rooms.device_teams(d.id for d in devices)
        for team, mine in _by_team(devices, teams).items():
            await self.emit(ev.DASHBOARD_DEVICE_UPDATE, ev.DeviceUpdateBroadcast(devices=mine).model_dump(mode="json"),
                            to=[team_room(team)])

    def _team_views(self) -> set[int]:
        """The teams with a dashboard of a person on this node (admins' dashboards hear everything in their own
        room): without any, no phone's team need be looked up."""
        return {t for _, p in self.presence.dashboard_sessions() if not p.sees_all for t in p.team_ids}

    async def _emit_fleet_stats(self) -> None:
        """The whole fleet's figures to the admins, each team's own to the teams with a dashboard on this node."""
        await self.emit(ev.FLEET_STATS, (await self.queries.fleet_stats()).model_dump(mode="json"), to=[ADMINS])
        teams = sorted(self._team_views())
        if not teams:
            return
        async with self.queries.pool.acquire() as conn:
            figures = await team_stats.fleet_by_team(conn, teams, self.queries.grace_sec)
        for team, fleet in figures.items():
            stats = ev.FleetStats(agents_online=fleet.agents_online, connected_devices=fleet.connected_devices,
                                  devices=fleet.devices)
            await self.emit(ev.FLEET_STATS, stats.model_dump(mode="json"), to=[team_room(team)])

    async def _emit_device_events(self) -> None:
        """The phones' timeline entries written since the last flush, by any writer on any node (a phone whose
        timeline grows is a phone that changed: every writer marks it), each to its phone's team."""
        if self._event_cursor is None:
            self._event_cursor = await self.queries.newest_device_event_id()
            return
        events = await self.queries.device_events_after(self._event_cursor, limit=500)
        teams = await self.rooms.device_teams(e.device_id for e in events) if self._team_views() else {}
        for event in events:
            team = teams.get(event.device_id)
            await self.emit(health.DEVICE_EVENT, event.model_dump(mode="json"),
                            to=of_team(team) if team is not None else [ADMINS])
            self._event_cursor = event.id

    async def _emit_jobs(self, job_ids: list[int], event: str) -> None:
        if not self.presence.dashboards or not job_ids:
            return
        for job in await self.queries.jobs_by_ids(job_ids):
            await self.sio.emit(event, job_update(job), to=of_team(job.team_id), namespace=ev.DASHBOARD_NAMESPACE)


def _by_team(devices: list[Device], teams: dict[int, int]) -> dict[int, list[Device]]:
    """Phones grouped by their team (``teams``: phone id -> team; a phone missing there is the admins' alone)."""
    groups: dict[int, list[Device]] = {}
    for device in devices:
        if device.id in teams:
            groups.setdefault(teams[device.id], []).append(device)
    return groups
