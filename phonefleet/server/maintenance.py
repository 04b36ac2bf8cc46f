"""Background duties on one node at a time (River's maintenance layout).

Only the node holding the maintenance advisory lock runs them, so several server processes on
one database do each duty once; if that node dies, its session lock goes with it and another
node takes over on its next tick. The duties themselves live in ``server/duties/``.
"""

import asyncio
import contextlib
import logging
from typing import Protocol

import asyncpg

from phonefleet.server.config import Settings
from phonefleet.server.outage import DATABASE_ERRORS

log = logging.getLogger(__name__)

MAINTENANCE_LOCK_KEY = 0x70666D61696E74  # "pfmaint"


class Duty(Protocol):
    name: str
    interval_sec: float

    async def run_once(self) -> int:
        """Do one bounded step; returns how much it did (a duty with a ``batch`` that did a full one has more)."""
        ...


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
        """Every duty once, whatever its interval (tests, and a wake)."""
        for duty in self.duties:
            await self._run(duty)

    async def _run(self, duty: Duty) -> int:
        try:
            return await duty.run_once()
        except DATABASE_ERRORS:
            log.warning("maintenance duty failed", extra={"duty": duty.name}, exc_info=True)
            return 0

    async def _loop(self) -> None:
        """Each duty on its own interval; one that did a full batch runs again at once (it has more to do)."""
        loop = asyncio.get_running_loop()
        due = dict.fromkeys((d.name for d in self.duties), 0.0)
        while True:
            woken = self._wake.is_set()
            self._wake.clear()  # before the run: a wake during it runs the duties again at once
            if await self._lead():
                for duty in self.duties:
                    if woken or loop.time() >= due[duty.name]:
                        did = await self._run(duty)
                        more = did >= getattr(duty, "batch", float("inf"))
                        due[duty.name] = loop.time() + (0.0 if more else duty.interval_sec)
            else:
                due = dict.fromkeys(due, loop.time() + self.interval)  # try to lead again then
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(due.values()) - loop.time()))
