"""Revoked tokens lose their sockets at once, on every node.

A revocation (REST on any node, or the CLI) commits with a bus message; each node then drops the
sockets it holds whose token is no longer valid, and the maintenance leader retires a revoked agent
at once through the lease rescuer, the very path of an agent gone past its grace. A periodic check
against the database covers a message this node missed (its listening connection was down).

The same checks move a person's dashboard sockets between team rooms (``rooms``) when their teams changed, so
a person added to or removed from a team hears of it within ``recheck_sec`` (at once when a ``Revoked`` names
them), without reconnecting.
"""

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from phonefleet.protocol.models import AdminToken, AdminTokenCreated
from phonefleet.server import tokens
from phonefleet.server.auth import Principal
from phonefleet.server.bus import Bus
from phonefleet.server.bus_messages import Revoked
from phonefleet.server.maintenance import Maintenance
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.realtime import Realtime
from phonefleet.server.rooms import Rooms
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import people as people_store

log = logging.getLogger(__name__)


def _still_valid(p: Principal, admins: set[int], sessions: dict[int, str], tokens: dict[int, str]) -> bool:
    if p.admin_token_id is not None:
        return p.admin_token_id in admins
    if p.session_id is not None:
        return sessions.get(p.session_id) == p.role
    if p.person_token_id is not None:
        return tokens.get(p.person_token_id) == p.role
    return True  # the environment's token: changed only by restarting the servers


class Revocations:
    """This node's side of every revocation, and the REST calls that make one here."""

    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, rooms: Rooms, maintenance: Maintenance, bus: Bus, *,
                 recheck_sec: float) -> None:
        """``recheck_sec``: how often this node checks its sockets' tokens (a missed message's worst delay)."""
        self.pool = pool
        self.realtime = realtime
        self.rooms = rooms
        self.maintenance = maintenance
        self.bus = bus
        self.recheck_sec = recheck_sec
        self.rechecks: list[Callable[[], Awaitable[int]]] = []
        """More checks of what this node's sockets may still do, run with each re-check (the live screen's
        ``ScreenRelay.drop_unseen``)."""
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ REST (this node revokes)

    async def revoke_agent(self, agent_id: int) -> None:
        async with self.pool.acquire() as conn:
            await tokens.revoke_agent(conn, agent_id, node=self.bus.node_id)
        await self.apply(tokens.agent_revoked(agent_id))  # the bus skips the sender's own messages

    async def rotate_agent(self, agent_id: int) -> str:
        async with self.pool.acquire() as conn:
            token = await tokens.rotate_agent(conn, agent_id, node=self.bus.node_id)
        await self.apply(tokens.agent_revoked(agent_id))
        return token

    async def add_admin(self, name: str) -> AdminTokenCreated:
        async with self.pool.acquire() as conn:
            row, token = await tokens.add_admin(conn, name)
        return AdminTokenCreated(admin=AdminToken.model_validate({**dict(row.items()), "source": "stored"}),
                                 token=token)

    async def revoke_admin(self, name: str) -> None:
        async with self.pool.acquire() as conn:
            token_id = await tokens.revoke_admin(conn, name, node=self.bus.node_id)
        await self.apply(tokens.admin_revoked(token_id))

    # ------------------------------------------------------------------ every node

    async def apply(self, message: Revoked) -> None:
        """A revocation message (from the bus, or this node's own): drop the sockets it ends."""
        if message.agent_id is not None:
            dropped = await self.drop_stale_agents([message.agent_id])
            self.maintenance.wake()  # the leader retires the agent now (phones offline, work lost)
        elif message.admin_token_id is not None:
            dropped = await self.drop_stale_dashboards(lambda p: p.admin_token_id == message.admin_token_id)
        elif message.person_id is not None:  # their teams may have changed too: what they watch follows
            dropped = await self.drop_stale_dashboards(lambda p: p.person_id == message.person_id)
            for check in self.rechecks:
                dropped += await check()
        else:
            return
        if dropped:
            log.info("revoked sockets dropped", extra={"sockets": dropped})

    async def drop_stale_agents(self, agent_ids: list[int] | None = None) -> int:
        """Drop agent sockets (of these agents, or all) whose token is no longer their agent's; returns how many."""
        sessions = [(sid, p) for sid, p in self.realtime.agent_sessions()
                    if agent_ids is None or p.agent_id in agent_ids]
        if not sessions:
            return 0
        async with self.pool.acquire() as conn:
            current = await agents_store.token_hashes(conn, sorted({p.agent_id for _, p in sessions
                                                                    if p.agent_id is not None}))
        stale = [sid for sid, p in sessions if p.agent_id is None or current.get(p.agent_id) != p.token_hash]
        await self.realtime.drop_agent_sockets(stale)
        return len(stale)

    async def drop_stale_dashboards(self, which: Callable[[Principal], bool] | None = None) -> int:
        """Drop dashboard sockets (those ``which`` picks, or all) whose admin token was revoked, whose session or
        personal token ended, or whose person's role changed (they reconnect with the new one), and move the
        others of people whose teams changed to their rooms; returns how many were dropped."""
        sessions = [(sid, p) for sid, p in self.realtime.dashboard_sessions() if which is None or which(p)]
        if not sessions:
            return 0
        async with self.pool.acquire() as conn:
            admins = await admin_tokens_store.existing_ids(
                conn, sorted({p.admin_token_id for _, p in sessions if p.admin_token_id is not None}))
            people_sessions, people_tokens = await people_store.alive(
                conn, sorted({p.session_id for _, p in sessions if p.session_id is not None}),
                sorted({p.person_token_id for _, p in sessions if p.person_token_id is not None}))
        stale = [sid for sid, p in sessions if not _still_valid(p, admins, people_sessions, people_tokens)]
        await self.realtime.drop_dashboard_sockets(stale)
        await self._follow_teams([(sid, p) for sid, p in sessions if sid not in stale])
        return len(stale)

    async def _follow_teams(self, sessions: list[tuple[str, Principal]]) -> None:
        """People's sockets take their current teams (and rooms); an admin's see every team anyway."""
        people = [(sid, p) for sid, p in sessions if p.person_id is not None and not p.sees_all]
        if not people:
            return
        teams = await self.rooms.people_teams(sorted({p.person_id for _, p in people if p.person_id is not None}))
        for sid, before in people:
            now = teams.get(before.person_id or -1, frozenset())
            if now != before.team_ids:
                after = dataclasses.replace(before, team_ids=now)
                self.realtime.presence.update_dashboard(sid, after)
                await self.rooms.move(sid, before, after)

    async def recheck(self) -> int:
        dropped = await self.drop_stale_agents() + await self.drop_stale_dashboards()
        for check in self.rechecks:
            dropped += await check()
        return dropped

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="token-recheck")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_sec)
            try:
                await self.recheck()
            except DATABASE_ERRORS as exc:
                log.warning("token recheck failed", extra={"error": str(exc)})
