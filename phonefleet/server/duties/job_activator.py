"""The job activator: scheduled jobs whose time came and whose prerequisites completed start; those
with a failed prerequisite are blocked, and unblocked when it is requeued."""

import asyncpg

from phonefleet.server.distributor import Distributor
from phonefleet.server.job_control import JobControl
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.transactions import in_transaction


class JobActivator:
    """Scheduled jobs whose ``run_at`` has come and whose prerequisites completed start distributing;
    those with a failed, cancelled or deleted prerequisite become blocked (and wait again once it is
    requeued)."""

    name = "job_activator"

    def __init__(self, pool: asyncpg.Pool, jobs: JobControl, distributor: Distributor, realtime: Realtime, *,
                 interval_sec: float, batch: int = 1000) -> None:
        self.interval_sec = interval_sec
        self.batch = batch
        self.pool = pool
        self.jobs = jobs
        self.distributor = distributor
        self.realtime = realtime

    async def run_once(self) -> int:
        async def settle(conn: Conn) -> list[int]:
            changed = await jobs_store.unblock_ready(conn)
            while blocked := await jobs_store.block_dependents(conn):  # cascades down dependency chains
                for job in blocked:
                    await jobs_store.add_event(conn, job.id, "blocked", "scheduler", {"reason": job.blocked_reason})
                changed += [job.id for job in blocked]
            return changed

        async def work(conn: Conn) -> list[int]:
            activated = []
            for job in await jobs_store.due_scheduled(conn, limit=self.batch):
                if await self.jobs.activate(conn, job) is not None:
                    activated.append(job.id)
            return activated

        settled = await in_transaction(self.pool, settle)
        activated = await in_transaction(self.pool, work)
        if activated:
            await self.distributor.fill(activated)
        if activated or settled:
            await self.realtime.job_status_changed([*settled, *activated])
        return len(activated) + len(settled)
