"""A simulated PC agent that speaks the protocol without touching ADB.

It is the test double of the contract, not of the server: tests and benchmarks run it against a
real server and database. Phones are names; a "run" ends when the test says so, or at once when
``auto_finish`` is set.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol import health
from phonefleet.protocol import screen as sc
from phonefleet.protocol.wire import OrJson, TextPacket


def assigned_orders(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``job:assign``'s orders, whole: its ``assignments``, and its ``slots`` joined with their ``jobs``."""
    jobs = {j["job_id"]: j for j in data.get("jobs", [])}
    return [*data.get("assignments", []), *({**jobs[s["job_id"]], **s} for s in data.get("slots", []))]


class SimAgent:
    def __init__(self, base_url: str, token: str, serials: list[str], *, auto_finish: bool = False,
                 auto_ack: bool = True, models: dict[str, str] | None = None, plans_once: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.plans_once = plans_once
        """Names the ``plans_once`` feature at connect, as the real agent does (False: an older agent)."""
        self.token = token
        self.serials = serials
        self.auto_finish = auto_finish
        self.auto_ack = auto_ack
        self.models = models or {}
        self.sio = socketio.AsyncClient(reconnection=False, request_timeout=30, serializer=TextPacket, json=OrJson)
        self.orders: dict[int, dict[str, Any]] = {}
        self.received: list[tuple[str, Any, float]] = []
        self.agent_id: int | None = None
        self.hello_ack: dict[str, Any] | None = None
        self._changed = asyncio.Condition()
        self._finish_buffer: list[dict[str, Any]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._register()

    # ------------------------------------------------------------------ wiring

    def _register(self) -> None:
        ns = ev.AGENT_NAMESPACE

        @self.sio.on(ev.JOB_ASSIGN, namespace=ns)  # type: ignore[untyped-decorator]
        async def on_assign(data: dict[str, Any]) -> dict[str, Any] | None:
            orders = assigned_orders(data)
            for o in orders:
                self.orders[o["assignment_id"]] = o
            await self._record(ev.JOB_ASSIGN, data)
            if self.auto_finish:
                self.finish_soon([o["assignment_id"] for o in orders])
            if not self.auto_ack:
                return None
            return {"received": [o["assignment_id"] for o in orders]}

        for name in (ev.JOB_PAUSED, ev.JOB_RESUMED, ev.JOB_CANCELLED, ev.DEVICE_PAUSE, ev.DEVICE_RESUME,
                     health.DEVICE_RECOVER, health.DEVICE_SELFTEST, health.FLEET_THRESHOLDS):
            self.sio.on(name, namespace=ns)(self._recorder(name))
        for name in (sc.SCREEN_START, sc.SCREEN_STOP, sc.SCREEN_SNAPSHOT, sc.SCREEN_INPUT):
            self.sio.on(name, namespace=ns)(self._no_screen(name))

    def _no_screen(self, name: str) -> Callable[[Any], Any]:
        """Simulated phones have no screen: recorded, and refused at once (never left unanswered)."""
        async def handler(data: Any) -> dict[str, Any]:
            await self._record(name, data)
            return {"ok": False, "error": {"code": "unsupported", "message": "a simulated phone has no screen",
                                           "details": []}}

        return handler

    def _recorder(self, name: str) -> Callable[[Any], Any]:
        async def handler(data: Any) -> None:
            await self._record(name, data)

        return handler

    async def _record(self, name: str, data: Any) -> None:
        async with self._changed:
            self.received.append((name, data, time.perf_counter()))
            self._changed.notify_all()

    # ------------------------------------------------------------------ lifecycle

    def devices(self, **overrides: Any) -> list[dict[str, Any]]:
        return [{"serial": s, "model": self.models.get(s, "Pixel 7"), "android_version": "14", "battery": 90,
                 **overrides} for s in self.serials]

    async def connect(self, *, hello: bool = True, paused: bool = False) -> dict[str, Any] | None:
        features = [ev.PLANS_ONCE] if self.plans_once else []
        await self.sio.connect(self.base_url, namespaces=[ev.AGENT_NAMESPACE],
                               auth={"token": self.token, "features": features}, transports=["websocket"],
                               wait_timeout=10)
        if hello:
            return await self.hello(paused=paused)
        return None

    async def hello(self, *, paused: bool = False, paused_serials: list[str] | None = None) -> dict[str, Any]:
        ack = await self.call(ev.AGENT_HELLO, {"version": "sim", "hostname": "sim", "devices": self.devices(),
                                               "paused": paused, "paused_serials": paused_serials or []})
        assert ack["ok"], ack
        self.hello_ack = ack["data"]
        self.agent_id = ack["data"]["agent_id"]
        for o in ack["data"]["assignments"]:
            self.orders[o["assignment_id"]] = o
        if self.auto_finish and ack["data"]["assignments"]:
            self.finish_soon([o["assignment_id"] for o in ack["data"]["assignments"]])
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._heartbeats(float(ack["data"]["heartbeat_sec"])))
        return ack

    async def _heartbeats(self, interval: float) -> None:
        """Keep leases alive like a real agent; re-register when the server had given up on us."""
        while self.sio.connected:
            await asyncio.sleep(interval)
            with contextlib.suppress(socketio.exceptions.SocketIOError, asyncio.TimeoutError):
                ack = await self.call(ev.AGENT_HEARTBEAT, {"running": []}, timeout=5)
                if ack.get("data", {}).get("hello_required"):
                    await self.hello()

    async def reconnect(self) -> dict[str, Any] | None:
        """A new session after the socket dropped, as a real agent starts one: the calls in flight on the dead
        socket are abandoned (the hello lists every open order again, and ``auto_finish`` finishes them)."""
        for task in (self._flush_task, self._heartbeat_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, socketio.exceptions.SocketIOError,
                                         asyncio.TimeoutError):
                    await task
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await self.sio.disconnect()
        return await self.connect()

    async def disconnect(self) -> None:
        for task in (self._flush_task, self._heartbeat_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.sio.disconnect()

    async def call(self, event: str, data: Any, timeout: float = 30) -> dict[str, Any]:
        result = await self.sio.call(event, data, namespace=ev.AGENT_NAMESPACE, timeout=timeout)
        assert isinstance(result, dict)
        return result

    # ------------------------------------------------------------------ reports

    async def start(self, ids: list[int]) -> dict[str, Any]:
        return await self.call(ev.ASSIGNMENT_STARTED, {"items": [{"assignment_id": i} for i in ids]})

    async def finish(self, ids: list[int], outcome: str = "completed", **extra: Any) -> dict[str, Any]:
        return await self.call(ev.ASSIGNMENT_FINISHED,
                               {"results": [{"assignment_id": i, "outcome": outcome, **extra} for i in ids]})

    def finish_soon(self, ids: list[int]) -> None:
        """Batch instant completions the way a real agent batches its outbox."""
        self._finish_buffer.extend({"assignment_id": i, "outcome": "completed"} for i in ids)
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_finished())

    async def _flush_finished(self) -> None:
        while self._finish_buffer:
            await asyncio.sleep(0)
            batch, self._finish_buffer = self._finish_buffer[:5000], self._finish_buffer[5000:]
            ack = await self.call(ev.ASSIGNMENT_FINISHED, {"results": batch})
            if not ack.get("ok"):
                self._finish_buffer.extend(batch)

    async def report(self, devices: list[dict[str, Any]], *, full: bool = False) -> dict[str, Any]:
        """A ``device:update``: these phones' facts as given (``devices()`` makes them)."""
        ack = await self.call(ev.DEVICE_UPDATE, {"devices": devices, "full": full})
        assert ack["ok"], ack
        return ack

    async def pause(self, scope: str, *, serial: str | None = None, job_id: int | None = None,
                    resume: bool = False) -> dict[str, Any]:
        return await self.call(ev.AGENT_RESUME if resume else ev.AGENT_PAUSE,
                               {"scope": scope, "serial": serial, "job_id": job_id})

    # ------------------------------------------------------------------ waiting

    def events(self, name: str) -> list[Any]:
        return [d for n, d, _ in self.received if n == name]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    def assigned_ids(self) -> set[int]:
        return set(self.orders)


class AgentHttp:
    """The polling fallback, as an agent without a socket uses it."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def poll(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/api/agent/assignments", headers=self.headers) as r:
            r.raise_for_status()
            data: dict[str, Any] = await r.json()
            return data

    async def send(self, events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        body = {"events": [{"event": e, "data": d} for e, d in events]}
        async with self.session.post(f"{self.base_url}/api/agent/events", json=body, headers=self.headers) as r:
            r.raise_for_status()
            data: dict[str, Any] = await r.json()
            results: list[dict[str, Any]] = data["results"]
            return results


class SimDashboard:
    """A ``/dashboard`` client that records what the server pushes."""

    EVENTS = (ev.JOB_STATUS_UPDATE, ev.JOB_PROGRESS, ev.DASHBOARD_DEVICE_UPDATE, ev.FLEET_STATS,
              ev.PAUSE_CHANGED, ev.AGENT_UPDATE, ev.JOB_DELETED, ev.SCHEDULER_UPDATE,
              ev.SCHEDULE_CHANGED, health.DEVICE_EVENT)

    def __init__(self, base_url: str, token: str | None, *, cookie: str | None = None) -> None:
        """``token``: a bearer token in the connect's auth; or ``cookie``: a session cookie, as a browser sends."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.cookie = cookie
        self.sio = socketio.AsyncClient(reconnection=False, serializer=TextPacket, json=OrJson)
        self.received: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()
        for name in self.EVENTS:
            self.sio.on(name, namespace=ev.DASHBOARD_NAMESPACE)(self._recorder(name))

    def _recorder(self, name: str) -> Callable[[Any], Any]:
        async def handler(data: Any) -> None:
            async with self._changed:
                self.received.append((name, data))
                self._changed.notify_all()

        return handler

    async def connect(self) -> None:
        await self.sio.connect(self.base_url, namespaces=[ev.DASHBOARD_NAMESPACE],
                               auth={"token": self.token} if self.token else None,
                               headers={"Cookie": self.cookie} if self.cookie else {},
                               transports=["websocket"], wait_timeout=10)

    async def disconnect(self) -> None:
        await self.sio.disconnect()

    def events(self, name: str) -> list[Any]:
        return [d for n, d in self.received if n == name]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
