"""The retry waker: the moment a retry's backoff ends, its job is filled (on another phone where one may
run it)."""

import asyncpg

from phonefleet.server.distributor import Distributor
from phonefleet.server.store import assignments as assignments_store


class RetryWaker:
    """Jobs with a retry whose backoff has ended, ``batch`` at a time, each filled as a job event."""

    name = "retry_waker"

    def __init__(self, pool: asyncpg.Pool, distributor: Distributor, *, interval_sec: float, batch: int = 500) -> None:
        self.pool = pool
        self.distributor = distributor
        self.interval_sec = interval_sec
        self.batch = batch

    async def run_once(self) -> int:
        """Returns how many jobs it woke: a full batch means more are due at once."""
        async with self.pool.acquire() as conn:
            job_ids = await assignments_store.jobs_with_due_retries(conn, self.batch)
        if job_ids:
            await self.distributor.fill(job_ids)
        return len(job_ids)
