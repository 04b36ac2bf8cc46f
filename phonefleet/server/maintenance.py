"""Background duties, each a small service (River's maintenance layout).

Only the node holding the maintenance advisory lock runs them, so several server processes on
one database do each duty once; if that node dies, its session lock goes with it and another
node takes over on its next tick.
"""

import asyncio
import contextlib
import logging
from typing import Protocol

import asyncpg

from phonefleet.server.completion import Completion
from phonefleet.server.config import Settings
from phonefleet.server.distributor import Distributor
from phonefleet.server.job_control import JobControl
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn, waiting
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.transactions import in_transaction

log = logging.getLogger(__name__)

MAINTENANCE_LOCK_KEY = 0x70666D61696E74  # "pfmaint"


class Duty(Protocol):
    name: str

    async def run_once(self) -> int: ...


class LeaseRescuer:
    """Agents silent past their grace go offline; their work, and any lapsed lease, ends as lost."""

    name = "lease_rescuer"

    def __init__(self, pool: asyncpg.Pool, completion: Completion, realtime: Realtime, settings: Settings) -> None:
        self.pool = pool
        self.completion = completion
        self.realtime = realtime
        self.settings = settings

    async def run_once(self) -> int:
        async def work(conn: Conn) -> tuple[list[int], list[int]]:
            gone = await agents_store.expire_silent(conn, self.settings.agent_grace_sec)
            devices: list[int] = []
            for agent_id in gone:
                devices += [d["id"] for d in await devices_store.disconnect_agent(conn, agent_id)]
            return gone, devices

        gone, devices = await in_transaction(self.pool, work)
        async with self.pool.acquire() as conn:
            lost = await assignments_store.lost(conn, gone)
            overdue = await assignments_store.overdue(conn)
        ended = await self.completion.end(lost, agent_id=None) + await self.completion.end(overdue, agent_id=None)
        self.realtime.devices_changed(devices)
        if gone:
            log.info("agents gone", extra={"agents": gone, "lost_assignments": len(lost)})
        return len(ended) + len(gone)


class JobActivator:
    """Scheduled jobs whose ``run_at`` has come and whose prerequisites completed start distributing;
    those with a failed, cancelled or deleted prerequisite become blocked (and wait again once it is
    requeued)."""

    name = "job_activator"

    def __init__(self, pool: asyncpg.Pool, jobs: JobControl, distributor: Distributor, realtime: Realtime) -> None:
        self.pool = pool
        self.jobs = jobs
        self.distributor = distributor
        self.realtime = realtime

    async def run_once(self) -> int:
        async def settle(conn: Conn) -> list[int]:
            changed = [r["id"] for r in await jobs_store.unblock_ready(conn)]
            while blocked := await jobs_store.block_dependents(conn):  # cascades down dependency chains
                for row in blocked:
                    await jobs_store.add_event(conn, row["id"], "blocked", "scheduler",
                                               {"reason": row["blocked_reason"]})
                changed += [r["id"] for r in blocked]
            return changed

        async def work(conn: Conn) -> list[int]:
            activated = []
            for job in await jobs_store.due_scheduled(conn):
                if await self.jobs.activate(conn, job) is not None:
                    activated.append(job["id"])
            return activated

        settled = await in_transaction(self.pool, settle)
        activated = await in_transaction(self.pool, work)
        if activated:
            await self.distributor.fill(activated)
        if activated or settled:
            await self.realtime.job_status_changed([*settled, *activated])
        return len(activated) + len(settled)


class FillSweeper:
    """A periodic fill: a safety net for a fill request that raced another node's transaction, and the
    moment a retry's backoff ends. Before it, one bounded step over the backlog: jobs no connected phone
    may run are marked starved (fill passes skip them), and starved ones a phone may run now are freed
    (``recheck`` of them a tick: a change no event reported is healed within backlog / recheck ticks)."""

    name = "fill_sweeper"

    def __init__(self, pool: asyncpg.Pool, distributor: Distributor, *, batch: int = 500, recheck: int = 100) -> None:
        self.pool = pool
        self.distributor = distributor
        self.batch = batch
        self.recheck = recheck
        self._waiting_after = 0
        self._starved_after = 0

    async def run_once(self) -> int:
        async with self.pool.acquire() as conn:
            _, self._waiting_after = await waiting.sweep(conn, starved=False, after_id=self._waiting_after,
                                                         limit=self.batch)
            freed, self._starved_after = await waiting.sweep(conn, starved=True, after_id=self._starved_after,
                                                             limit=self.recheck)
        if freed:
            self.distributor.request_fill()
        return await self.distributor.fill()


class Maintenance:
    def __init__(self, pool: asyncpg.Pool, dsn: str, duties: list[Duty], settings: Settings) -> None:
        self.pool = pool
        self.dsn = dsn
        self.duties = duties
        self.interval = settings.maintenance_sec
        self._task: asyncio.Task[None] | None = None
        self._lock_conn: asyncpg.Connection | None = None
        self.is_leader = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run the duties now, not at the next tick (a revoked agent is retired at once); only the leader runs them."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lock_conn is not None and not self._lock_conn.is_closed():
            await self._lock_conn.close()

    async def _lead(self) -> bool:
        """Hold the maintenance lock on a connection of our own; True while we are the leader."""
        try:
            if self._lock_conn is None or self._lock_conn.is_closed():
                self._lock_conn = await asyncpg.connect(self.dsn)
                self.is_leader = False
            if not self.is_leader:
                self.is_leader = bool(
                    await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY)
                )
        except DATABASE_ERRORS:
            self.is_leader = False
        return self.is_leader

    async def run_once(self) -> None:
        for duty in self.duties:
            try:
                await duty.run_once()
            except DATABASE_ERRORS:
                log.warning("maintenance duty failed", extra={"duty": duty.name}, exc_info=True)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # before the run: a wake during it runs the duties again at once
            if await self._lead():
                await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
