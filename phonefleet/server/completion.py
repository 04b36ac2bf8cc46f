"""Ending assignments: results from agents, lost leases, server-side timeouts.

One path for all of them: record the outcome (with retry scheduling), free the phones, complete
the jobs whose every slot has ended, and tell the dashboards. Concurrent reports (many agents
finishing at once) are merged into one transaction by a ``Coalescer``.
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from phonefleet.server.batching import Coalescer
from phonefleet.server.config import Settings
from phonefleet.server.distributor import Distributor
from phonefleet.server.metrics import Metrics
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.transactions import in_transaction


class Completion:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor, metrics: Metrics,
                 settings: Settings) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor
        self.metrics = metrics
        self.settings = settings
        self.batcher: Coalescer[dict[str, Any], int | None] = Coalescer(self._end_batch, name="completion")

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def end(self, items: Sequence[dict[str, Any]], *, agent_id: int | None) -> list[int]:
        """End these assignments (only the agent's own when ``agent_id`` is given); returns the ids that
        changed (others had already ended, or were not the agent's)."""
        if not items:
            return []
        results = await self.batcher.submit([{**i, "agent_id": agent_id} for i in items])
        return [r for r in results if r is not None]

    async def _end_batch(self, items: list[dict[str, Any]]) -> list[int | None]:
        async def work(conn: Conn) -> tuple[list[Any], list[Any], list[Any]]:
            changed = await assignments_store.finish(
                conn, items, retry_base_sec=self.settings.retry_base_sec, retry_max_sec=self.settings.retry_max_sec,
            )
            devices = await devices_store.refresh_states(conn, sorted({r["device_id"] for r in changed}))
            counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # completed, failed, retries
            for r in changed:
                entry = counts[r["job_id"]]  # every touched job, so a cancelled report can complete it too
                if r["retry_at"] is not None:
                    entry[2] += 1
                elif r["status"] == "completed":
                    entry[0] += 1
                elif r["status"] in ("failed", "timed_out"):
                    entry[1] += 1
            completed = await jobs_store.apply_outcomes(conn, {k: (v[0], v[1], v[2]) for k, v in counts.items()})
            return changed, devices, completed

        changed, devices, completed = await in_transaction(self.pool, work)
        ids = {r["id"] for r in changed}
        if changed:
            for row in changed:
                status = "retrying" if row["retry_at"] is not None else row["status"]
                self.metrics.assignments_finished.labels(status=status).inc()
                if row["started_at"] is not None and row["status"] != "cancelled":
                    seconds = (row["finished_at"] - row["started_at"]).total_seconds()
                    self.metrics.run_seconds.labels(status=row["status"]).observe(max(0.0, seconds))
            self.realtime.jobs_changed(r["job_id"] for r in changed)
            self.realtime.devices_changed(d["id"] for d in devices)
            if completed:
                await self.realtime.job_status_changed(r["id"] for r in completed)
            if devices or any(r["retry_at"] is not None for r in changed):
                self.distributor.request_fill()
        recorded: list[int | None] = []
        for item in items:
            aid = int(item["assignment_id"])
            recorded.append(aid if aid in ids else None)
            ids.discard(aid)  # a duplicate in one batch is recorded once
        return recorded
