"""Agents as the operator manages them: registration (one way, for REST, the CLI and tests) and limits."""

import asyncpg

from phonefleet.protocol.models import Agent, AgentCreated
from phonefleet.server import audit, tokens
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import NotFound
from phonefleet.server.queries import Queries
from phonefleet.server.store import Conn
from phonefleet.server.store import agents as agents_store
from phonefleet.server.transactions import in_transaction


class Fleet:
    def __init__(self, pool: asyncpg.Pool, queries: Queries, distributor: Distributor) -> None:
        self.pool = pool
        self.queries = queries
        self.distributor = distributor

    async def register(self, name: str) -> AgentCreated:
        """A new agent and its token (shown once)."""
        async with self.pool.acquire() as conn:
            agent_id, token = await tokens.add_agent(conn, name)
        return AgentCreated(agent=await self.queries.agent(agent_id), token=token)

    async def set_max_running(self, agent_id: int, max_running: int | None) -> Agent:
        """Cap (or uncap) the phones that run at once on an agent; a raised or removed cap frees room at once."""
        async def work(conn: Conn) -> None:
            was = await agents_store.max_running(conn, agent_id)
            if not await agents_store.set_max_running(conn, agent_id, max_running):
                raise NotFound(f"agent {agent_id} not found")
            await audit.record_change(conn, "agent.update", "agent", agent_id,
                                      before={"max_running": was}, after={"max_running": max_running})

        await in_transaction(self.pool, work)
        self.distributor.request_fill()
        return await self.queries.agent(agent_id)
