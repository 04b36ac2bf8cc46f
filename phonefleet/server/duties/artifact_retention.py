"""Artifact retention: artifacts past ``artifact_max_age_days``, and the oldest beyond ``artifact_max_bytes`` in
all, are deleted: their files removed, their rows kept as ``deleted`` with the reason and time (so a run lists
what it had), a structured log line per pass and the ``phonefleet_artifacts_deleted`` counter. Once an hour it
also removes the ``.part`` files of uploads a killed server never finished (``PARTIAL_STALE_SEC`` untouched)."""

import asyncio
import logging
import time

import asyncpg

from phonefleet.server.artifacts import ArtifactStore
from phonefleet.server.config import Settings
from phonefleet.server.metrics import Metrics
from phonefleet.server.store import artifacts as artifacts_store
from phonefleet.server.store.records import ArtifactRecord

log = logging.getLogger(__name__)

PARTIAL_SWEEP_SEC = 3600.0
"""How often the ``.part`` files of unfinished uploads are looked for (a walk of the artifacts folder)."""
PARTIAL_STALE_SEC = 3600.0
"""A ``.part`` file no upload wrote to for this long is a dead upload's."""


class ArtifactRetention:
    name = "artifact_retention"

    def __init__(self, pool: asyncpg.Pool, store: ArtifactStore, metrics: Metrics, settings: Settings, *,
                 batch: int = 500) -> None:
        self.pool = pool
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self.interval_sec = max(settings.artifact_retention_sec, settings.maintenance_sec)  # a slow duty
        self.batch = batch
        self._swept_at: float | None = None

    async def run_once(self) -> int:
        """Deletes up to ``batch`` by age, then up to ``batch`` by size; returns how many it deleted."""
        max_age, max_bytes = self.settings.artifact_max_age_days, self.settings.artifact_max_bytes
        deleted = 0
        if max_age is not None:
            async with self.pool.acquire() as conn:
                rows = await artifacts_store.expire_older_than(conn, max_age * 86_400, self.batch)
            deleted += self._remove(rows, "age")
        if max_bytes is not None:
            async with self.pool.acquire() as conn:
                rows = await artifacts_store.expire_beyond_size(conn, max_bytes, self.batch)
            deleted += self._remove(rows, "size")
        if self._swept_at is None or time.monotonic() - self._swept_at >= PARTIAL_SWEEP_SEC:
            await self.sweep_partials()
        return deleted

    async def sweep_partials(self, older_than_sec: float = PARTIAL_STALE_SEC) -> int:
        """Remove what uploads cut off by a server's death left; returns how many files."""
        self._swept_at = time.monotonic()
        removed = await asyncio.to_thread(self.store.sweep_partials, older_than_sec)
        if removed:
            log.info("unfinished uploads removed", extra={
                "count": len(removed), "files": [f"{p.parent.name}/{p.name}" for p in removed[:50]]})
        return len(removed)

    def _remove(self, rows: list[ArtifactRecord], reason: str) -> int:
        """The rows say deleted: now their files go (a crash in between leaves a file no row serves)."""
        if not rows:
            return 0
        for row in rows:
            self.store.remove(row.assignment_id, row.name)
        freed = sum(r.bytes for r in rows)
        self.metrics.artifacts_deleted.labels(reason=reason).inc(len(rows))
        self.metrics.artifact_bytes_deleted.labels(reason=reason).inc(freed)
        log.info("artifacts deleted by retention", extra={
            "reason": reason, "count": len(rows), "bytes": freed,
            "artifacts": [f"{r.assignment_id}/{r.name}" for r in rows[:50]]})
        return len(rows)
