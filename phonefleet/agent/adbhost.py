"""One shell command through the adb server, on the event loop: the health probe's transport.

adbutils blocks a worker thread per call; a probe of every phone at once would hold one thread each (and a
hung phone holds its thread until the socket times out). Here a probe is a coroutine on one TCP connection
to the adb server (``host:transport:SERIAL`` then ``shell:COMMAND``, read to the end), so hundreds run
concurrently without threads and a timeout cancels one cleanly.
"""

import asyncio
import contextlib


class AdbHostError(Exception):
    """The adb server refused the request (the phone is offline, unauthorized or gone) or hung up."""


class AdbHost:
    def __init__(self, host: str = "127.0.0.1", port: int = 5037) -> None:
        self.host = host
        self.port = port

    async def shell(self, serial: str, command: str, *, limit: int = 1024 * 1024) -> bytes:
        """The command's output (stdout and stderr, as the legacy shell service mixes them), at most ``limit``
        bytes; the caller bounds the time (``asyncio.timeout``): cancelling closes the connection."""
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise AdbHostError(f"no adb server at {self.host}:{self.port}: {exc}") from None
        try:
            await _request(reader, writer, f"host:transport:{serial}")
            await _request(reader, writer, f"shell:{command}")
            output = bytearray()
            while chunk := await reader.read(65536):
                output += chunk
                if len(output) > limit:
                    raise AdbHostError(f"more than {limit} bytes of output")
            return bytes(output)
        finally:
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
