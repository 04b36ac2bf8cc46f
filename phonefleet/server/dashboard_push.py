"""What dashboards see live, rendered by the same queries the REST API answers with.

Status changes (paused, completed, ...) go out at once; progress and phones are coalesced and
throttled (``progress_hz`` per job at most), so a busy fleet costs the browsers a bounded number of
messages whatever the rate of agent events. Other nodes hear of this node's changes through the bus
(one message per flush) and show them to their own dashboards.
"""

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol import health
from phonefleet.protocol.models import Job
from phonefleet.server.bus import Bus
from phonefleet.server.bus_messages import Dirty, ToDashboards
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.presence import Presence
from phonefleet.server.queries import Queries

log = logging.getLogger(__name__)


def job_update(job: Job) -> dict[str, Any]:
    return ev.JobStatusUpdate(
        job_id=job.id, title=job.title, status=job.status, priority=job.priority, target_count=job.target_count,
        assigned_count=job.assigned_count, completed_count=job.completed_count, failed_count=job.failed_count,
        running_count=job.running_count, paused_count=job.paused_count, updated_at=job.updated_at,
        blocked_reason=job.blocked_reason, max_parallel=job.max_parallel,
    ).model_dump(mode="json")


class DashboardPush:
    def __init__(self, sio: socketio.AsyncServer, presence: Presence, queries: Queries, bus: Bus, *,
                 progress_hz: float) -> None:
        self.sio = sio
        self.presence = presence
        self.queries = queries
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

    async def broadcast(self, event: str, data: dict[str, Any]) -> None:
        """An event for every dashboard on every node."""
        await self.emit(event, data)
        try:
            await self.bus.publish(ToDashboards(event=event, data=data))
        except ValueError:
            log.warning("dashboard broadcast too large for other nodes", extra={"event": event})

    async def emit(self, event: str, data: Any) -> None:
        """To this node's dashboards."""
        if self.presence.dashboards:
            await self.sio.emit(event, data, namespace=ev.DASHBOARD_NAMESPACE)

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
            payload = ev.DeviceUpdateBroadcast(devices=await self.queries.devices_by_ids(devices))
            await self.emit(ev.DASHBOARD_DEVICE_UPDATE, payload.model_dump(mode="json"))
            await self._emit_device_events()
            await self.emit(ev.FLEET_STATS, (await self.queries.fleet_stats()).model_dump(mode="json"))

    async def _emit_device_events(self) -> None:
        """The phones' timeline entries written since the last flush, by any writer on any node (a phone whose
        timeline grows is a phone that changed: every writer marks it)."""
        if self._event_cursor is None:
            self._event_cursor = await self.queries.newest_device_event_id()
            return
        for event in await self.queries.device_events_after(self._event_cursor, limit=500):
            await self.emit(health.DEVICE_EVENT, event.model_dump(mode="json"))
            self._event_cursor = event.id

    async def _emit_jobs(self, job_ids: list[int], event: str) -> None:
        if not self.presence.dashboards or not job_ids:
            return
        for job in await self.queries.jobs_by_ids(job_ids):
            await self.sio.emit(event, job_update(job), namespace=ev.DASHBOARD_NAMESPACE)
