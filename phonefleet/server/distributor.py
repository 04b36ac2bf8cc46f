"""The JobDistributor: match idle eligible phones to jobs with open slots, then push the work.

Every fill is a set of short transactions (one per job, highest priority first): lock the job
row, claim phones with ``FOR UPDATE SKIP LOCKED``, bulk-insert the assignments, bump the job's
counters. Nothing is held in memory between fills, so any number of server processes may fill
the same database at once without over-assigning.
"""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from phonefleet.protocol.events import JobAssignAck
from phonefleet.server.batching import Coalescer
from phonefleet.server.metrics import Metrics
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store import scheduler as scheduler_store

log = logging.getLogger(__name__)


def order_payload(job: Any, row: dict[str, Any]) -> dict[str, Any]:
    """An ``AssignmentOrder`` as plain JSON (the job's plan was validated when it was created)."""
    return {
        "assignment_id": row["id"], "job_id": job["id"], "device_id": row["device_id"], "serial": row["serial"],
        "title": job["title"], "plan": job["plan"], "priority": job["priority"],
        "timeout_sec": job["timeout_sec"], "attempt": row["attempt"], "status": "pending",
        "allow_shell": job["allow_shell"], "on_interrupt": job["on_interrupt"],
    }


def order_from_row(row: Any) -> dict[str, Any]:
    return {
        "assignment_id": row["assignment_id"], "job_id": row["job_id"], "device_id": row["device_id"],
        "serial": row["serial"], "title": row["title"], "plan": row["plan"], "priority": row["priority"],
        "timeout_sec": row["timeout_sec"], "attempt": row["attempt"], "status": row["status"],
        "allow_shell": row["allow_shell"], "on_interrupt": row["on_interrupt"],
    }


class Distributor:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, metrics: Metrics) -> None:
        self.pool = pool
        self.realtime = realtime
        self.metrics = metrics
        self._requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._acks: Coalescer[tuple[int, int], None] = Coalescer(self._deliver, name="delivery-acks")

    async def start(self) -> None:
        self.realtime.on_kick = self.resend_pending
        self._task = asyncio.create_task(self._loop(), name="distributor")
        self._acks.start()

    async def _deliver(self, pairs: list[tuple[int, int]]) -> list[None]:
        async with self.pool.acquire() as conn:
            await assignments_store.mark_delivered(conn, pairs)
        return [None] * len(pairs)

    async def stop(self) -> None:
        await self._acks.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def request_fill(self) -> None:
        """Ask for a fill soon; many requests while one runs collapse into one more pass."""
        self._requested.set()

    async def _loop(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()
            try:
                await self.fill()
            except DATABASE_ERRORS:
                log.warning("fill failed; will retry on the next event", exc_info=True)

    async def fill(self, job_ids: Sequence[int] | None = None) -> int:
        """One pass over fillable jobs; returns the number of assignments created and pushed."""
        started = time.perf_counter()
        created: list[tuple[Any, list[dict[str, Any]]]] = []
        async with self._lock, self.pool.acquire() as conn:
            context = await scheduler_store.fill_context(conn)
            idle = context["idle"]
            if idle == 0 or not context["running"]:
                return 0
            for candidate in await jobs_store.fillable(conn, job_ids):
                async with conn.transaction():
                    job = await jobs_store.get_for_fill(conn, candidate["id"])
                    if job is None:
                        continue
                    if not job["distribution_running"]:  # stopped since this pass began
                        break
                    if job["status"] != "active" or job["target_count"] is None:
                        continue
                    limit = max(0, job["target_count"] - job["assigned_count"]) + job["retry_pending"]
                    rows = await assignments_store.claim(conn, job, min(limit, idle),
                                                         agent_caps=context["agent_caps"])
                if rows:
                    created.append((job, rows))
                    idle -= len(rows)
                    if idle <= 0:
                        break
        total = sum(len(rows) for _, rows in created)
        if total:
            self.metrics.assignments_created.inc(total)
            await self._push(created)
            self.metrics.fanout_seconds.observe(time.perf_counter() - started)
        self.metrics.fill_seconds.observe(time.perf_counter() - started)
        return total

    async def _push(self, created: list[tuple[Any, list[dict[str, Any]]]]) -> None:
        by_agent: dict[int, list[dict[str, Any]]] = defaultdict(list)
        device_ids: list[int] = []
        for job, rows in created:
            for row in rows:
                by_agent[row["agent_id"]].append(order_payload(job, row))
                device_ids.append(row["device_id"])
        await asyncio.gather(*(self.realtime.send_orders(a, o, self.on_ack) for a, o in by_agent.items()))
        self.realtime.jobs_changed(job["id"] for job, _ in created)
        self.realtime.devices_changed(device_ids)

    async def on_ack(self, agent_id: int, data: Any) -> None:
        """The agent confirmed a ``job:assign``: its assignments are delivered."""
        try:
            ack = JobAssignAck.model_validate(data)
        except ValueError:
            log.warning("malformed job:assign ack", extra={"agent_id": agent_id})
            return
        if ack.received:
            try:
                await self._acks.submit([(agent_id, aid) for aid in ack.received])
            except DATABASE_ERRORS:
                log.warning("delivery ack not recorded; the agent's next hello or poll re-syncs it", exc_info=True)

    async def resend_pending(self, agent_id: int) -> None:
        """Re-send assignments that were never acknowledged (agent reconnected, or a kick)."""
        async with self.pool.acquire() as conn:
            rows = await assignments_store.pending_orders(conn, agent_id)
        if rows:
            await self.realtime.send_orders(agent_id, [order_from_row(r) for r in rows], self.on_ack)
