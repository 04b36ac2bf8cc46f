"""The agent's link to the server: a Socket.IO connection when it can, polling when it cannot.

Events leave the durable outbox in order and are deleted only once acknowledged. While the socket
is down the agent polls ``GET /api/agent/assignments`` every few seconds (with jitter) and posts its
outbox to ``POST /api/agent/events``; as soon as the socket is back, polling stops.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import aiohttp
import socketio
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from phonefleet.agent.outbox import Outbox, OutboxItem
from phonefleet.protocol import events as ev
from phonefleet.protocol.wire import OrJson, TextPacket

log = logging.getLogger(__name__)

Mode = Literal["connecting", "socket", "polling", "stopped"]
MERGEABLE = {ev.ASSIGNMENT_STARTED: "items", ev.ASSIGNMENT_PROGRESS: "items", ev.ASSIGNMENT_FINISHED: "results"}
"""Consecutive events of these kinds travel as one message (their lists are joined)."""


def batch(items: list[OutboxItem], limit: int = 2000) -> list[tuple[str, dict[str, Any], list[int]]]:
    """Group outbox items into few events, keeping what order matters.

    Between two events that do not merge (a pause, a device update, ...) the window's reports go out
    as one ``started``, one ``progress`` and one ``finished`` event, in that order, so an assignment's
    reports keep their order. Only the latest progress of an assignment is sent, and none for one that
    finishes in the same window: the ids of the superseded items ride on the ``finished`` event and
    leave the outbox with its ack. (At the end of a job every phone writes progress then finished;
    merging only neighbours cost one round trip per phone.)
    """
    out: list[tuple[str, dict[str, Any], list[int]]] = []
    window: dict[str, tuple[list[dict[str, Any]], list[int]]] = {}

    def flush() -> None:
        finished = window.get(ev.ASSIGNMENT_FINISHED)
        done = {r["assignment_id"] for r in finished[0]} if finished else set()
        superseded: list[int] = []
        for event in (ev.ASSIGNMENT_STARTED, ev.ASSIGNMENT_PROGRESS, ev.ASSIGNMENT_FINISHED):
            entry = window.get(event)
            if entry is None:
                continue
            reports, ids = entry
            if event == ev.ASSIGNMENT_PROGRESS:
                latest = {r["assignment_id"]: r for r in reports}
                reports = [r for aid, r in latest.items() if aid not in done]
                if not reports:
                    superseded.extend(ids)
                    continue
            if event == ev.ASSIGNMENT_FINISHED:
                ids = ids + superseded
            out.append((event, {MERGEABLE[event]: reports}, ids))
        window.clear()

    for item in items:
        key = MERGEABLE.get(item.event)
        if key is None:
            flush()
            out.append((item.event, item.data, [item.id]))
            continue
        entry = window.get(item.event)
        if entry is not None and len(entry[0]) + len(item.data[key]) > limit:
            flush()
            entry = None
        if entry is None:
            entry = window[item.event] = ([], [])
        entry[0].extend(item.data[key])
        entry[1].append(item.id)
    flush()
    return out


def _still_cancelled() -> None:
    """Re-raise a cancel that a library turned into an ordinary error (aiohttp can), so stop() never hangs."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Handlers:
    """What the link calls back into (the agent implements these)."""

    def hello(self) -> dict[str, Any]:
        raise NotImplementedError

    async def on_orders(self, orders: list[dict[str, Any]], *, full: bool) -> None:
        raise NotImplementedError

    async def on_control(self, event: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    async def on_pause_state(self, paused: bool, serials: list[str], job_ids: list[int]) -> None:
        raise NotImplementedError

    def running_ids(self) -> list[int]:
        raise NotImplementedError

    def on_device_ack(self, sent: dict[str, Any], ack_data: dict[str, Any]) -> None:
        """The server's answer to a hello or device update that reported ``sent["devices"]``."""
        raise NotImplementedError


class ServerLink:
    def __init__(self, server_url: str, token: str, outbox: Outbox, handlers: Handlers, *, artifacts_dir: Path,
                 poll_sec: float = 3.0, heartbeat_sec: float = 5.0, reconnect_max_sec: float = 3.0) -> None:
        self.url = server_url.rstrip("/")
        self.artifacts_dir = artifacts_dir
        self.token = token
        self.outbox = outbox
        self.handlers = handlers
        self.poll_sec = poll_sec
        self.heartbeat_sec = heartbeat_sec
        self.reconnect_max_sec = reconnect_max_sec
        self.mode: Mode = "connecting"
        self.polls = 0
        self.sio = socketio.AsyncClient(reconnection=False, request_timeout=30, serializer=TextPacket, json=OrJson)
        self._session: aiohttp.ClientSession | None = None
        self._pending = asyncio.Event()
        self._socket_down = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._hello_needed = True
        self.on_mode_change: Callable[[Mode], Awaitable[None]] | None = None
        self._register()

    # ------------------------------------------------------------------ server -> agent

    def _register(self) -> None:
        ns = ev.AGENT_NAMESPACE

        async def on_assign(data: dict[str, Any]) -> dict[str, Any]:
            orders = list(data.get("assignments", []))
            await self.handlers.on_orders(orders, full=False)
            return {"received": [int(o["assignment_id"]) for o in orders]}

        self.sio.on(ev.JOB_ASSIGN, on_assign, namespace=ns)
        for name in (ev.JOB_PAUSED, ev.JOB_RESUMED, ev.JOB_CANCELLED, ev.DEVICE_PAUSE, ev.DEVICE_RESUME):
            self.sio.on(name, self._control_handler(name), namespace=ns)
        self.sio.on("disconnect", self._on_disconnect, namespace=ns)

    def _control_handler(self, name: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def handler(data: dict[str, Any]) -> None:
            await self.handlers.on_control(name, data)

        return handler

    async def _on_disconnect(self, *_: Any) -> None:
        self._socket_down.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"},
                                              timeout=aiohttp.ClientTimeout(total=30))
        self._tasks = [asyncio.create_task(self._run(), name="link")]

    async def stop(self) -> None:
        self.mode = "stopped"
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.sio.connected:
            await self.sio.disconnect()
        if self._session is not None:
            await self._session.close()

    def notify(self) -> None:
        """New events are in the outbox."""
        self._pending.set()

    def require_hello(self) -> None:
        self._hello_needed = True
        self._pending.set()

    async def _set_mode(self, mode: Mode) -> None:
        if mode != self.mode:
            log.info("link mode", extra={"mode": mode})
            self.mode = mode
            if self.on_mode_change is not None:
                await self.on_mode_change(mode)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self.sio.connect(self.url, namespaces=[ev.AGENT_NAMESPACE], auth={"token": self.token},
                                       transports=["websocket"], wait_timeout=5)
            except (TimeoutError, socketio.exceptions.ConnectionError, OSError) as exc:
                _still_cancelled()
                log.info("socket unavailable; polling", extra={"error": str(exc)})
                await self._poll_for(backoff)
                backoff = min(backoff * 2, self.reconnect_max_sec)
                continue
            backoff = 0.5
            self._socket_down.clear()
            await self._set_mode("socket")
            try:
                await self._socket_session()
            except (TimeoutError, socketio.exceptions.SocketIOError, OSError) as exc:
                _still_cancelled()
                log.info("socket lost", extra={"error": str(exc)})
            with contextlib.suppress(Exception):
                await self.sio.disconnect()
            self._hello_needed = True

    # ------------------------------------------------------------------ socket mode

    async def _socket_session(self) -> None:
        await self._hello_socket()
        sender = asyncio.create_task(self._send_loop())
        beat = asyncio.create_task(self._heartbeat_loop())
        try:
            await self._socket_down.wait()
        finally:
            for task in (sender, beat):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack = await self.sio.call(event, data, namespace=ev.AGENT_NAMESPACE, timeout=30)
        if not isinstance(ack, dict):
            raise socketio.exceptions.SocketIOError(f"bad ack for {event}")
        return ack

    async def _hello_socket(self) -> None:
        hello = self.handlers.hello()
        ack = await self._call(ev.AGENT_HELLO, hello)
        if not ack.get("ok"):
            raise socketio.exceptions.SocketIOError(f"hello refused: {ack.get('error')}")
        self.handlers.on_device_ack(hello, ack["data"])
        await self._apply_hello(ack["data"])
        self._hello_needed = False

    async def _apply_hello(self, data: dict[str, Any]) -> None:
        self.heartbeat_sec = float(data.get("heartbeat_sec", self.heartbeat_sec))
        self.poll_sec = float(data.get("poll_sec", self.poll_sec))
        await self.handlers.on_orders(list(data.get("assignments", [])), full=True)
        await self.handlers.on_pause_state(bool(data.get("paused")), list(data.get("paused_serials", [])),
                                           list(data.get("paused_job_ids", [])))

    async def _send_loop(self) -> None:
        while True:
            if self._hello_needed:
                await self._hello_socket()
            self._pending.clear()  # before reading, so an event put meanwhile still wakes us
            items = await self._upload_artifacts(self.outbox.peek())
            if not items:
                if self.outbox.peek(1):  # only files the server could not take yet
                    await asyncio.sleep(1.0)
                else:
                    await self._pending.wait()
                continue
            for event, data, ids in batch(items):
                if self._settle(event, data, await self._call(event, data), ids):
                    await asyncio.sleep(1.0)  # the server could not take it now; try again shortly
                    break

    def _settle(self, event: str, data: dict[str, Any], ack: dict[str, Any], ids: list[int]) -> bool:
        """Acked events leave the outbox; so do events the server rejects as invalid (they never will pass).
        Anything the server could not take now (retryable) stays for the next attempt."""
        if ack.get("ok") and event in (ev.AGENT_HELLO, ev.DEVICE_UPDATE):
            self.handlers.on_device_ack(data, ack.get("data") or {})
        error = ack.get("error") or {}
        keep = bool(error.get("retryable")) or error.get("code") in ("unavailable", "unauthorized")
        if ack.get("ok") or not keep:
            if not ack.get("ok"):
                log.warning("server rejected an event", extra={"event": event, "error": error})
            self.outbox.ack(ids)
            return False
        return True

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_sec)
            ack = await self._call(ev.AGENT_HEARTBEAT, {"running": self.handlers.running_ids()})
            if (ack.get("data") or {}).get("hello_required"):
                self.require_hello()

    # ------------------------------------------------------------------ polling mode

    async def _poll_for(self, duration: float) -> None:
        """Poll (and flush the outbox over HTTP) until ``duration`` has passed, then try the socket again."""
        await self._set_mode("polling")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        while True:
            try:
                await self._poll_once()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                _still_cancelled()
                log.info("poll failed", extra={"error": str(exc)})
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, self.poll_sec * random.uniform(0.8, 1.2)))

    async def _http(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        assert self._session is not None
        async for attempt in AsyncRetrying(retry=retry_if_exception_type((aiohttp.ClientError, OSError)),
                                           stop=stop_after_attempt(3), wait=wait_random_exponential(0.2, 2),
                                           reraise=True):
            with attempt:
                async with self._session.request(method, self.url + path, json=body) as r:
                    if r.status >= 500:
                        raise aiohttp.ClientResponseError(r.request_info, r.history, status=r.status)
                    data: dict[str, Any] = await r.json()
                    if r.status >= 400:
                        raise PermissionError(f"{path}: {r.status} {data}")
                    return data
        raise AssertionError("unreachable")

    async def _upload_artifacts(self, items: list[OutboxItem]) -> list[OutboxItem]:
        """Send the files among these outbox items over HTTP; returns the other items."""
        rest = [i for i in items if i.event != ev.ARTIFACT_UPLOAD]
        for item in items:
            if item.event != ev.ARTIFACT_UPLOAD:
                continue
            path = self.artifacts_dir / str(item.data["name"])
            if not path.exists():
                self.outbox.ack([item.id])
                continue
            assert self._session is not None
            url = f"{self.url}/api/agent/artifacts/{int(item.data['assignment_id'])}/{path.name}"
            try:
                async with self._session.put(url, data=path.read_bytes()) as r:
                    if r.status >= 500:
                        continue  # the server will be back; the file stays in the outbox
                    if r.status >= 400:
                        log.warning("artifact refused", extra={"status": r.status, "body": await r.text()})
            except (aiohttp.ClientError, OSError, TimeoutError):
                _still_cancelled()
                continue
            self.outbox.ack([item.id])
        return rest

    async def _post_events(self, events: list[tuple[str, dict[str, Any], list[int]]]) -> None:
        body = {"events": [{"event": e, "data": d} for e, d, _ in events]}
        answer = await self._http("POST", "/api/agent/events", body)
        for (event, data, ids), ack in zip(events, answer["results"], strict=True):
            self._settle(event, data, ack, ids)

    async def _poll_once(self) -> None:
        if self._hello_needed:
            await self._post_events([(ev.AGENT_HELLO, self.handlers.hello(), [])])
            self._hello_needed = False
        for start in range(0, 10):  # flush the outbox in bounded chunks
            del start
            groups = batch(await self._upload_artifacts(self.outbox.peek()))
            if not groups:
                break
            await self._post_events(groups[:50])
        poll = await self._http("GET", "/api/agent/assignments")
        self.polls += 1
        self.poll_sec = float(poll.get("poll_sec", self.poll_sec))
        if poll.get("hello_required"):
            self._hello_needed = True
        await self.handlers.on_orders(list(poll.get("assignments", [])), full=True)
        await self.handlers.on_pause_state(bool(poll.get("paused")), list(poll.get("paused_serials", [])),
                                           list(poll.get("paused_job_ids", [])))
