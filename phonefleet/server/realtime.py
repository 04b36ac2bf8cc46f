"""Socket.IO: the ``/agent`` and ``/dashboard`` namespaces and every push to them.

Handlers only authenticate, parse and call a service; pushes to dashboards are coalesced and
throttled here (``progress_hz`` per job at most), so a busy fleet costs the browsers a bounded
number of messages whatever the rate of agent events.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any

import asyncpg
import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol.models import Device, ErrorBody, ErrorDetail, ErrorInfo
from phonefleet.protocol.wire import MALFORMED_EVENT, MalformedPacket, OrJson, TextPacket
from phonefleet.server import outage
from phonefleet.server.auth import Authenticator, Principal
from phonefleet.server.bus import Bus
from phonefleet.server.metrics import Metrics
from phonefleet.server.outage import DATABASE_ERRORS, OUTAGE_ERRORS
from phonefleet.server.store import agents as agents_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store

log = logging.getLogger(__name__)

AgentEventHandler = Callable[[Principal, str, Any], Awaitable[dict[str, Any]]]
AckCallback = Callable[[int, Any], Coroutine[Any, Any, None]]


def _token_from(auth: Any) -> str | None:
    if isinstance(auth, dict):
        token = auth.get("token")
        return token if isinstance(token, str) else None
    return None


@contextlib.contextmanager
def refused_on_outage() -> Iterator[None]:
    """A connect during a database outage is refused with the outage's error (the client tries again
    later), never a handshake that crashes and leaves the client waiting."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        outage.report(exc, "socket connect")
        raise socketio.exceptions.ConnectionRefusedError(outage.MESSAGE, outage.outage_ack(exc)["error"]) from exc


def malformed_ack(namespace: str, sid: str, bad: MalformedPacket) -> dict[str, Any]:
    """A packet that could not be read: one warning (no traceback: it is the client's fault, not ours) and
    the error ack, which python-socketio sends only if the packet asked for one."""
    log.warning("malformed socket packet", extra={"namespace": namespace, "sid": sid, "reason": bad.reason,
                                                   "size": bad.size})
    body = ErrorBody(error=ErrorInfo(code="malformed_packet", message=f"the packet could not be read: {bad.reason}",
                                     details=[ErrorDetail(field="packet", message=bad.reason)]))
    return {"ok": False, **body.model_dump(mode="json", exclude_none=True)}


def _malformed(event: str, data: Any) -> MalformedPacket | None:
    return data if event == MALFORMED_EVENT and isinstance(data, MalformedPacket) else None


class AgentNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """``/agent``: one connection per PC agent, authenticated by its token."""

    def __init__(self, realtime: "Realtime") -> None:
        super().__init__(ev.AGENT_NAMESPACE)
        self.rt = realtime

    def _is_lifecycle(self, event: str, sid: Any) -> bool:
        """A real connect or disconnect, as opposed to a client *emitting* an event of that name.

        python-socketio hands both to ``trigger_event``; the real ones come while the sid is pending
        (not yet, or no longer, connected), a client's event only while it is connected. Without this
        an agent emitting ``disconnect`` would be forgotten while still connected.
        """
        return event in ("connect", "disconnect") and not self.server.manager.is_connected(sid, self.namespace)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if self._is_lifecycle(event, args[0]):
            if event == "connect":
                return await self._connect(args[0], args[2] if len(args) > 2 else None)
            self.rt.forget_agent_sid(args[0])
            return None
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        principal = self.rt.agent_principal(sid)
        if principal is None or self.rt.agent_handler is None:
            return {"ok": False, "error": {"code": "unauthorized", "message": "not authenticated", "details": []}}
        if (bad := _malformed(event, data)) is not None:
            return malformed_ack(self.namespace, sid, bad)
        if event == ev.AGENT_PING:  # a liveness probe: answered here, never reaching the database
            return {"ok": True}
        # Known names only as labels: a client must not grow the metrics without bound.
        label = event if event in ev.AGENT_EVENT_MODELS else "unknown"
        self.rt.metrics.socket_events.labels(namespace="agent", event=label).inc()
        return await self.rt.agent_handler(principal, event, data)

    async def _connect(self, sid: str, auth: Any) -> bool:
        with refused_on_outage():
            async with self.rt.pool.acquire() as conn:
                principal = await self.rt.authenticator.resolve(conn, _token_from(auth))
        if principal is None or principal.kind != "agent" or principal.agent_id is None:
            raise socketio.exceptions.ConnectionRefusedError("an agent token is required")
        self.rt.remember_agent_sid(sid, principal)
        return True


class DashboardNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """``/dashboard``: browsers with an admin token; receive-only."""

    def __init__(self, realtime: "Realtime") -> None:
        super().__init__(ev.DASHBOARD_NAMESPACE)
        self.rt = realtime

    def _is_lifecycle(self, event: str, sid: Any) -> bool:
        """A real connect or disconnect, not a client emitting one (see ``AgentNamespace._is_lifecycle``)."""
        return event in ("connect", "disconnect") and not self.server.manager.is_connected(sid, self.namespace)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if self._is_lifecycle(event, args[0]):
            if event == "connect":
                with refused_on_outage():
                    async with self.rt.pool.acquire() as conn:
                        principal = await self.rt.authenticator.resolve(
                            conn, _token_from(args[2] if len(args) > 2 else None))
                if principal is None or principal.kind != "admin":
                    raise socketio.exceptions.ConnectionRefusedError("an admin token is required")
                self.rt.remember_dashboard(args[0], principal)
                return True
            self.rt.forget_dashboard(args[0])
            return None
        if (bad := _malformed(event, args[1] if len(args) > 1 else None)) is not None:
            return malformed_ack(self.namespace, args[0], bad)
        # Dashboards send no events of their own: every one is counted under a single label.
        self.rt.metrics.socket_events.labels(namespace="dashboard", event="unknown").inc()
        return {"ok": False, "error": {"code": "unknown_event", "message": f"unknown event {str(event)[:100]!r}",
                                       "details": []}}


class Realtime:
    def __init__(self, authenticator: Authenticator, metrics: Metrics, *,
                 progress_hz: float, grace_sec: float, ping_interval_sec: int = 10,
                 ping_timeout_sec: int = 10) -> None:
        self._pool: asyncpg.Pool | None = None
        self.authenticator = authenticator
        self.metrics = metrics
        self.grace_sec = grace_sec
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", cors_allowed_origins="*", serializer=TextPacket, json=OrJson, logger=False,
            engineio_logger=False,
            max_http_buffer_size=16 * 1024 * 1024, ping_interval=ping_interval_sec, ping_timeout=ping_timeout_sec,
        )
        self.sio.register_namespace(AgentNamespace(self))
        self.sio.register_namespace(DashboardNamespace(self))
        self.agent_handler: AgentEventHandler | None = None
        self.on_kick: Callable[[int], Awaitable[None]] | None = None
        self.on_fill: Callable[[], None] | None = None
        """Another node asks every node to fill (distribution was started again)."""
        self.on_revoked: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        """A token was revoked (by another node or the CLI): drop its sockets here."""
        self._agent_sids: dict[int, str] = {}
        self._sid_agents: dict[str, Principal] = {}
        self.dashboards: set[str] = set()
        self._dashboard_tokens: dict[str, int] = {}
        """sid -> the stored admin token it connected with (the environment's token is not in here)."""
        self._dirty_jobs: set[int] = set()
        self._dirty_devices: set[int] = set()
        self._status_for_bus: set[int] = set()
        self._interval = 1.0 / progress_hz
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.bus: Bus | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise socketio.exceptions.ConnectionRefusedError("server is starting")
        return self._pool

    # ------------------------------------------------------------------ presence

    def remember_agent_sid(self, sid: str, principal: Principal) -> None:
        assert principal.agent_id is not None
        self._agent_sids[principal.agent_id] = sid
        self._sid_agents[sid] = principal
        self.metrics.connected_agents.set(len(self._agent_sids))

    def forget_agent_sid(self, sid: str) -> None:
        principal = self._sid_agents.pop(sid, None)
        if principal is not None and self._agent_sids.get(principal.agent_id or -1) == sid:
            del self._agent_sids[principal.agent_id or -1]
        self.metrics.connected_agents.set(len(self._agent_sids))

    def agent_principal(self, sid: str) -> Principal | None:
        return self._sid_agents.get(sid)

    def has_agent(self, agent_id: int) -> bool:
        return agent_id in self._agent_sids

    def agent_sessions(self) -> list[tuple[str, Principal]]:
        return list(self._sid_agents.items())

    def remember_dashboard(self, sid: str, principal: Principal) -> None:
        self.dashboards.add(sid)
        if principal.admin_token_id is not None:
            self._dashboard_tokens[sid] = principal.admin_token_id

    def forget_dashboard(self, sid: str) -> None:
        self.dashboards.discard(sid)
        self._dashboard_tokens.pop(sid, None)

    def dashboard_sessions(self) -> list[tuple[str, int]]:
        """Dashboards signed in with a stored admin token, and that token's id."""
        return list(self._dashboard_tokens.items())

    async def drop_agent_sockets(self, sids: Iterable[str]) -> None:
        """Disconnect these agent sockets now (their token was revoked); no event of theirs is handled after."""
        for sid in list(sids):
            self.forget_agent_sid(sid)
            await self.sio.disconnect(sid, namespace=ev.AGENT_NAMESPACE)

    async def drop_dashboard_sockets(self, sids: Iterable[str]) -> None:
        for sid in list(sids):
            self.forget_dashboard(sid)
            await self.sio.disconnect(sid, namespace=ev.DASHBOARD_NAMESPACE)

    # ------------------------------------------------------------------ to agents

    async def to_agent(self, agent_id: int, event: str, data: dict[str, Any]) -> None:
        """Emit to an agent wherever it is connected (this node, or another through the bus)."""
        sid = self._agent_sids.get(agent_id)
        if sid is not None:
            await self.sio.emit(event, data, to=sid, namespace=ev.AGENT_NAMESPACE)
        elif self.bus is not None:
            try:
                await self.bus.publish({"kind": "agent", "agent_id": agent_id, "event": event, "data": data})
            except ValueError:
                await self.kick(agent_id)

    async def send_orders(self, agent_id: int, orders: list[dict[str, Any]], on_ack: AckCallback) -> bool:
        """One ``job:assign`` with all of an agent's new assignments; ``on_ack`` marks them delivered."""
        sid = self._agent_sids.get(agent_id)
        if sid is None:
            await self.kick(agent_id)
            return False

        def callback(*args: Any) -> None:
            data = args[0] if args else None
            asyncio.get_running_loop().create_task(on_ack(agent_id, data))

        await self.sio.emit(ev.JOB_ASSIGN, {"assignments": orders}, to=sid, namespace=ev.AGENT_NAMESPACE,
                            callback=callback)
        return True

    async def kick(self, agent_id: int) -> None:
        """Ask the node holding this agent to re-send its pending assignments from the database."""
        if self.bus is not None:
            await self.bus.publish({"kind": "kick", "agent_id": agent_id})

    async def on_bus_message(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "agent":
            agent_id = int(message["agent_id"])
            sid = self._agent_sids.get(agent_id)
            if sid is not None:
                await self.sio.emit(str(message["event"]), message.get("data"), to=sid,
                                    namespace=ev.AGENT_NAMESPACE)
        elif kind == "kick":
            agent_id = int(message["agent_id"])
            if self.has_agent(agent_id) and self.on_kick is not None:
                await self.on_kick(agent_id)
        elif kind == "dirty":  # another node's changes: show them here, never publish them again
            await self._emit_job_updates([int(j) for j in message.get("status", [])], ev.JOB_STATUS_UPDATE)
            await self._emit_local([int(j) for j in message.get("jobs", [])],
                                   [int(d) for d in message.get("devices", [])])
        elif kind == "dashboard":
            await self._emit_dashboards(str(message["event"]), message.get("data"))
        elif kind == "fill" and self.on_fill is not None:
            self.on_fill()
        elif kind == "revoked" and self.on_revoked is not None:
            await self.on_revoked(message)

    # ------------------------------------------------------------------ to dashboards

    def jobs_changed(self, job_ids: Iterable[int]) -> None:
        self._dirty_jobs.update(job_ids)
        self._wake.set()

    def devices_changed(self, device_ids: Iterable[int]) -> None:
        self._dirty_devices.update(device_ids)
        self._wake.set()

    async def job_status_changed(self, job_ids: Iterable[int]) -> None:
        """Status changes (paused, completed, ...) go out at once to this node's dashboards, not throttled;
        other nodes hear of them with the next flush (one message for all the changes until then)."""
        ids = sorted(set(job_ids))
        if not ids:
            return
        await self._emit_job_updates(ids, ev.JOB_STATUS_UPDATE)
        if self.bus is not None:
            self._status_for_bus.update(ids)
            self._wake.set()

    async def fill_everywhere(self) -> None:
        """Ask every other node to run a fill (this node fills on its own)."""
        if self.bus is not None:
            await self.bus.publish({"kind": "fill"})

    async def broadcast(self, event: str, data: dict[str, Any]) -> None:
        """An event for every dashboard on every node."""
        await self._emit_dashboards(event, data)
        if self.bus is not None:
            try:
                await self.bus.publish({"kind": "dashboard", "event": event, "data": data})
            except ValueError:
                log.warning("dashboard broadcast too large for other nodes", extra={"event": event})

    async def _emit_dashboards(self, event: str, data: Any) -> None:
        if self.dashboards:
            await self.sio.emit(event, data, namespace=ev.DASHBOARD_NAMESPACE)

    async def _emit_job_updates(self, job_ids: list[int], event: str) -> None:
        if not self.dashboards or not job_ids:
            return
        async with self.pool.acquire() as conn:
            rows = await jobs_store.get_many(conn, job_ids)
            counts = await jobs_store.assignment_counts(conn, job_ids)
        for row in rows:
            c = counts.get(row["id"], {})
            payload = ev.JobStatusUpdate(
                job_id=row["id"], title=row["title"], status=row["status"], priority=row["priority"],
                target_count=row["target_count"], assigned_count=row["assigned_count"],
                completed_count=row["completed_count"], failed_count=row["failed_count"],
                running_count=c.get("running", 0), paused_count=c.get("paused", 0), updated_at=row["updated_at"],
                blocked_reason=row["blocked_reason"], max_parallel=row["max_parallel"],
            ).model_dump(mode="json")
            await self.sio.emit(event, payload, namespace=ev.DASHBOARD_NAMESPACE)

    async def start(self, pool: asyncpg.Pool, bus: Bus | None) -> None:
        self._pool = pool
        self.bus = bus
        if bus is not None:
            bus.on_message(self.on_bus_message)
        self._flusher = asyncio.create_task(self._flush_loop(), name="dashboard-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except DATABASE_ERRORS as exc:  # an outage must not end the loop for good
                log.warning("dashboard flush failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self._interval)

    async def flush(self) -> None:
        jobs, self._dirty_jobs = sorted(self._dirty_jobs), set()
        devices, self._dirty_devices = sorted(self._dirty_devices), set()
        status, self._status_for_bus = sorted(self._status_for_bus), set()
        if self.bus is not None and status:
            await self.bus.publish({"kind": "dirty", "status": status[:500]})
        if self.bus is not None and (jobs or devices):
            await self.bus.publish({"kind": "dirty", "jobs": jobs[:200], "devices": devices[:500]})
        await self._emit_local(jobs, devices)

    async def _emit_local(self, jobs: list[int], devices: list[int]) -> None:
        if not self.dashboards:
            return
        await self._emit_job_updates(jobs, ev.JOB_PROGRESS)
        if devices:
            async with self.pool.acquire() as conn:
                rows = await devices_store.get_many(conn, devices)
                states = await devices_store.counts_by_state(conn)
                agents = await agents_store.counts_by_status(conn, self.grace_sec)
            payload = ev.DeviceUpdateBroadcast(devices=[Device.model_validate(dict(r)) for r in rows])
            await self._emit_dashboards(ev.DASHBOARD_DEVICE_UPDATE, payload.model_dump(mode="json"))
            stats = ev.FleetStats(
                agents_online=agents["connected"],
                connected_devices=states["idle"] + states["busy"] + states["paused"] + states["unhealthy"],
                devices=states,
            )
            await self._emit_dashboards(ev.FLEET_STATS, stats.model_dump(mode="json"))
