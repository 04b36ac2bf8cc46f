"""Ending assignments: results from agents, lost leases, server-side timeouts.

One path for all of them: record the outcome (with retry scheduling), free the phones, complete
the jobs whose every slot has ended, and tell the dashboards.
"""

from collections.abc import Sequence
from typing import Any

import asyncpg

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

    async def end(self, items: Sequence[dict[str, Any]], *, agent_id: int | None) -> list[int]:
        """End these assignments; returns the ids that changed (others had already ended)."""
        if not items:
            return []

        async def work(conn: Conn) -> tuple[list[Any], list[Any], list[Any]]:
            changed = await assignments_store.finish(
                conn, items, agent_id=agent_id,
                retry_base_sec=self.settings.retry_base_sec, retry_max_sec=self.settings.retry_max_sec,
            )
            devices = await devices_store.refresh_states(conn, sorted({r["device_id"] for r in changed}))
            completed = await jobs_store.complete_finished(conn, sorted({r["job_id"] for r in changed}))
            return changed, devices, completed

        changed, devices, completed = await in_transaction(self.pool, work)
        if not changed:
            return []
        for row in changed:
            status = "retrying" if row["retry_at"] is not None else row["status"]
            self.metrics.assignments_finished.labels(status=status).inc()
        self.realtime.jobs_changed(r["job_id"] for r in changed)
        self.realtime.devices_changed(d["id"] for d in devices if d["state"] != d["old_state"])
        if completed:
            await self.realtime.job_status_changed(r["id"] for r in completed)
        if any(d["state"] == "idle" for d in devices) or any(r["retry_at"] is not None for r in changed):
            self.distributor.request_fill()
        return [r["id"] for r in changed]
