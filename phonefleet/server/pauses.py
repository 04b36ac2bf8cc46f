"""Pausing phones, from either side.

From the server (``PATCH /api/devices/{id}``) a pause reaches the agent as ``device:pause``; from
the agent (``agent:pause``, whole agent / one phone / one job) it reaches every dashboard as
``pause:changed``. Either way the phones leave distribution and hand their unstarted work back.
"""

from collections.abc import Sequence
from typing import Any

import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import DeviceEventKind, PausedBy, PauseScope
from phonefleet.protocol.models import Device
from phonefleet.server import audit
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import Invalid, NotFound
from phonefleet.server.realtime import Realtime
from phonefleet.server.rooms import ADMINS, of_team
from phonefleet.server.store import Conn, device_events, owners
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store.records import DeviceRecord, JobPlacement
from phonefleet.server.transactions import in_transaction


async def _timeline(conn: Conn, device_ids: Sequence[int], paused: bool, actor: str,
                    reason: str | None = None) -> None:
    kind = DeviceEventKind.paused if paused else DeviceEventKind.resumed
    await device_events.add_many(conn, [device_events.NewEvent(d, kind, actor, reason) for d in device_ids])


class Pauses:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor

    async def set_device_paused(self, device_id: int, paused: bool, actor: str = "admin") -> Device:
        """Server-side pause or resume of one phone; returns the phone as it now stands."""

        async def work(conn: Conn) -> tuple[DeviceRecord, list[int], list[JobPlacement]]:
            device = await devices_store.get(conn, device_id)
            if device is None:
                raise NotFound(f"device {device_id} not found")
            changed, _ = await devices_store.set_paused(
                conn, [device_id], PausedBy.server if paused else None, only_from=None
            )
            await _timeline(conn, changed, paused, actor)
            handed: list[JobPlacement] = []
            if paused:
                handed = await assignments_store.hand_back(conn, device_ids=[device_id],
                                                           reason="phone paused by server")
            if handed:
                await devices_store.refresh_states(conn, [device_id])
            if changed:
                now = await devices_store.get(conn, device_id)
                assert now is not None
                await audit.record_change(conn, "device.pause" if paused else "device.resume", "device", device_id,
                                          before={"paused_by": device.paused_by, "state": device.state},
                                          after={"paused_by": now.paused_by, "state": now.state})
            return device, changed, handed

        device, changed, handed = await in_transaction(self.pool, work)
        await self.realtime.to_agent(
            device.agent_id, ev.DEVICE_PAUSE if paused else ev.DEVICE_RESUME,
            ev.DeviceControl(device_id=device_id, serial=device.serial).model_dump(),
        )
        await self._announce(changed, handed, ev.PauseChanged(
            source=PausedBy.server, paused=paused, scope=PauseScope.device, agent_id=device.agent_id,
            agent_name=device.agent_name, serial=device.serial, device_id=device_id,
        ))
        async with self.pool.acquire() as conn:
            row = await devices_store.get(conn, device_id)
        assert row is not None  # phones are never deleted
        return Device.model_validate(dict(row.items()))

    async def from_agent(
        self, agent_id: int, agent_name: str, request: ev.PauseRequest, paused: bool
    ) -> dict[str, Any]:
        """``agent:pause`` / ``agent:resume`` from the operator at a PC."""
        verb = "pause" if paused else "resume"

        async def work(conn: Conn) -> tuple[list[int], list[JobPlacement], int | None]:
            device_ids: Sequence[int] = []
            device_id: int | None = None
            changed: list[int] = []
            handed: list[JobPlacement] = []
            if request.scope is PauseScope.job:
                if request.job_id is None:
                    raise Invalid.field("job_id", "required for scope 'job'")
                if not await jobs_store.existing_ids(conn, [request.job_id]):
                    raise NotFound(f"job {request.job_id} not found")
                if paused:
                    moved = await agents_store.pause_job(conn, agent_id, request.job_id)
                    device_ids = await devices_store.ids_of_agent(conn, agent_id)
                    handed = await assignments_store.hand_back(
                        conn, device_ids=device_ids, job_id=request.job_id, reason="job paused on the agent")
                else:
                    moved = await agents_store.resume_job(conn, agent_id, request.job_id)
                if moved:
                    await audit.record(conn, f"job.{verb}_on_agent", "job", request.job_id,
                                       before={"paused_on": None if paused else agent_name},
                                       after={"paused_on": agent_name if paused else None})
            else:
                if request.scope is PauseScope.agent:
                    await agents_store.set_paused(conn, agent_id, paused)
                    device_ids = await devices_store.ids_of_agent(conn, agent_id)
                else:
                    if not request.serial:
                        raise Invalid.field("serial", "required for scope 'device'")
                    device_ids = await devices_store.ids_of_agent(conn, agent_id, request.serial)
                    if not device_ids:
                        raise NotFound(f"no phone {request.serial!r} on this agent")
                    device_id = device_ids[0]
                changed, _ = await devices_store.set_paused(
                    conn, device_ids, PausedBy.agent if paused else None,
                    only_from=None if paused else PausedBy.agent,
                )
                await _timeline(conn, changed, paused, f"agent {agent_name}",
                                "at the PC" if request.scope is PauseScope.device else "its agent paused")
                if paused:
                    handed = await assignments_store.hand_back(conn, device_ids=device_ids,
                                                               reason="paused on the agent")
                if request.scope is PauseScope.agent:
                    await audit.record(conn, f"agent.{verb}", "agent", agent_id, before={"paused": not paused},
                                       after={"paused": paused, "phones_changed": len(changed)})
                elif changed:
                    await audit.record(conn, f"device.{verb}", "device", device_id,
                                       before={"paused_by": None if paused else str(PausedBy.agent)},
                                       after={"paused_by": str(PausedBy.agent) if paused else None,
                                              "serial": request.serial})
            if handed:
                touched = sorted({h.device_id for h in handed})
                await devices_store.refresh_states(conn, touched)
                changed = sorted({*changed, *touched})
            return changed, handed, device_id

        changed, handed, device_id = await in_transaction(self.pool, work)
        await self._announce(changed, handed, ev.PauseChanged(
            source=PausedBy.agent, paused=paused, scope=request.scope, agent_id=agent_id, agent_name=agent_name,
            serial=request.serial, device_id=device_id, job_id=request.job_id,
        ))
        return {"handed_back": [h.id for h in handed], "devices": changed}

    async def _announce(self, changed: list[int], handed: list[JobPlacement], notice: ev.PauseChanged) -> None:
        self.realtime.devices_changed(changed)
        self.realtime.jobs_changed(h.job_id for h in handed)
        team = None
        if notice.agent_id is not None:
            async with self.pool.acquire() as conn:
                team = await owners.team_of(conn, "agent", notice.agent_id)
        await self.realtime.broadcast(ev.PAUSE_CHANGED, notice.model_dump(mode="json"),
                                      to=of_team(team) if team is not None else [ADMINS])
        self.distributor.request_fill()
