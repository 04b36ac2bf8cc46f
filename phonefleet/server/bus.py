"""Cross-node messages over PostgreSQL LISTEN/NOTIFY.

Several server processes may share one database; an agent's socket lives on exactly one of them.
A node that must reach an agent it does not hold publishes a small message here, and the node
that holds it delivers. PostgreSQL is already the single source of truth, so no broker is needed
(and Supabase offers LISTEN/NOTIFY on its direct connection). Payloads stay small: large ones
(a batch of assignments) travel as a "kick" that makes the holder re-read them from the database.
"""

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from phonefleet.server.bus_messages import BUS_MESSAGE, BusMessage, _Message
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.store import Conn

log = logging.getLogger(__name__)

CHANNEL = "phonefleet"
MAX_PAYLOAD = 7000

Handler = Callable[[BusMessage], Awaitable[None]]


def encode(message: _Message, node: str) -> str:
    """A message as every node reads it: JSON with the sender's node id (a node ignores its own)."""
    payload = json.dumps({**message.model_dump(mode="json"), "node": node}, separators=(",", ":"))
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("bus payload too large; publish a kick instead")
    return payload


async def notify(conn: Conn, message: _Message, node: str) -> None:
    """Send a message on ``conn``: inside a transaction it goes out on commit, and not at all on rollback.
    Processes that are not nodes (the CLI) reach every node this way."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, encode(message, node))


class Bus:
    def __init__(self, dsn: str, pool: asyncpg.Pool) -> None:
        self.node_id = uuid.uuid4().hex[:12]
        self._dsn = dsn
        self._pool = pool
        self._handler: Handler | None = None
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, handler: Handler) -> None:
        """Listen, handing every other node's message to ``handler``."""
        self._handler = handler
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="bus-watch")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    async def publish(self, message: _Message) -> None:
        payload = encode(message, self.node_id)
        try:
            await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        except DATABASE_ERRORS as exc:  # a lost message is recovered by polling
            log.warning("bus publish failed", extra={"error": str(exc)})

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        await conn.add_listener(CHANNEL, self._on_notify)
        self._conn = conn

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            raw = json.loads(str(payload))
            if not isinstance(raw, dict) or raw.get("node") == self.node_id or self._handler is None:
                return
            message = BUS_MESSAGE.validate_python(raw)
        except ValueError:  # not ours, or from a newer node: not for this one
            log.info("bus message ignored", extra={"payload": str(payload)[:200]})
            return
        asyncio.get_running_loop().create_task(self._dispatch(message))

    async def _dispatch(self, message: BusMessage) -> None:
        assert self._handler is not None
        try:
            await self._handler(message)
        except Exception:
            log.exception("bus message failed")

    async def _watch(self) -> None:
        """Reconnect the listening connection if the database drops it."""
        while not self._stopping:
            await asyncio.sleep(2.0)
            if self._conn is None or self._conn.is_closed():
                try:
                    await self._connect()
                except DATABASE_ERRORS:
                    continue
