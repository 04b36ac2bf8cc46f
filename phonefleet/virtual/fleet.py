"""A fleet of virtual phones on free loopback ports, ``adb connect``ed through one adb server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType

from phonefleet.virtual.adbd import MAX_PAYLOAD
from phonefleet.virtual.faults import Fault
from phonefleet.virtual.host import AdbHostClient, AdbHostError
from phonefleet.virtual.phone import PHONE_MODELS, PhoneModel, VirtualPhone


class VirtualFleet:
    """N virtual phones on free loopback ports, each ``adb connect``ed through the given adb server."""

    def __init__(
        self,
        count: int = 3,
        *,
        phones: Sequence[VirtualPhone] | None = None,
        adb_host: str = "127.0.0.1",
        adb_port: int = 5037,
        models: Sequence[PhoneModel] = PHONE_MODELS,
        serial_prefix: str = "VPHONE",
        max_payload: int = MAX_PAYLOAD,
        timeout: float = 15.0,
        ports: Sequence[int] = (),
    ) -> None:
        """``ports`` reuses listening ports (hence adb serials) from an earlier run, as a rack of USB phones
        keeps its serials when the agent restarts; phones beyond them get free ports."""
        self.adb = AdbHostClient(adb_host, adb_port)
        self.timeout = timeout
        self.phones = list(phones) if phones is not None else [
            VirtualPhone(f"{serial_prefix}{index + 1:04d}", model=models[index % len(models)], max_payload=max_payload,
                         port=ports[index] if index < len(ports) else 0)
            for index in range(count)
        ]  # fmt: skip

    @property
    def serials(self) -> list[str]:
        return [phone.adb_serial for phone in self.phones]

    def phone(self, serial: str) -> VirtualPhone:
        """A phone by its adb serial (``127.0.0.1:PORT``) or its own serial number."""
        for phone in self.phones:
            if serial in (phone.adb_serial, phone.serialno):
                return phone
        raise KeyError(serial)

    async def set_fault(self, serial: str, fault: Fault | str, *, flap_sec: float | None = None) -> VirtualPhone:
        """Give one phone (by either serial) a fault, or clear it with ``none``; ``KeyError`` for an unknown phone,
        ``ValueError`` for an unknown fault."""
        phone = self.phone(serial)
        await phone.set_fault(fault, flap_sec=flap_sec)
        return phone

    async def start(self) -> None:
        """Starts every phone, connects them (a few at a time, as the adb server connects serially anyway) and
        waits until the adb server lists all of them as online devices."""
        await asyncio.gather(*(phone.start() for phone in self.phones))
        gate = asyncio.Semaphore(16)

        async def connect(phone: VirtualPhone) -> None:
            async with gate:
                await self.adb.connect(phone.adb_serial)

        await asyncio.gather(*(connect(phone) for phone in self.phones))
        await self.adb.wait_for_states(dict.fromkeys(self.serials, "device"), self.timeout + len(self.phones) / 50)

    async def add(self, phone: VirtualPhone) -> VirtualPhone:
        """Starts and connects one more phone (a late joiner)."""
        self.phones.append(phone)
        await phone.start()
        await self.connect(phone)
        return phone

    async def connect(self, phone: VirtualPhone) -> None:
        """``adb connect``s the phone and waits until the adb server lists it as an online device."""
        await self.adb.connect(phone.adb_serial)
        await self.adb.wait_for_state(phone.adb_serial, "device", self.timeout)

    async def disconnect(self, phone: VirtualPhone | None = None) -> None:
        """``adb disconnect``s one phone, or all of them; the phones keep listening."""
        for target in [phone] if phone is not None else self.phones:
            with contextlib.suppress(AdbHostError):
                await self.adb.disconnect(target.adb_serial)

    async def wait_for_state(self, phone: VirtualPhone, state: str, timeout: float | None = None) -> None:
        await self.adb.wait_for_state(phone.adb_serial, state, timeout or self.timeout)

    async def stop(self) -> None:
        await self.disconnect()
        await asyncio.gather(*(phone.stop() for phone in self.phones))

    async def __aenter__(self) -> VirtualFleet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.stop()
