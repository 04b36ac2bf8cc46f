"""The lease rescuer: an agent silent past its grace is gone, and so is work whose lease ran out."""

import logging

import asyncpg

from phonefleet.server.completion import Completion
from phonefleet.server.config import Settings
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.transactions import in_transaction

log = logging.getLogger(__name__)


class LeaseRescuer:
    """Agents silent past their grace go offline; their work, and any lapsed lease, ends as lost; running
    work past its job's timeout ends as timed out. ``batch`` of each at a time."""

    name = "lease_rescuer"

    def __init__(self, pool: asyncpg.Pool, completion: Completion, realtime: Realtime, settings: Settings, *,
                 batch: int = 1000) -> None:
        self.interval_sec = settings.maintenance_sec
        self.batch = batch
        self.pool = pool
        self.completion = completion
        self.realtime = realtime
        self.settings = settings

    async def run_once(self) -> int:
        async def work(conn: Conn) -> tuple[list[int], list[int]]:
            gone = await agents_store.expire_silent(conn, self.settings.agent_grace_sec, self.batch)
            devices: list[int] = []
            for agent_id in gone:
                devices += [d.id for d in await devices_store.disconnect_agent(conn, agent_id)]
            return gone, devices

        gone, devices = await in_transaction(self.pool, work)
        async with self.pool.acquire() as conn:
            lost = await assignments_store.lost(conn, self.batch)
            overdue = await assignments_store.overdue(conn, self.batch)
        await self.completion.end(lost, agent_id=None)
        await self.completion.end(overdue, agent_id=None)
        self.realtime.devices_changed(devices)
        if gone or lost:
            log.info("agents gone", extra={"agents": gone, "lost_assignments": len(lost)})
        return max(len(gone), len(lost), len(overdue))  # a full batch of any: more to do at once
