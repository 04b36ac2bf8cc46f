"""The fill sweeper: the backlog of waiting jobs re-checked in bounded batches, then a fill pass."""

import asyncpg

from phonefleet.server.distributor import Distributor
from phonefleet.server.store import waiting


class FillSweeper:
    """A periodic fill: a safety net for a fill request that raced another node's transaction. Before it,
    one bounded step over the backlog: jobs no connected phone may run are marked starved (fill passes skip
    them), and starved ones a phone may run now are freed (``recheck`` of them a tick: a change no event
    reported is healed within backlog / recheck ticks)."""

    name = "fill_sweeper"

    def __init__(self, pool: asyncpg.Pool, distributor: Distributor, *, interval_sec: float, step: int = 500,
                 recheck: int = 100) -> None:
        self.interval_sec = interval_sec
        self.pool = pool
        self.distributor = distributor
        self.step = step
        self.recheck = recheck
        self._waiting_after = 0
        self._starved_after = 0

    async def run_once(self) -> int:
        async with self.pool.acquire() as conn:
            _, self._waiting_after = await waiting.sweep(conn, starved=False, after_id=self._waiting_after,
                                                         limit=self.step)
            freed, self._starved_after = await waiting.sweep(conn, starved=True, after_id=self._starved_after,
                                                             limit=self.recheck)
        if freed:
            self.distributor.request_fill()
        return await self.distributor.fill()
