"""A phone as the plan runner sees it: adbutils' blocking calls, run off the event loop.

(The health probe does not come through here: it speaks to the adb server on the loop, ``adbhost``.)
"""

import asyncio
from pathlib import Path
from typing import Any


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
