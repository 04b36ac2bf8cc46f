"""Phones over ADB: hot-plug through ``track-devices``, and a health probe on an interval.

``track_devices`` is a blocking generator in adbutils, so it runs in a thread and feeds the loop;
when the adb server dies or restarts, the tracker starts it again and re-reads the device list.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import adbutils

from phonefleet.agent.phone import AdbPhone
from phonefleet.protocol import events as ev

log = logging.getLogger(__name__)


@dataclass
class PhoneState:
    serial: str
    status: str  # adb's word: device, offline, unauthorized, ...
    model: str | None = None
    android_version: str | None = None
    battery: int | None = None
    screen_on: bool | None = None
    health_reason: str | None = None
    tags: list[str] = field(default_factory=list)

    @property
    def online(self) -> bool:
        return self.status not in ("offline", "gone")

    def healthy(self, min_battery: int) -> bool:
        return self.status == "device" and self.health_reason is None and (
            self.battery is None or self.battery >= min_battery)

    def report(self, min_battery: int) -> ev.DeviceReport:
        """What the server hears of this phone; what the phone said is cut to the protocol's bounds."""
        reason = self.health_reason
        if self.status == "unauthorized":
            reason = "adb unauthorized: accept the debugging prompt on the phone"
        elif self.battery is not None and self.battery < min_battery:
            reason = f"battery {self.battery}% below {min_battery}%"
        battery = None if self.battery is None else max(0, min(100, self.battery))
        return ev.DeviceReport(
            serial=self.serial, online=self.online, healthy=self.healthy(min_battery),
            health_reason=reason[:500] if reason and self.online else None, model=_cut(self.model, 200),
            android_version=_cut(self.android_version, 50), battery=battery, screen_on=self.screen_on,
            tags=self.tags)


def _cut(text: str | None, limit: int) -> str | None:
    return text[:limit] if text else text


Changed = Callable[[list[PhoneState], bool], Awaitable[None]]


class DeviceTracker:
    def __init__(self, client: adbutils.AdbClient, on_change: Changed, *, probe_sec: float = 30.0,
                 min_battery: int = 15) -> None:
        self.client = client
        self.on_change = on_change
        self.probe_sec = probe_sec
        self.min_battery = min_battery
        self.phones: dict[str, PhoneState] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = threading.Event()
        self.restarts = 0
        self.on_adb_restart: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        """Read the phones there are now, then follow hot-plug in the background."""
        await self._resync()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._track(), name="adb-track"),
                       loop.create_task(self._probe_loop(), name="adb-probe")]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def phone(self, serial: str) -> AdbPhone:
        return AdbPhone(self.client.device(serial))

    def reports(self) -> list[ev.DeviceReport]:
        return [p.report(self.min_battery) for p in self.phones.values()]

    async def _track(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        def put(item: tuple[str, str] | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under this thread: the agent is gone
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            try:
                for event in self.client.track_devices():
                    if self._stop.is_set():
                        return
                    put((event.serial, event.status if event.present else "gone"))
            except Exception as exc:  # the adb server died or restarted
                log.info("track-devices ended", extra={"error": str(exc)})
            put(None)

        backoff = 0.2
        first = True
        while True:
            if not first:  # start() has just read the list
                await self._resync()
            first = False
            thread = threading.Thread(target=pump, name="adb-track", daemon=True)
            thread.start()
            while (item := await queue.get()) is not None:
                backoff = 0.2
                await self._apply(*item)
            self.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            if self.on_adb_restart is not None:
                try:
                    await self.on_adb_restart()  # start the adb server again if it died
                except Exception as exc:
                    log.warning("adb server restart failed", extra={"error": str(exc)})

    async def _resync(self) -> None:
        """Read the whole list (after a start or restart of the adb server), marking missing phones gone."""
        try:
            listed = await asyncio.to_thread(self.client.list)
        except Exception as exc:
            log.info("adb list failed", extra={"error": str(exc)})
            return
        seen = {d.serial: d.state for d in listed}
        changed = []
        for serial, state in seen.items():
            changed.append(await self._set_status(serial, state))
        for serial, phone in self.phones.items():
            if serial not in seen and phone.status != "gone":
                phone.status = "gone"
                changed.append(phone)
        await self.on_change([c for c in changed if c is not None], True)

    async def _apply(self, serial: str, status: str) -> None:
        phone = await self._set_status(serial, status)
        if phone is not None:
            await self.on_change([phone], False)

    async def _set_status(self, serial: str, status: str) -> PhoneState | None:
        phone = self.phones.get(serial)
        if phone is None:
            phone = self.phones[serial] = PhoneState(serial, status)
        elif phone.status == status:
            return None
        phone.status = status
        if status == "device":
            await self._probe(phone)
        return phone

    async def _probe(self, phone: PhoneState) -> None:
        try:
            info = await self.phone(phone.serial).info()
        except Exception as exc:
            phone.health_reason = f"probe failed: {exc}"
            return
        phone.health_reason = None
        phone.model = info.model or phone.model
        phone.android_version = info.android_version or phone.android_version
        phone.battery = info.battery
        phone.screen_on = info.screen_on

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_sec)
            changed = []
            for phone in list(self.phones.values()):
                if phone.status == "device":
                    before = phone.report(self.min_battery)
                    await self._probe(phone)
                    if phone.report(self.min_battery) != before:
                        changed.append(phone)
            if changed:
                await self.on_change(changed, False)
