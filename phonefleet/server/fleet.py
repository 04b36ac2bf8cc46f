"""Agents as the operator manages them: registration (one way, for REST, the CLI and tests), limits and their
team."""

import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.protocol.models import Agent, AgentCreated, AgentPatch
from phonefleet.server import audit, teams, tokens
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import Invalid, NotFound
from phonefleet.server.queries import Queries
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn
from phonefleet.server.store import agents as agents_store
from phonefleet.server.transactions import in_transaction


class Fleet:
    def __init__(self, pool: asyncpg.Pool, queries: Queries, distributor: Distributor, realtime: Realtime) -> None:
        self.pool = pool
        self.queries = queries
        self.distributor = distributor
        self.realtime = realtime

    async def register(self, name: str) -> AgentCreated:
        """A new agent and its token (shown once)."""
        async with self.pool.acquire() as conn:
            agent_id, token = await tokens.add_agent(conn, name)
        return AgentCreated(agent=await self.queries.agent(agent_id), token=token)

    async def patch(self, agent_id: int, patch: AgentPatch) -> Agent:
        """``PATCH /api/agents/{id}``: the fields given (a move first, then the limit)."""
        given = patch.model_fields_set
        if not given:
            raise Invalid.field("body", "give max_running or team_id")
        agent = None
        if "team_id" in given:
            if patch.team_id is None:
                raise Invalid.field("team_id", "a team's id (every agent belongs to one)")
            agent = await self.move(agent_id, patch.team_id)
        if "max_running" in given:
            agent = await self.set_max_running(agent_id, patch.max_running)
        assert agent is not None
        return agent

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

    async def move(self, agent_id: int, team_id: int) -> Agent:
        """Move an agent and its phones to another team. Claims read the agent's team, so its phones take only
        the new team's work from the next fill on (one runs now); what runs on them finishes. Dashboards on
        every node hear of the agent and of its phones."""
        async with self.pool.acquire() as conn:
            device_ids = await teams.move_agent(conn, agent_id, team_id)
        self.distributor.request_fill()
        self.realtime.devices_changed(device_ids)
        agent = await self.queries.agent(agent_id)
        await self.realtime.broadcast(ev.AGENT_UPDATE, ev.AgentUpdate(
            agent_id=agent.id, name=agent.name, status=agent.status, paused=agent.paused, connected=agent.connected,
            team_id=agent.team_id,
        ).model_dump())
        return agent
