"""The adbd side of the adb wire protocol: packets, streams with flow control, and one connection's session.

A session answers the adb server's CNXN, OPENs services (the phone's router says which) and carries their
bytes as WRTEs, one in flight per stream until the host's OKAY, as adbd does. A phone told to be
``unauthorized`` answers CNXN with AUTH tokens instead, and refuses every signature, until told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phonefleet.virtual.phone import VirtualPhone

log = logging.getLogger(__name__)

A_VERSION = 0x01000001  # from this version on, the data checksum may be 0
A_VERSION_MIN = 0x01000000
MAX_PAYLOAD = 1024 * 1024
HANGUP_GRACE = 2.0  # seconds a service may finish after the host closed its stream
HEADER = struct.Struct("<6I")


def _command(name: bytes) -> int:
    return int.from_bytes(name, "little")


CNXN, OPEN, OKAY, WRTE, CLSE, AUTH = (_command(n) for n in (b"CNXN", b"OPEN", b"OKAY", b"WRTE", b"CLSE", b"AUTH"))
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
TOKEN_SIZE = 20


class StreamClosedError(Exception):
    """The host closed the stream (or the whole connection) while a service was still using it."""


@dataclass(frozen=True)
class AdbMessage:
    """One adb packet: a 24-byte header (command, arg0, arg1, length, checksum, magic) and its payload."""

    command: int
    arg0: int
    arg1: int
    payload: bytes = b""

    def encode(self, checksum: bool) -> bytes:
        check = sum(self.payload) & 0xFFFFFFFF if checksum else 0
        header = HEADER.pack(self.command, self.arg0, self.arg1, len(self.payload), check, self.command ^ 0xFFFFFFFF)
        return header + self.payload

    @property
    def name(self) -> str:
        return self.command.to_bytes(4, "little").decode("ascii", "replace")


class StreamInbox:
    """What the host wrote to one stream; each WRTE is acknowledged once there is room, so a slow service throttles."""

    def __init__(self, acknowledge: Callable[[], None], high_water: int) -> None:
        self._acknowledge = acknowledge
        self._high_water = high_water
        self._buffer = bytearray()
        self._eof = False
        self._ack_owed = False
        self._arrived = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) <= self._high_water:
            self._acknowledge()
        else:
            self._ack_owed = True
        self._arrived.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._arrived.set()

    async def _wait(self) -> None:
        self._arrived.clear()
        await self._arrived.wait()

    def _take(self, size: int) -> bytes:
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        if self._ack_owed and len(self._buffer) <= self._high_water and not self._eof:
            self._ack_owed = False
            self._acknowledge()
        return chunk

    async def read(self, size: int = -1) -> bytes:
        """``size`` bytes (everything until the stream closes when -1); fewer only if it closed first."""
        while not self._eof and (size < 0 or len(self._buffer) < size):
            await self._wait()
        return self._take(len(self._buffer) if size < 0 else size)

    async def read_exactly(self, size: int) -> bytes:
        data = await self.read(size)
        if len(data) < size:
            raise EOFError
        return data


class AdbStream:
    """One OPENed service on a connection: writes in max-payload WRTEs, one in flight until the host's OKAY."""

    def __init__(self, session: AdbSession, local_id: int, remote_id: int, destination: str) -> None:
        self._session = session
        self.local_id = local_id
        self.remote_id = remote_id
        self.destination = destination
        self.closed = False
        self._window = asyncio.Event()
        self._window.set()
        self.inbox = StreamInbox(self._acknowledge, high_water=4 * session.max_payload)

    @property
    def max_payload(self) -> int:
        return self._session.max_payload

    def _acknowledge(self) -> None:
        if not self.closed:
            self._session.send(AdbMessage(OKAY, self.local_id, self.remote_id))

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        limit = self._session.max_payload
        for start in range(0, len(view), limit):
            await self._window.wait()
            if self.closed:
                raise StreamClosedError(self.destination)
            self._window.clear()
            self._session.send(AdbMessage(WRTE, self.local_id, self.remote_id, bytes(view[start : start + limit])))
            try:
                await self._session.drain()
            except ConnectionError as exc:
                raise StreamClosedError(self.destination) from exc

    def on_okay(self) -> None:
        self._window.set()

    def on_remote_close(self) -> None:
        self.closed = True
        self._window.set()
        self.inbox.feed_eof()

    async def close(self) -> None:
        """Closes our end once the last WRTE is acknowledged, so the host has delivered it before it sees CLSE."""
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._window.wait()
        if not self.closed:
            self.closed = True
            self._session.send(AdbMessage(CLSE, self.local_id, self.remote_id))
            self._session.forget(self)
        self.inbox.feed_eof()


Service = Callable[["AdbStream"], Awaitable[None]]
"""What serves one OPENed stream, until it closes it."""


class AdbSession:
    """One TCP connection from the adb server: the CNXN handshake, the stream table and message routing."""

    def __init__(self, phone: VirtualPhone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._phone = phone
        self._reader = reader
        self._writer = writer
        self._streams: dict[int, AdbStream] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._next_id = 1
        self._checksum = True
        self.connected = False
        self.max_payload = phone.max_payload
        self._unanswered: AdbMessage | None = None
        """The host's CNXN while the phone waits for its key to be accepted (the ``unauthorized`` fault)."""

    async def run(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(HEADER.size)
                command, arg0, arg1, length, _check, magic = HEADER.unpack(header)
                if magic != command ^ 0xFFFFFFFF or length > MAX_PAYLOAD:
                    log.warning("virtual phone %s: bad packet header %r", self._phone.adb_serial, header)
                    break
                payload = await self._reader.readexactly(length) if length else b""
                self._handle(AdbMessage(command, arg0, arg1, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await self.abort()

    def send(self, message: AdbMessage) -> None:
        if not self._writer.is_closing():
            self._writer.write(message.encode(self._checksum))

    async def drain(self) -> None:
        await self._writer.drain()

    def forget(self, stream: AdbStream) -> None:
        self._streams.pop(stream.local_id, None)

    async def abort(self) -> None:
        """Drops the connection: every stream is closed and its service cancelled, as when a cable is pulled."""
        for stream in self._streams.values():
            stream.on_remote_close()
        self._streams.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _handle(self, message: AdbMessage) -> None:
        if message.command == CNXN:
            if self._phone.unauthorized:
                self._unanswered = message
                self._ask_for_key()
            else:
                self._connect(message)
        elif message.command == AUTH:
            if self._unanswered is not None and message.arg0 == AUTH_SIGNATURE:
                self._ask_for_key()  # no signature is good enough; after the last key the host sends its public key
        elif not self.connected:
            log.debug("virtual phone %s: %s before CNXN ignored", self._phone.adb_serial, message.name)
        elif message.command == OPEN:
            self._open(message)
        elif message.command in (OKAY, WRTE, CLSE):
            stream = self._streams.get(message.arg1)
            if stream is None or (message.arg0 and stream.remote_id != message.arg0):
                return
            if message.command == OKAY:
                stream.on_okay()
            elif message.command == WRTE:
                stream.inbox.feed(message.payload)
            else:
                self._hang_up(stream, grace=HANGUP_GRACE)

    def _hang_up(self, stream: AdbStream, grace: float) -> None:
        """The host closed a stream: input ends now, and the service is cancelled unless it finishes within
        ``grace`` (``adb exec-in 'cat > f'`` closes right after its last byte and still expects ``f`` written)."""
        self.forget(stream)
        stream.on_remote_close()
        task = self._tasks.get(stream.local_id)
        if task is not None:
            asyncio.get_running_loop().call_later(grace, task.cancel)

    def _ask_for_key(self) -> None:
        self.send(AdbMessage(AUTH, AUTH_TOKEN, 0, os.urandom(TOKEN_SIZE)))

    def authorize(self) -> None:
        """The key is accepted (the fault is cleared): the waiting connection goes through, as adbd's does."""
        if self._unanswered is not None:
            message, self._unanswered = self._unanswered, None
            self._connect(message)

    def _connect(self, message: AdbMessage) -> None:
        for stream in list(self._streams.values()):
            self._hang_up(stream, grace=0)
        version = max(A_VERSION_MIN, min(A_VERSION, message.arg0))
        self.max_payload = max(4096, min(self._phone.max_payload, message.arg1 or MAX_PAYLOAD))
        self._checksum = version < A_VERSION
        self.connected = True
        self._phone.handshakes += 1
        self.send(AdbMessage(CNXN, version, self.max_payload, self._phone.banner().encode()))

    def _open(self, message: AdbMessage) -> None:
        destination = message.payload.rstrip(b"\0").decode("utf-8", "replace")
        handler = self._phone.router.route(destination)
        if handler is None:
            log.debug("virtual phone %s: refused service %r", self._phone.adb_serial, destination)
            self.send(AdbMessage(CLSE, 0, message.arg0))
            return
        local_id = self._next_id
        self._next_id += 1
        stream = AdbStream(self, local_id, message.arg0, destination)
        self._streams[local_id] = stream
        self.send(AdbMessage(OKAY, local_id, message.arg0))
        task = asyncio.create_task(self._serve(stream, handler), name=f"adb-stream-{destination[:40]}")
        self._tasks[local_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(local_id, None))

    async def _serve(self, stream: AdbStream, handler: Service) -> None:
        try:
            await handler(stream)
        except StreamClosedError:
            pass
        except Exception:
            log.exception("virtual phone %s: service %r failed", self._phone.adb_serial, stream.destination)
        finally:
            if not stream.closed:
                await stream.close()
