"""Group concurrent requests into one database transaction.

While a batch runs, new requests queue; the next batch takes all of them. Under load many agents'
reports share one transaction (and one lock on each job row) instead of queueing on that lock;
when idle, a lone request goes through at once, with no added delay.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 (an item)
R = TypeVar("R")


class Coalescer(Generic[I, R]):
    def __init__(self, run: Callable[[list[I]], Awaitable[list[R]]], *, name: str, max_items: int = 20_000) -> None:
        """``run`` takes the merged items and returns one result per item, in order."""
        self._run = run
        self._name = name
        self._max = max_items
        self._queue: list[tuple[list[I], asyncio.Future[list[R]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self._name} stopped"))

    async def submit(self, items: list[I]) -> list[R]:
        if self._task is None:  # not started (a short-lived tool): run inline
            return await self._run(items)
        fut: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._queue.append((items, fut))
        self._wake.set()
        return await fut

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch: list[tuple[list[I], asyncio.Future[list[R]]]] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0][0]) <= self._max):
                    entry = self._queue.pop(0)
                    batch.append(entry)
                    size += len(entry[0])
                merged = [item for items, _ in batch for item in items]
                try:
                    results = await self._run(merged)
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                offset = 0
                for items, fut in batch:
                    if not fut.done():
                        fut.set_result(results[offset:offset + len(items)])
                    offset += len(items)
