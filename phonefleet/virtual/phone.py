"""A virtual phone: its state, and an adbd-speaking listener on loopback that can go offline and come back.

The real adb server ``adb connect``s it like any network device, so adbutils, the adb command line and
the agent drive it exactly as they drive USB phones. It reboots as a phone does (off the adb server, back,
booted a moment later) and acts out the faults it is given (``set_fault``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType

from phonefleet.virtual.adbd import MAX_PAYLOAD, AdbSession
from phonefleet.virtual.faults import FAULT_NAMES, Fault
from phonefleet.virtual.screen import ScreenRenderer
from phonefleet.virtual.services import ServiceRouter
from phonefleet.virtual.state import SDK_BY_RELEASE, ActionLog, InstalledPackage, PhoneState

DEFAULT_FEATURES = ("shell_v2", "stat_v2", "fixed_push_mkdir")
SHARED_RENDERER = ScreenRenderer()  # screenshots depend only on size and colours: phones share encoded PNGs


@dataclass(frozen=True)
class PhoneModel:
    """What a phone reports about its hardware: the banner's product/model/device and the Android release."""

    model: str
    manufacturer: str
    product: str
    device: str
    android_version: str


PHONE_MODELS = (
    PhoneModel("Pixel 7", "Google", "panther", "panther", "14"),
    PhoneModel("SM-S911B", "samsung", "dm1qxxx", "dm1q", "13"),
    PhoneModel("Pixel 6a", "Google", "bluejay", "bluejay", "13"),
    PhoneModel("moto g54 5G", "motorola", "cancunf_g", "cancunf", "14"),
    PhoneModel("2201117TG", "Xiaomi", "spes_global", "spes", "12"),
)


class VirtualPhone:
    """One virtual phone: its state, and an adbd-speaking listener on loopback that can go offline and come back."""

    def __init__(
        self,
        serialno: str = "VPHONE0001",
        *,
        model: PhoneModel = PHONE_MODELS[0],
        android_version: str | None = None,
        sdk: int | None = None,
        battery_level: int = 100,
        screen_on: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        max_payload: int = MAX_PAYLOAD,
        features: Sequence[str] = DEFAULT_FEATURES,
        packages: Sequence[InstalledPackage] = (),
        renderer: ScreenRenderer | None = None,
    ) -> None:
        release = android_version or model.android_version
        self.state = PhoneState(
            serialno=serialno,
            model=model.model,
            manufacturer=model.manufacturer,
            product=model.product,
            device=model.device,
            android_version=release,
            sdk=sdk or SDK_BY_RELEASE.get(release, 34),
            battery_level=battery_level,
            screen_on=screen_on,
        )
        for package in packages:
            self.state.packages[package.name] = package
        self.host = host
        self.max_payload = max(4096, min(max_payload, MAX_PAYLOAD))
        self.features = tuple(features)
        self.renderer = renderer or SHARED_RENDERER
        self.state.request_reboot = self._schedule_reboot
        self.router = ServiceRouter(self.state, self.renderer)
        self.handshakes = 0
        self.next_boot_fault = Fault.none
        """The fault the phone has from its next reboot on (a reboot that goes wrong: ``bootloop``)."""
        self.reboots = 0
        """Reboots asked of the phone (``adb reboot``, ``adb shell reboot``), one asked mid-reboot included."""
        self.boot_time = 1.0
        """Seconds off the adb server during a reboot."""
        self.boot_settle_sec = 0.5
        """Seconds back on the adb server before ``sys.boot_completed`` is 1."""
        self.bootloop_up_sec = 2.0
        """With ``bootloop``: seconds back on the adb server, never booted, before it drops off again."""
        self.bootloop_down_sec = 0.1
        """With ``bootloop``: seconds off between two failed boots (the adb server retries 0.25 s after a drop)."""
        self.flap_sec = 2.5
        """With ``flap``: seconds online between drops."""
        self.flap_down_sec = 0.1
        """With ``flap``: seconds refusing connections (the adb server retries 0.25 s after a drop, then every 3 s)."""
        self._background: set[asyncio.Task[None]] = set()
        self._rebooting: asyncio.Task[None] | None = None
        self._flapping: asyncio.Task[None] | None = None
        self._port = port
        self._server: asyncio.Server | None = None
        self._sessions: set[AdbSession] = set()
        self._session_tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"VirtualPhone({self.state.serialno!r}, {self.state.model!r}, adb_serial={self.adb_serial!r})"

    @property
    def port(self) -> int:
        return self._port

    @property
    def adb_serial(self) -> str:
        """The serial the adb server lists this phone under once connected: ``host:port``."""
        return f"{self.host}:{self._port}"

    @property
    def serialno(self) -> str:
        return self.state.serialno

    @property
    def model(self) -> str:
        return self.state.model

    @property
    def android_version(self) -> str:
        return self.state.android_version

    @property
    def actions(self) -> ActionLog:
        return self.state.actions

    @property
    def battery_level(self) -> int:
        return self.state.battery_level

    @battery_level.setter
    def battery_level(self, level: int) -> None:
        self.state.battery_level = max(0, min(100, level))

    @property
    def screen_on(self) -> bool:
        return self.state.screen_on

    @screen_on.setter
    def screen_on(self, on: bool) -> None:
        self.state.screen_on = on

    @property
    def online(self) -> bool:
        return self._server is not None

    @property
    def fault(self) -> Fault:
        return self.state.fault

    @property
    def unauthorized(self) -> bool:
        return self.state.fault is Fault.unauthorized

    async def set_fault(self, fault: Fault | str, *, flap_sec: float | None = None) -> None:
        """Give the phone a fault (``Fault.none`` clears it); ``ValueError`` names the faults for any other
        word. The shell reads hot, hang, amfail and blank itself; here the phone acts out what the adb server sees."""
        try:
            new = Fault(fault)
        except ValueError:
            raise ValueError(f"unknown fault {fault!r}: {FAULT_NAMES}") from None
        if flap_sec is not None:
            if not 0.1 <= flap_sec <= 3600:
                raise ValueError("flap_sec must be between 0.1 and 3600")
            self.flap_sec = flap_sec
        old, self.state.fault = self.state.fault, new
        if old is Fault.flap and new is not Fault.flap:
            await self._stop_flapping()
        if old is Fault.unauthorized and new is not Fault.unauthorized:
            for session in list(self._sessions):
                session.authorize()  # the prompt is accepted: waiting connections go through
        if new is Fault.flap and (self._flapping is None or self._flapping.done()):
            self._flapping = self._in_background(self._flap(), "flap")
        elif new is Fault.unauthorized and old is not Fault.unauthorized:
            for session in list(self._sessions):  # the adb server reconnects at once and meets the key prompt
                await session.abort()

    def banner(self) -> str:
        s = self.state
        return (
            f"device::ro.product.name={s.product};ro.product.model={s.model};ro.product.device={s.device};"
            f"features={','.join(self.features)}"
        )

    async def start(self) -> None:
        """Starts listening (on a free loopback port unless one was given; the same one after ``come_back``)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Goes offline for good: a reboot in progress is abandoned rather than left to bring the phone back."""
        pending = list(self._background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.go_offline()

    async def go_offline(self) -> None:
        """Closes every connection and stops listening: the adb server sees the phone offline and cannot reconnect."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for session in list(self._sessions):
            await session.abort()
        if self._session_tasks:
            await asyncio.gather(*self._session_tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def come_back(self) -> None:
        """Listens again on the same port; the adb server's reconnect attempts then find the phone."""
        await self.start()

    async def reboot(self) -> None:
        """Drops off for ``boot_time`` seconds, comes back booting (adb answers, ``sys.boot_completed`` is empty)
        and is booted ``boot_settle_sec`` later: screen on, launcher in front. With ``bootloop`` it drops off
        again after ``bootloop_up_sec`` instead, and again, until the fault is cleared. A ``hang`` ends here: the
        hung system is started afresh (into ``next_boot_fault``, if one is set)."""
        await asyncio.sleep(0.05)  # let the reply to ``reboot`` reach the host first, as adbd does
        await self.go_offline()
        if self.state.fault is Fault.hang:
            self.state.fault = Fault.none
        if self.next_boot_fault is not Fault.none:
            self.state.fault, self.next_boot_fault = self.next_boot_fault, Fault.none
        self.state.booted = False
        self.state.screen_on = True
        self.state.go_home()
        await asyncio.sleep(self.boot_time)
        while True:
            await self.come_back()
            if self.state.fault is Fault.bootloop:
                await asyncio.sleep(self.bootloop_up_sec)
            if self.state.fault is not Fault.bootloop:
                break
            await self.go_offline()
            await asyncio.sleep(self.bootloop_down_sec)
        await asyncio.sleep(self.boot_settle_sec)
        self.state.booted = True

    def _schedule_reboot(self) -> None:
        self.reboots += 1
        if self._rebooting is None or self._rebooting.done():  # a reboot asked for while rebooting is the same one
            self._rebooting = self._in_background(self.reboot(), "reboot")

    async def _flap(self) -> None:
        while True:
            await asyncio.sleep(self.flap_sec)
            await self.go_offline()
            await asyncio.sleep(self.flap_down_sec)
            await self.come_back()

    async def _stop_flapping(self) -> None:
        task, self._flapping = self._flapping, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.come_back()

    def _in_background(self, work: Coroutine[None, None, None], what: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"{what}-{self.serialno}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        session = AdbSession(self, reader, writer)
        self._sessions.add(session)
        self._session_tasks.add(task)
        try:
            await session.run()
        except asyncio.CancelledError:
            pass  # loop shutting down: asyncio's stream callback would report a cancelled handler as an error
        finally:
            self._sessions.discard(session)
            self._session_tasks.discard(task)

    async def __aenter__(self) -> VirtualPhone:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.stop()
