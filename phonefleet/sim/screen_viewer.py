"""A ``/dashboard`` client that watches and drives phones' screens as the browser does (tests, benchmarks)."""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol import screen as sc
from phonefleet.protocol.wire import OrJson, TextPacket


@dataclass(frozen=True)
class ReceivedFrame:
    meta: dict[str, Any]
    data: bytes
    at: float
    """``time.monotonic()`` when it arrived."""


class ScreenViewer:
    def __init__(self, base_url: str, token: str, *, ack_delay_sec: float = 0.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.ack_delay_sec = ack_delay_sec
        """A slow viewer: each frame is acknowledged this long after it arrived."""
        self.sio = socketio.AsyncClient(reconnection=False, serializer=TextPacket, json=OrJson)
        self.frames: list[ReceivedFrame] = []
        self.sessions: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.sio.on(sc.SCREEN_FRAME, self._on_frame, namespace=ev.DASHBOARD_NAMESPACE)
        self.sio.on(sc.SCREEN_SESSION, self._on_session, namespace=ev.DASHBOARD_NAMESPACE)

    async def _on_frame(self, meta: dict[str, Any], data: bytes) -> bool:
        async with self._changed:
            self.frames.append(ReceivedFrame(meta, data, time.monotonic()))
            self._changed.notify_all()
        if self.ack_delay_sec:
            await asyncio.sleep(self.ack_delay_sec)
        return True

    async def _on_session(self, data: dict[str, Any]) -> None:
        async with self._changed:
            self.sessions.append(data)
            self._changed.notify_all()

    async def connect(self) -> None:
        await self.sio.connect(self.base_url, namespaces=[ev.DASHBOARD_NAMESPACE], auth={"token": self.token},
                               transports=["websocket"], wait_timeout=10)

    async def disconnect(self) -> None:
        await self.sio.disconnect()

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.sio.call(event, data, namespace=ev.DASHBOARD_NAMESPACE, timeout=30)
        return answer

    async def watch(self, device_id: int, max_width: int = 480) -> dict[str, Any]:
        return await self.call(sc.SCREEN_WATCH, {"device_id": device_id, "max_width": max_width})

    async def unwatch(self, device_id: int) -> dict[str, Any]:
        return await self.call(sc.SCREEN_UNWATCH, {"device_id": device_id})

    async def control(self, device_id: int, take: bool) -> dict[str, Any]:
        return await self.call(sc.SCREEN_CONTROL, {"device_id": device_id, "take": take})

    async def input(self, device_id: int, command: dict[str, Any]) -> dict[str, Any]:
        return await self.call(sc.SCREEN_INPUT, {"device_id": device_id, "input": command})

    def of(self, device_id: int) -> list[ReceivedFrame]:
        return [f for f in self.frames if f.meta.get("device_id") == device_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
