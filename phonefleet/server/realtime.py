"""Pushes from the services: to agents (on this node, or through the bus to the node that holds them),
and through ``DashboardPush`` to dashboards. The sockets themselves are ``namespaces``; messages from
other nodes arrive through ``router``."""

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol.events import AssignmentOrder
from phonefleet.protocol.wire import OrJson, TextPacket
from phonefleet.server.auth import Principal
from phonefleet.server.bus import Bus
from phonefleet.server.bus_messages import KICK_BATCH, FillAll, Kick, ToAgent
from phonefleet.server.dashboard_push import DashboardPush
from phonefleet.server.orders import whole, wire
from phonefleet.server.presence import Presence

AckCallback = Callable[[int, Any], Coroutine[Any, Any, None]]
"""Called with (agent_id, the agent's ack) once a ``job:assign`` is acknowledged."""


def socket_server(*, ping_interval_sec: int, ping_timeout_sec: int) -> socketio.AsyncServer:
    """The Socket.IO server: JSON text packets (orjson), no binary walk, quiet logs."""
    return socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins="*", serializer=TextPacket, json=OrJson, logger=False,
        engineio_logger=False, max_http_buffer_size=16 * 1024 * 1024, ping_interval=ping_interval_sec,
        ping_timeout=ping_timeout_sec,
    )


class Realtime:
    def __init__(self, sio: socketio.AsyncServer, presence: Presence, push: DashboardPush, bus: Bus) -> None:
        self.sio = sio
        self.presence = presence
        self.push = push
        self.bus = bus

    # ------------------------------------------------------------------ who is here

    @property
    def dashboards(self) -> set[str]:
        return self.presence.dashboards

    def has_agent(self, agent_id: int) -> bool:
        return self.presence.agent_sid(agent_id) is not None

    def agent_sessions(self) -> list[tuple[str, Principal]]:
        return self.presence.agent_sessions()

    def dashboard_sessions(self) -> list[tuple[str, Principal]]:
        return self.presence.dashboard_sessions()

    async def drop_agent_sockets(self, sids: Iterable[str]) -> None:
        """Disconnect these agent sockets now (their token was revoked); no event of theirs is handled after."""
        for sid in list(sids):
            self.presence.forget_agent(sid)
            await self.sio.disconnect(sid, namespace=ev.AGENT_NAMESPACE)

    async def drop_dashboard_sockets(self, sids: Iterable[str]) -> None:
        for sid in list(sids):
            self.presence.forget_dashboard(sid)
            await self.sio.disconnect(sid, namespace=ev.DASHBOARD_NAMESPACE)

    # ------------------------------------------------------------------ to agents

    async def to_agent(self, agent_id: int, event: str, data: dict[str, Any]) -> None:
        """Emit to an agent wherever it is connected (this node, or another through the bus)."""
        if not await self.to_local_agent(agent_id, event, data):
            try:
                await self.bus.publish(ToAgent(agent_id=agent_id, event=event, data=data))
            except ValueError:
                await self.kick([agent_id])

    async def to_local_agent(self, agent_id: int, event: str, data: dict[str, Any] | None) -> bool:
        """Emit to the agent if it is connected to this node; False if it is not."""
        sid = self.presence.agent_sid(agent_id)
        if sid is None:
            return False
        await self.sio.emit(event, data, to=sid, namespace=ev.AGENT_NAMESPACE)
        return True

    async def send_orders(self, agent_id: int, orders: Sequence[AssignmentOrder | dict[str, Any]],
                          on_ack: AckCallback) -> bool:
        """One ``job:assign`` with whole orders (a re-send of an agent's pending work); ``on_ack(agent_id, ack)``
        marks them delivered. An agent on another node is kicked to read them from the database."""
        sid = self.presence.agent_sid(agent_id)
        if sid is None:
            await self.kick([agent_id])
            return False
        await self._assign(sid, agent_id, {"assignments": wire(orders)}, on_ack)
        return True

    async def send_claimed(self, agent_id: int, jobs: Mapping[int, dict[str, Any]], slots: list[dict[str, Any]],
                           on_ack: AckCallback) -> bool:
        """One ``job:assign`` with a claim's new orders of this agent (``orders.claimed`` slots, their jobs'
        fields in ``jobs``): each job once to an agent that takes plans once, whole orders to the others.
        False when the agent is not connected to this node: the caller kicks all such agents at once."""
        sid = self.presence.agent_sid(agent_id)
        if sid is None:
            return False
        if self.presence.takes_plans_once(sid):
            payload: dict[str, Any] = {"jobs": [jobs[i] for i in {s["job_id"] for s in slots}], "slots": slots}
        else:
            payload = {"assignments": whole(jobs, slots)}
        await self._assign(sid, agent_id, payload, on_ack)
        return True

    async def _assign(self, sid: str, agent_id: int, payload: dict[str, Any], on_ack: AckCallback) -> None:
        def callback(*args: Any) -> None:
            asyncio.get_running_loop().create_task(on_ack(agent_id, args[0] if args else None))

        await self.sio.emit(ev.JOB_ASSIGN, payload, to=sid, namespace=ev.AGENT_NAMESPACE, callback=callback)

    async def kick(self, agent_ids: Iterable[int]) -> None:
        """Ask the nodes holding these agents to re-send their pending assignments from the database (one
        message per ``KICK_BATCH`` agents)."""
        ids = sorted(set(agent_ids))
        for start in range(0, len(ids), KICK_BATCH):
            await self.bus.publish(Kick(agent_ids=ids[start:start + KICK_BATCH]))

    async def fill_everywhere(self) -> None:
        """Ask every other node to run a fill (this node fills on its own)."""
        await self.bus.publish(FillAll())

    # ------------------------------------------------------------------ to dashboards

    def jobs_changed(self, job_ids: Iterable[int]) -> None:
        self.push.jobs_changed(job_ids)

    def devices_changed(self, device_ids: Iterable[int]) -> None:
        self.push.devices_changed(device_ids)

    async def job_status_changed(self, job_ids: Iterable[int]) -> None:
        await self.push.job_status_changed(job_ids)

    async def broadcast(self, event: str, data: dict[str, Any], *, to: list[str] | None) -> None:
        """To the dashboards in the rooms ``to`` (``rooms.of_team(team)`` for what a team owns; None only for
        what every dashboard sees, such as the distribution switch), on every node."""
        await self.push.broadcast(event, data, to=to)
