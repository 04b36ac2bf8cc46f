"""A phone as the plan runner sees it: adbutils' blocking calls, run off the event loop."""

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PhoneInfo:
    """The health probe's facts about a phone."""

    model: str | None
    android_version: str | None
    battery: int | None
    screen_on: bool


class AdbPhone:
    """Wraps ``adbutils.AdbDevice``; every call runs in a worker thread so one slow phone never stalls others."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.serial: str = device.serial

    async def shell(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        result = await asyncio.to_thread(self.device.shell2, command, timeout=timeout)
        return int(result.returncode), str(result.output)

    async def shell_bytes(self, command: str, timeout: float | None = None) -> bytes:
        data = await asyncio.to_thread(self.device.shell, command, encoding=None, timeout=timeout)
        return bytes(data)

    async def push(self, local: Path, remote: str) -> None:
        await asyncio.to_thread(self.device.sync.push, str(local), remote)

    async def info(self) -> PhoneInfo:
        """Model, Android version, battery and screen state: the health probe's facts."""
        props = await asyncio.to_thread(
            self.device.shell, "getprop ro.product.model; getprop ro.build.version.release", timeout=10
        )
        model, _, version = str(props).strip().partition("\n")
        battery_out = await asyncio.to_thread(self.device.shell, "dumpsys battery", timeout=10)
        battery = None
        for line in str(battery_out).splitlines():
            key, _, value = line.strip().partition(":")
            if key == "level" and value.strip().isdigit():
                battery = int(value.strip())
        power = str(await asyncio.to_thread(self.device.shell, "dumpsys power", timeout=10))
        screen_on = "mWakefulness=Awake" in power or "Display Power: state=ON" in power
        return PhoneInfo(model=model.strip() or None, android_version=version.strip() or None, battery=battery,
                         screen_on=screen_on)
