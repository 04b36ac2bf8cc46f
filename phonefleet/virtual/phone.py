"""A virtual phone: its state, and an adbd-speaking listener on loopback that can go offline and come back.

The real adb server ``adb connect``s it like any network device, so adbutils, the adb command line and
the agent drive it exactly as they drive USB phones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from phonefleet.virtual.adbd import MAX_PAYLOAD, AdbSession
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
        self.boot_time = 1.0
        self._background: set[asyncio.Task[None]] = set()
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
        """Drops off for ``boot_time`` seconds and comes back freshly booted: screen on, launcher in front."""
        await asyncio.sleep(0.05)  # let the reply to ``reboot`` reach the host first, as adbd does
        await self.go_offline()
        self.state.screen_on = True
        self.state.go_home()
        await asyncio.sleep(self.boot_time)
        await self.come_back()

    def _schedule_reboot(self) -> None:
        task = asyncio.create_task(self.reboot(), name=f"reboot-{self.serialno}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
