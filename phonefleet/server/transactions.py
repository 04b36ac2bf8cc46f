"""Run a unit of work in one transaction, retried when PostgreSQL breaks a deadlock."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from phonefleet.server.store import Conn

T = TypeVar("T")

_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


async def in_transaction(pool: asyncpg.Pool, work: Callable[[Conn], Awaitable[T]]) -> T:
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(_RETRYABLE),
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.01, max=0.2),
        reraise=True,
    ):
        with attempt:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
    raise AssertionError("unreachable")
