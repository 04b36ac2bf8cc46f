"""The distribution switch and its status: stopped means no new assignments on any node, while
work already on the phones finishes (and pauses, cancels and results keep flowing)."""

from collections.abc import Sequence

import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.protocol.models import ScheduleDue, SchedulerStatus
from phonefleet.server import audit
from phonefleet.server.distributor import Distributor
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store import scheduler as scheduler_store
from phonefleet.server.store import schedules as schedules_store
from phonefleet.server.store.records import SwitchState
from phonefleet.server.transactions import in_transaction


class SchedulerControl:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor, grace_sec: float) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor
        self.grace_sec = grace_sec

    async def status(self, teams: Sequence[int] | None = None) -> SchedulerStatus:
        """The switch (one for every team), and counts of ``teams``' jobs, work, agents and phones (None: all)."""
        async with self.pool.acquire() as conn:
            switch = await scheduler_store.state(conn)
            due = await schedules_store.next_due(conn, teams)
            agents = await agents_store.counts_by_status(conn, self.grace_sec, teams)
            return SchedulerStatus(
                running=switch.running, changed_at=switch.changed_at, changed_by=switch.changed_by,
                jobs=await jobs_store.counts_by_status(conn, teams),
                assignments=await assignments_store.open_counts(conn, teams),
                connected_agents=int(agents.get("connected", 0)),
                idle_devices=await devices_store.count_idle(conn, teams),
                next_schedule=ScheduleDue(id=due.id, name=due.name, next_run_at=due.next_run_at) if due else None,
            )

    async def set_running(self, running: bool, actor: str = "admin") -> SchedulerStatus:
        """Waits for claims in flight (they share the switch's row lock): once a stop answers, no
        node makes another assignment until a start."""
        async def work(conn: Conn) -> SwitchState:
            was = await scheduler_store.state(conn)
            switch = await scheduler_store.set_running(conn, running, actor)
            await audit.record_change(conn, "scheduler.start" if running else "scheduler.stop", "scheduler", None,
                                      before={"running": was.running}, after={"running": switch.running})
            return switch

        switch = await in_transaction(self.pool, work)
        await self.realtime.broadcast(ev.SCHEDULER_UPDATE, ev.SchedulerSwitch(
            running=switch.running, changed_at=switch.changed_at, changed_by=switch.changed_by).model_dump(mode="json"),
            to=None)  # the one switch of the whole fleet: every dashboard shows it
        if running:
            self.distributor.request_fill()
            await self.realtime.fill_everywhere()
        return await self.status()
