"""The adb server's smart-socket protocol on the event loop: the transport of plan steps' commands, the health
probe, the recovery ladder and the self-test.

adbutils blocks a worker thread per call (and asks ``host:version`` and sleeps 2 x 10 ms on close in each);
a probe of every phone at once would hold one thread each, and a hung phone holds its thread until the socket
times out. Here a request is a coroutine on one TCP connection to the adb server (``host:transport:SERIAL``
then the service, read to the end), so hundreds run concurrently without threads and a timeout cancels one
cleanly. Short requests share ``max_connections`` connections at most: the adb server ``select()``s, and with
500 phones on TCP it already holds 500 descriptors of its own.
"""

import asyncio
import contextlib
import struct
from collections.abc import AsyncGenerator, AsyncIterator

MAX_CONNECTIONS = 128
"""Short requests (a command, a query) open at most this many connections to the adb server at once."""
SHELL_V2 = "shell_v2"
"""The feature of an adbd that speaks the shell protocol (Android 7 and later): exit codes in a packet."""
_STDOUT, _STDERR, _EXIT = 1, 2, 3  # shell protocol packet ids
_HEADER = struct.Struct("<BI")


class AdbHostError(Exception):
    """The adb server refused the request (the phone is offline, unauthorized or gone) or hung up."""


class AdbHost:
    def __init__(self, host: str = "127.0.0.1", port: int = 5037, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.host = host
        self.port = port
        self._gate = asyncio.Semaphore(max_connections)
        self._features: dict[str, frozenset[str]] = {}

    async def features(self, serial: str) -> frozenset[str]:
        """What the phone's adbd said it speaks (``shell_v2``, ``stat_v2``, ...), asked once per phone."""
        known = self._features.get(serial)
        if known is None:
            answer = await self.query(f"host-serial:{serial}:features")
            known = self._features[serial] = frozenset(f for f in answer.split(",") if f)
        return known

    def forget(self, serial: str) -> None:
        """The phone changed state (a reboot, a new phone under the serial): ask its features again."""
        self._features.pop(serial, None)

    async def run(self, serial: str, command: str, *, limit: int = 1024 * 1024) -> tuple[int, bytes]:
        """Run a command through the shell protocol (``shell,v2:``): its exit code and its output (stdout and
        stderr as they came), at most ``limit`` bytes. The phone must speak ``shell_v2`` (``features``); the
        caller bounds the time (``asyncio.timeout``): cancelling closes the connection and the phone ends it.

        The hot path of every plan step, so it is a protocol parsing the bytes as they arrive rather than a
        stream reader awaited per field: in bare loops over 500 virtual phones, a tenth more commands a second."""
        loop = asyncio.get_running_loop()
        async with self._gate:
            done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: _ShellV2(serial, command, limit, done), self.host, self.port)
            except OSError as exc:
                raise AdbHostError(f"no adb server at {self.host}:{self.port}: {exc}") from None
            try:
                return await done
            finally:
                transport.close()

    async def shell(self, serial: str, command: str, *, limit: int = 1024 * 1024) -> bytes:
        """The command's output (stdout and stderr, as the legacy shell service mixes them), at most ``limit``
        bytes; the caller bounds the time (``asyncio.timeout``): cancelling closes the connection."""
        return await self.service(serial, f"shell:{command}", limit=limit)

    async def service(self, serial: str, service: str, *, limit: int = 1024 * 1024) -> bytes:
        """Open ``service`` on the phone (``exec:...`` for binary output, ``reboot:``) and read it to the end."""
        async with self._connection(serial, service) as reader:
            output = bytearray()
            while chunk := await reader.read(65536):
                output += chunk
                if len(output) > limit:
                    raise AdbHostError(f"more than {limit} bytes of output")
            return bytes(output)

    async def stream(self, serial: str, service: str) -> AsyncGenerator[bytes]:
        """Open ``service`` on the phone and yield its output as it comes, until the phone ends it. Leaving the
        loop early (a cancel, a break) closes the connection: adbd ends the command. Not counted against
        ``max_connections``: a stream lasts as long as its command (a test run), and holding a share for it
        would queue every other phone's commands behind it."""
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
        async with self._connection(serial, service):
            pass

    async def query(self, request: str) -> str:
        """A request to the adb server itself (``host:connect:ADDR``, ``host-serial:SERIAL:reconnect``): its
        length-prefixed answer."""
        async with self._gate:
            return await self._query(request)

    async def _query(self, request: str) -> str:
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

    @contextlib.asynccontextmanager
    async def _connection(self, serial: str, service: str) -> AsyncIterator[asyncio.StreamReader]:
        """A connection to ``service`` on the phone, one of ``max_connections``; closed on the way out."""
        async with self._gate:
            reader, writer = await self._open()
            try:
                await _request(reader, writer, f"host:transport:{serial}")
                await _request(reader, writer, service)
                yield reader
            finally:
                await _close(writer)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise AdbHostError(f"no adb server at {self.host}:{self.port}: {exc}") from None


def _frame(request: str) -> bytes:
    encoded = request.encode()
    return f"{len(encoded):04x}".encode() + encoded


class _ShellV2(asyncio.Protocol):
    """One ``shell,v2:`` command on its own connection: ``host:transport:SERIAL`` and its OKAY, then the service
    and its OKAY (the adb server drops a request sent before it switched the connection to the phone), then
    shell packets up to the exit packet, which settles ``done``."""

    def __init__(self, serial: str, command: str, limit: int, done: asyncio.Future[tuple[int, bytes]]) -> None:
        self._requests = [_frame(f"host:transport:{serial}"), _frame(f"shell,v2:{command}")]
        self._limit = limit
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._output = bytearray()
        self._answered = 0  # requests the adb server said OKAY to

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._requests[0])

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        buffer = self._buffer
        buffer += data
        start = 0
        while self._answered < 2:
            if len(buffer) - start < 4:
                break
            if buffer[start:start + 4] != b"OKAY":
                del buffer[:start]
                self._refused()
                return
            start += 4
            self._answered += 1
            if self._answered == 1 and self._transport is not None:
                self._transport.write(self._requests[1])
        while self._answered == 2 and len(buffer) - start >= 5:
            kind, length = _HEADER.unpack_from(buffer, start)
            end = start + 5 + length
            if len(buffer) < end:
                break
            if kind == _EXIT:
                self._settle(result=((buffer[start + 5] if length else -1), bytes(self._output)))
                return
            if kind in (_STDOUT, _STDERR):
                self._output += buffer[start + 5:end]
                if len(self._output) > self._limit:
                    self._settle(error=AdbHostError(f"more than {self._limit} bytes of output"))
                    return
            start = end
        del buffer[:start]

    def _refused(self) -> None:
        """FAIL and its length-prefixed reason (once all of it is here: called again as more comes), or a reply
        that is not adb's."""
        status, rest = bytes(self._buffer[:4]), self._buffer[4:]
        if status != b"FAIL":
            self._settle(error=AdbHostError(f"unexpected reply {status!r}"))
            return
        if len(rest) < 4:
            return  # the reason's length is still on its way
        try:
            length = int(bytes(rest[:4]), 16)
        except ValueError:
            self._settle(error=AdbHostError("unreadable reply"))
            return
        if len(rest) >= 4 + length:
            self._settle(error=AdbHostError(bytes(rest[4:4 + length]).decode("utf-8", "replace").strip()))

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle(error=AdbHostError("the adb server hung up" if self._answered < 2
                                        else "the phone hung up before the command ended"))

    def _settle(self, *, result: tuple[int, bytes] | None = None, error: AdbHostError | None = None) -> None:
        if not self._done.done():
            if error is not None:
                self._done.set_exception(error)
            else:
                assert result is not None
                self._done.set_result(result)
        if self._transport is not None:
            self._transport.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close without waiting for the transport to finish closing (one loop turn per command saved; nothing
    is left to flush: every request was answered)."""
    writer.close()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: str) -> None:
    writer.write(_frame(request))
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
