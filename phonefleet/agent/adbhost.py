"""The adb server's smart-socket protocol on the event loop: the health probe's, the recovery ladder's and the
self-test's transport.

adbutils blocks a worker thread per call; a probe of every phone at once would hold one thread each (and a
hung phone holds its thread until the socket times out). Here a request is a coroutine on one TCP connection
to the adb server (``host:transport:SERIAL`` then the service, read to the end), so hundreds run
concurrently without threads and a timeout cancels one cleanly.
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator


class AdbHostError(Exception):
    """The adb server refused the request (the phone is offline, unauthorized or gone) or hung up."""


class AdbHost:
    def __init__(self, host: str = "127.0.0.1", port: int = 5037) -> None:
        self.host = host
        self.port = port

    async def shell(self, serial: str, command: str, *, limit: int = 1024 * 1024) -> bytes:
        """The command's output (stdout and stderr, as the legacy shell service mixes them), at most ``limit``
        bytes; the caller bounds the time (``asyncio.timeout``): cancelling closes the connection."""
        return await self.service(serial, f"shell:{command}", limit=limit)

    async def service(self, serial: str, service: str, *, limit: int = 1024 * 1024) -> bytes:
        """Open ``service`` on the phone (``exec:...`` for binary output, ``reboot:``) and read it to the end."""
        reader, writer = await self._open()
        try:
            await _request(reader, writer, f"host:transport:{serial}")
            await _request(reader, writer, service)
            output = bytearray()
            while chunk := await reader.read(65536):
                output += chunk
                if len(output) > limit:
                    raise AdbHostError(f"more than {limit} bytes of output")
            return bytes(output)
        finally:
            await _close(writer)

    async def stream(self, serial: str, service: str) -> AsyncGenerator[bytes]:
        """Open ``service`` on the phone and yield its output as it comes, until the phone ends it. Leaving the
        loop early (a cancel, a break) closes the connection: adbd ends the command."""
        reader, writer = await self._open()
        try:
            await _request(reader, writer, f"host:transport:{serial}")
            await _request(reader, writer, service)
            while chunk := await reader.read(65536):
                yield chunk
        finally:
            await _close(writer)

    async def start(self, serial: str, service: str) -> None:
        """Open ``service`` on the phone and let go once the phone took it (``reboot:``: adbd answers only by
        going down)."""
        reader, writer = await self._open()
        try:
            await _request(reader, writer, f"host:transport:{serial}")
            await _request(reader, writer, service)
        finally:
            await _close(writer)

    async def query(self, request: str) -> str:
        """A request to the adb server itself (``host:connect:ADDR``, ``host-serial:SERIAL:reconnect``): its
        length-prefixed answer."""
        reader, writer = await self._open()
        try:
            await _request(reader, writer, request)
            try:
                length = int(await reader.readexactly(4), 16)
                return (await reader.readexactly(length)).decode("utf-8", "replace").strip()
            except asyncio.IncompleteReadError:
                return ""  # answered OKAY and hung up: nothing to say
            except ValueError:
                raise AdbHostError("unreadable reply") from None
        finally:
            await _close(writer)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise AdbHostError(f"no adb server at {self.host}:{self.port}: {exc}") from None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: str) -> None:
    encoded = request.encode()
    writer.write(f"{len(encoded):04x}".encode() + encoded)
    await writer.drain()
    try:
        status = await reader.readexactly(4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            length = int(await reader.readexactly(4), 16)
            message = (await reader.readexactly(length)).decode("utf-8", "replace")
        else:
            message = f"unexpected reply {status!r}"
    except asyncio.IncompleteReadError:
        message = "the adb server hung up"
    except ValueError:
        message = "unreadable reply"
    raise AdbHostError(message.strip())
