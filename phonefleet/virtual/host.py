"""The adb server side: an asyncio client of its smart-socket protocol, and a private adb server to run."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType


class AdbHostError(Exception):
    """The adb server refused a request, or is not there."""


class AdbHostClient:
    """The adb server's smart-socket protocol from asyncio, so connecting phones never blocks the loop they run on."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5037) -> None:
        self.host = host
        self.port = port

    async def _open(self, request: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise AdbHostError(
                f"no adb server at {self.host}:{self.port} ({exc}); start one with `adb -P {self.port} start-server`"
            ) from exc
        encoded = request.encode()
        writer.write(f"{len(encoded):04x}".encode() + encoded)
        try:
            status = await reader.readexactly(4)
            if status == b"OKAY":
                return reader, writer
            message = await self._read_block(reader) if status == b"FAIL" else f"unexpected reply {status!r}"
        except asyncio.IncompleteReadError:
            message = "connection closed"
        writer.close()
        raise AdbHostError(f"{request}: {message}")

    @staticmethod
    async def _read_block(reader: asyncio.StreamReader) -> str:
        length = int(await reader.readexactly(4), 16)
        return (await reader.readexactly(length)).decode("utf-8", "replace")

    async def query(self, request: str) -> str:
        """Sends a host request and returns its length-prefixed answer."""
        reader, writer = await self._open(request)
        try:
            return await self._read_block(reader)
        except asyncio.IncompleteReadError:
            raise AdbHostError(f"{request}: the adb server at {self.host}:{self.port} hung up (did it die?)") from None
        finally:
            writer.close()

    async def connect(self, address: str) -> str:
        reply = await self.query(f"host:connect:{address}")
        if not reply.startswith(("connected to", "already connected to")):
            raise AdbHostError(reply)
        return reply

    async def disconnect(self, address: str) -> str:
        return await self.query(f"host:disconnect:{address}")

    async def devices(self) -> dict[str, str]:
        return self._parse_devices(await self.query("host:devices"))

    @staticmethod
    def _parse_devices(text: str) -> dict[str, str]:
        pairs = (line.split("\t", 1) for line in text.splitlines() if "\t" in line)
        return {serial: state.strip() for serial, state in pairs}

    async def wait_for_state(self, serial: str, state: str, timeout: float = 15.0) -> None:
        """Follows ``host:track-devices`` until ``serial`` is in ``state`` ("device", "offline", or "absent")."""
        await self.wait_for_states(dict.fromkeys([serial], state), timeout)

    async def wait_for_states(self, wanted: dict[str, str], timeout: float = 15.0) -> None:
        """Like ``wait_for_state`` for many phones over one tracking connection, however large the fleet."""
        reader, writer = await self._open("host:track-devices")
        devices: dict[str, str] = {}
        try:
            async with asyncio.timeout(timeout):
                while any(devices.get(serial, "absent") != state for serial, state in wanted.items()):
                    devices = self._parse_devices(await self._read_block(reader))
        except asyncio.IncompleteReadError:
            raise AdbHostError(f"the adb server at {self.host}:{self.port} hung up (did it die?)") from None
        except TimeoutError:
            now = {serial: devices.get(serial, "absent") for serial in wanted}
            late = sorted(f"{serial}={state}" for serial, state in now.items() if state != wanted[serial])
            raise TimeoutError(f"not in the wanted state after {timeout}s: {', '.join(late[:10])}") from None
        finally:
            writer.close()


def find_adb() -> str:
    """The adb binary to use: $PHONEFLEET_ADB, else the one bundled with adbutils (new enough to report TCP
    devices going offline), else ``adb`` on the PATH."""
    configured = os.environ.get("PHONEFLEET_ADB")
    if configured:
        return configured
    spec = importlib.util.find_spec("adbutils")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "binaries" / "adb"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("adb")
    if found is None:
        raise FileNotFoundError("no adb binary: install adbutils (it bundles one) or set PHONEFLEET_ADB")
    return found


class LocalAdbServer:
    """An adb server of our own on a chosen port, so tests and demos never touch the user's default one."""

    # The native USB backend instead of libusb (which waits 3 s for USB enumeration before the server answers),
    # and no scan of the emulator ports 5555-5585, which could pick up unrelated loopback listeners.
    QUIET_ENV = {"ADB_LIBUSB": "0", "ADB_EMU": "0"}

    def __init__(self, port: int = 5037, adb: str | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.adb = adb or find_adb()
        self.env = {**os.environ, **(self.QUIET_ENV if env is None else env)}
        self.client = AdbHostClient("127.0.0.1", port)

    async def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs the adb command line against this server; stdout and stderr come back together."""
        process = await asyncio.create_subprocess_exec(
            self.adb, "-P", str(self.port), *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )  # fmt: skip
        output, _ = await process.communicate()
        result = subprocess.CompletedProcess(args, process.returncode or 0, output.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AdbHostError(f"adb {' '.join(args)} exited {result.returncode}: {result.stdout.strip()}")
        return result

    async def start(self) -> None:
        await self.run("start-server")

    async def stop(self) -> None:
        await self.run("kill-server", check=False)

    async def __aenter__(self) -> LocalAdbServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.stop()
