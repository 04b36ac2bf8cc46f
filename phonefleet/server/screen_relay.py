"""The live screen on the server: who watches which phone, the frames from agents to browsers, and remote control.

The first viewer of a phone makes its agent start streaming (``screen:start``), the last one leaving stops it.
Frames arrive as binary attachments, the newest is kept per phone, and each viewer gets them one at a time:
a frame goes to a viewer only once it acknowledged the one before, and what came meanwhile is replaced by what
comes next (latest frame wins), so a slow browser sees fewer frames, never a queue that grows.

Control sessions (one controller per phone, which pauses it out of distribution) are ``screen_control``'s;
the relay is the way in for both, and the link control uses to reach phones and viewers (``ScreenLink``).

Memory of this node only: a phone is watched and controlled through the node its agent is connected to (another
node answers 409); a server that stops gives back the control pauses it held when it starts again.
"""

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import socketio
from pydantic import BaseModel, ValidationError

from phonefleet.protocol import events as ev
from phonefleet.protocol import screen as sc
from phonefleet.server.auth import Principal
from phonefleet.server.distributor import Distributor
from phonefleet.server.errors import Invalid, NotFound, ServiceError
from phonefleet.server.presence import Presence
from phonefleet.server.realtime import Realtime
from phonefleet.server.scope import check_visible
from phonefleet.server.screen_control import ScreenControl, require_control
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import owners
from phonefleet.server.store.records import DeviceRecord

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

MAX_FRAME_BYTES = 8 * 1024 * 1024
ACK_LOST_SEC = 5.0
"""A viewer that has not acknowledged a frame for this long is sent the next one anyway (its ack was lost)."""
AGENT_CALL_SEC = 20.0
ACK_SEC = 5.0
"""An agent acknowledges a snapshot request at once (the picture follows as a frame)."""
FRESH_SEC = 1.0
"""A streamed frame this young answers ``GET /api/devices/{id}/screen`` without asking the phone."""


class PhoneUnavailable(ServiceError):
    status = 409
    code = "phone_unavailable"


@dataclass(eq=False)
class _Viewer:
    sid: str
    max_width: int
    in_flight_since: float | None = None
    pending: tuple[dict[str, Any], bytes] | None = None


@dataclass(frozen=True)
class _Frame:
    meta: dict[str, Any]
    data: bytes
    at: float


class ScreenRelay:
    def __init__(self, pool: asyncpg.Pool, sio: socketio.AsyncServer, presence: Presence, realtime: Realtime,
                 distributor: Distributor, *, idle_sec: float, interval_ms: int) -> None:
        self.pool = pool
        self.sio = sio
        self.presence = presence
        self.realtime = realtime
        self.interval_ms = interval_ms
        self.control = ScreenControl(pool, realtime, distributor, self, idle_sec=idle_sec)
        self.watchers: dict[int, dict[str, _Viewer]] = {}
        self.streaming: dict[int, tuple[int, str, int]] = {}
        """device id -> (agent id, serial, max width) of the streams this node asked for."""
        self.latest: dict[int, _Frame] = {}
        self._devices: dict[tuple[int, str], int] = {}
        self._snapshots: dict[int, asyncio.Future[_Frame]] = {}
        self._ids = itertools.count(1)
        self.frames_in = 0
        self.frames_out = 0

    async def start(self) -> None:
        await self.control.start()

    async def stop(self) -> None:
        await self.control.stop()

    # ------------------------------------------------------------------ dashboard events

    async def on_dashboard(self, sid: str, principal: Principal, event: str, data: Any) -> dict[str, Any]:
        """``screen:watch|unwatch|control|input`` from a browser; always an ack, never raises."""
        try:
            if event == sc.SCREEN_WATCH:
                watch = _parse(sc.WatchRequest, data)
                return _ok(await self.watch(sid, watch.device_id, watch.max_width, principal))
            if event == sc.SCREEN_UNWATCH:  # of a phone not watched (any other team's): nothing to do
                await self.unwatch(sid, _parse(sc.WatchRequest, data).device_id)
                return {"ok": True}
            if event == sc.SCREEN_CONTROL:
                request = _parse(sc.ControlRequest, data)
                if request.take:
                    require_control(principal)  # the role before the phone, as a route's level before its handler
                await self.device(request.device_id, seen_by=principal)
                if request.take:
                    return _ok(await self.take(request.device_id, principal, owner=sid))
                await self.release(request.device_id, "released", owner=sid)
                return _ok(self.session(request.device_id, sid))
            request_input = _parse(sc.DashboardInput, data)
            require_control(principal)
            await self.device(request_input.device_id, seen_by=principal)
            await self.input(request_input.device_id, request_input.input, principal, owner=sid, implicit=False)
            return {"ok": True}
        except ServiceError as exc:
            return {"ok": False, "error": exc.body()["error"]}
        except asyncpg.PostgresError as exc:
            log.warning("screen event failed", extra={"event": event, "error": type(exc).__name__})
            return {"ok": False, "error": {"code": "unavailable", "message": "try again", "details": []}}

    async def dashboard_gone(self, sid: str) -> None:
        """A browser's socket closed: it watches nothing more, and what it controlled is given back."""
        for device_id in [d for d, viewers in self.watchers.items() if sid in viewers]:
            await self.unwatch(sid, device_id)
        await self.control.owner_gone(sid, "the page closed")

    # ------------------------------------------------------------------ watching

    async def device(self, device_id: int, *, seen_by: Principal | None = None) -> DeviceRecord:
        """The phone; a 404 when there is none, or when ``seen_by`` may not see its team (the very answer of an
        unknown id, as REST gives: ``scope.check_visible``)."""
        if seen_by is not None:
            await check_visible(self.pool, seen_by, "device", device_id)
        async with self.pool.acquire() as conn:
            device = await devices_store.get(conn, device_id)
        if device is None:
            raise NotFound(f"device {device_id} not found")
        return device

    def reachable(self, device: DeviceRecord) -> None:
        if device.state == "offline":
            raise PhoneUnavailable(f"phone {device.serial} is offline")
        if self.presence.agent_sid(device.agent_id) is None:
            raise PhoneUnavailable(f"the agent of phone {device.serial} is not connected to this server node")

    async def watch(self, sid: str, device_id: int, max_width: int, principal: Principal) -> sc.ScreenSession:
        device = await self.device(device_id, seen_by=principal)
        self.reachable(device)
        self._devices[(device.agent_id, device.serial)] = device_id
        viewers = self.watchers.setdefault(device_id, {})
        viewers[sid] = _Viewer(sid, max_width)
        await self._ensure_stream(device_id, device.agent_id, device.serial)
        frame = self.latest.get(device_id)
        if frame is not None:
            await self._offer(device_id, viewers[sid], frame)
        await self.announce(device_id)
        return self.session(device_id, sid)

    async def unwatch(self, sid: str, device_id: int) -> None:
        viewers = self.watchers.get(device_id)
        if viewers is None or viewers.pop(sid, None) is None:
            return
        if not viewers:
            del self.watchers[device_id]
            await self._stop_stream(device_id)
        else:
            stream = self.streaming.get(device_id)
            if stream is not None:
                await self._ensure_stream(device_id, stream[0], stream[1])
        await self.announce(device_id)

    def _stream_width(self, device_id: int) -> int:
        return max((v.max_width for v in self.watchers.get(device_id, {}).values()), default=480)

    async def _ensure_stream(self, device_id: int, agent_id: int, serial: str) -> None:
        """Ask the agent to stream (again, when the widest viewer changed)."""
        width = self._stream_width(device_id)
        if self.streaming.get(device_id) == (agent_id, serial, width):
            return
        self.streaming[device_id] = (agent_id, serial, width)
        start = sc.StreamStart(serial=serial, max_width=width, interval_ms=self.interval_ms)
        await self.realtime.to_local_agent(agent_id, sc.SCREEN_START, start.model_dump())

    async def _stop_stream(self, device_id: int) -> None:
        stream = self.streaming.pop(device_id, None)
        if stream is not None:
            await self.realtime.to_local_agent(stream[0], sc.SCREEN_STOP,
                                               sc.StreamStop(serial=stream[1]).model_dump())

    async def agent_greeted(self, agent_id: int) -> None:
        """An agent (re)connected: the streams it had stop with its old socket, so those still watched start
        again."""
        for device_id, (stream_agent, serial, _width) in list(self.streaming.items()):
            if stream_agent == agent_id:
                del self.streaming[device_id]
                await self._ensure_stream(device_id, agent_id, serial)

    # ------------------------------------------------------------------ frames

    async def on_frame(self, agent: Principal, meta_data: Any, data: Any) -> dict[str, Any]:
        """A ``screen:frame`` from an agent: kept as the phone's newest, offered to its viewers."""
        assert agent.agent_id is not None
        try:
            meta = sc.FrameMeta.model_validate(meta_data)
        except ValidationError as exc:
            return {"ok": False, "error": Invalid.from_validation(exc).body()["error"]}
        if not isinstance(data, bytes) or not data or len(data) > MAX_FRAME_BYTES:
            return {"ok": False, "error": {"code": "validation_error", "message": "a frame's bytes are required "
                                           f"(at most {MAX_FRAME_BYTES})", "details": [{"field": "data"}]}}
        device_id = self._devices.get((agent.agent_id, meta.serial))
        if device_id is None:
            async with self.pool.acquire() as conn:
                ids = await devices_store.ids_of_agent(conn, agent.agent_id, meta.serial)
            if not ids:
                return {"ok": False, "error": {"code": "not_found", "message": "no such phone", "details": []}}
            device_id = self._devices[(agent.agent_id, meta.serial)] = ids[0]
        meta.device_id = device_id
        frame = _Frame(meta.model_dump(mode="json", exclude_none=True), data, time.monotonic())
        self.frames_in += 1
        if meta.snapshot is not None:
            waiter = self._snapshots.pop(meta.snapshot, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
            return {"ok": True}
        viewers = self.watchers.get(device_id)
        if not viewers:
            return {"ok": False, "error": {"code": "not_watched", "message": "nobody watches this phone",
                                           "details": []}}
        self.latest[device_id] = frame
        for viewer in list(viewers.values()):
            await self._offer(device_id, viewer, frame)
        return {"ok": True}

    async def _offer(self, device_id: int, viewer: _Viewer, frame: _Frame) -> None:
        """Send now if the viewer acknowledged the last frame, else keep it as the one to send next."""
        now = time.monotonic()
        if viewer.in_flight_since is not None and now - viewer.in_flight_since < ACK_LOST_SEC:
            viewer.pending = (frame.meta, frame.data)
            return
        viewer.in_flight_since, viewer.pending = now, None

        def acked(*_: Any) -> None:
            viewer.in_flight_since = None
            if viewer.pending is not None and self.watchers.get(device_id, {}).get(viewer.sid) is viewer:
                meta, data = viewer.pending
                asyncio.get_running_loop().create_task(self._offer(device_id, viewer, _Frame(meta, data, now)))

        self.frames_out += 1
        await self.sio.emit(sc.SCREEN_FRAME, (frame.meta, frame.data), to=viewer.sid,
                            namespace=ev.DASHBOARD_NAMESPACE, callback=acked)

    async def frame(self, device_id: int, *, fmt: str, max_width: int | None) -> tuple[dict[str, Any], bytes]:
        """One current frame: the streamed one if fresh and fit, else one asked of the phone now."""
        device = await self.device(device_id)
        self.reachable(device)
        self._devices[(device.agent_id, device.serial)] = device_id
        latest = self.latest.get(device_id)
        if (fmt == "jpeg" and latest is not None and device_id in self.streaming
                and time.monotonic() - latest.at < FRESH_SEC
                and (max_width is None or max_width >= int(latest.meta["width"]))):
            return latest.meta, latest.data
        request_id = next(self._ids)
        waiter: asyncio.Future[_Frame] = asyncio.get_running_loop().create_future()
        self._snapshots[request_id] = waiter
        try:
            request = sc.SnapshotRequest(serial=device.serial, request_id=request_id, format="png" if fmt == "png"
                                         else "jpeg", max_width=max_width)
            await self.call_agent(device, sc.SCREEN_SNAPSHOT, request.model_dump(), timeout=ACK_SEC)
            try:
                got = await asyncio.wait_for(waiter, AGENT_CALL_SEC)
            except TimeoutError:
                raise PhoneUnavailable(f"phone {device.serial} sent no picture in time") from None
        finally:
            self._snapshots.pop(request_id, None)
        return got.meta, got.data

    # ------------------------------------------------------------------ control

    def session(self, device_id: int, owner: str | None = None) -> sc.ScreenSession:
        control = self.control.held(device_id)
        return sc.ScreenSession(device_id=device_id, watchers=len(self.watchers.get(device_id, {})),
                                controller=control.who if control else None,
                                controlled_since=control.since if control else None,
                                you_control=control is not None and owner is not None and control.owner == owner)

    async def announce(self, device_id: int) -> None:
        for sid in list(self.watchers.get(device_id, {})):
            await self.sio.emit(sc.SCREEN_SESSION, self.session(device_id, sid).model_dump(mode="json"), to=sid,
                                namespace=ev.DASHBOARD_NAMESPACE)

    async def take(self, device_id: int, principal: Principal, *, owner: str) -> sc.ScreenSession:
        await self.control.take(device_id, principal, owner=owner)
        return self.session(device_id, owner)

    async def release(self, device_id: int, reason: str, *, owner: str | None = None) -> bool:
        return await self.control.release(device_id, reason, owner=owner)

    async def input(self, device_id: int, command: sc.InputCommand, principal: Principal, *, owner: str,
                    implicit: bool) -> sc.InputAccepted:
        return await self.control.input(device_id, command, principal, owner=owner, implicit=implicit)

    async def call_agent(self, device: DeviceRecord, event: str, data: dict[str, Any], *, timeout: float) -> None:
        """An event the agent acknowledges; its refusal (or silence) is a 409 naming the phone."""
        sid = self.presence.agent_sid(device.agent_id)
        if sid is None:
            raise PhoneUnavailable(f"the agent of phone {device.serial} is not connected to this server node")
        try:
            answer = await self.sio.call(event, data, to=sid, namespace=ev.AGENT_NAMESPACE, timeout=timeout)
        except (TimeoutError, socketio.exceptions.SocketIOError):
            raise PhoneUnavailable(f"the agent of phone {device.serial} did not answer") from None
        if not (isinstance(answer, dict) and answer.get("ok") is True):
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            message = str(error.get("message", "no answer") if isinstance(error, dict) else error)[:300]
            raise PhoneUnavailable(f"phone {device.serial}: {message}")

    def watched(self) -> Iterable[int]:
        return list(self.watchers)

    async def drop_unseen(self) -> int:
        """Dashboards stop watching and controlling phones of a team they no longer see (the phone's agent moved
        to another team, or they left its team); returns how many watches and controls ended. Run with the token
        re-check (``Revocations.rechecks``)."""
        owned = {d: c.owner for d, c in self.control.controls.items() if not c.owner.startswith("rest:")}
        phones = sorted({*self.watchers, *owned})
        if not phones:
            return 0
        async with self.pool.acquire() as conn:
            teams = await owners.teams_of(conn, "device", phones)

        def unseen(sid: str, device_id: int) -> bool:
            principal = self.presence.dashboard_principal(sid)
            return principal is not None and device_id in teams and not principal.sees(teams[device_id])

        ended = 0
        for device_id, owner in owned.items():
            if unseen(owner, device_id):
                ended += await self.release(device_id, "the phone is no longer of the controller's teams",
                                            owner=owner)
        for device_id in phones:
            for sid in [s for s in self.watchers.get(device_id, {}) if unseen(s, device_id)]:
                await self.unwatch(sid, device_id)
                ended += 1
        return ended


def _parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise Invalid.from_validation(exc) from None


def _ok(session: sc.ScreenSession) -> dict[str, Any]:
    return {"ok": True, "data": session.model_dump(mode="json")}
