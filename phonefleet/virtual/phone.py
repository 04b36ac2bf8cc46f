"""Virtual phones: asyncio servers on loopback that speak the adbd wire protocol.

The real adb server ``adb connect``s them like any network device, so adbutils, the adb command line and
the agent drive them exactly as they drive USB phones: CNXN/OPEN/OKAY/WRTE/CLSE with flow control, the
``shell:``, ``shell,v2,...:`` (exit codes), ``exec:`` and ``sync:`` services, and a fake sh behind them
(``phonefleet.virtual.shell``). ``VirtualFleet`` starts several phones and connects them through a given adb server.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import stat
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from phonefleet.virtual.shell import (
    SDK_BY_RELEASE,
    ActionLog,
    BytesStdin,
    CommandIO,
    InstalledPackage,
    PhoneState,
    ScreenRenderer,
    VirtualShell,
)

log = logging.getLogger(__name__)

A_VERSION = 0x01000001  # from this version on, the data checksum may be 0
A_VERSION_MIN = 0x01000000
MAX_PAYLOAD = 1024 * 1024
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
HANGUP_GRACE = 2.0  # seconds a service may finish after the host closed its stream
DEFAULT_FEATURES = ("shell_v2", "cmd", "stat_v2", "ls_v2", "fixed_push_mkdir")
HEADER = struct.Struct("<6I")
SHARED_RENDERER = ScreenRenderer()  # screenshots depend only on size and colours: phones share encoded PNGs


def _command(name: bytes) -> int:
    return int.from_bytes(name, "little")


CNXN, OPEN, OKAY, WRTE, CLSE = (_command(n) for n in (b"CNXN", b"OPEN", b"OKAY", b"WRTE", b"CLSE"))
AUTH, STLS, SYNC = (_command(n) for n in (b"AUTH", b"STLS", b"SYNC"))

# shell protocol (shell_v2) packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW_SIZE = range(6)


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


# --------------------------------------------------------------------------------------------- streams


class ByteSource(Protocol):
    async def read(self, size: int = -1) -> bytes: ...

    async def read_some(self) -> bytes: ...


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

    async def read_some(self) -> bytes:
        """Whatever has arrived (waiting for at least one byte); ``b""`` once the stream is closed and drained."""
        while not self._buffer and not self._eof:
            await self._wait()
        return self._take(len(self._buffer))


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


# --------------------------------------------------------------------------------------------- services


class StreamSink:
    """A shell's stdout or stderr on a stream: raw bytes, or shell-protocol packets of the given id (shell_v2)."""

    def __init__(self, stream: AdbStream, packet_id: int | None, pty: bool) -> None:
        self._stream = stream
        self._packet_id = packet_id
        self._pty = pty

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pty:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if self._packet_id is None:
            await self._stream.write(data)
            return
        room = self._stream.max_payload - 5
        for start in range(0, len(data), room):
            chunk = data[start : start + room]
            await self._stream.write(struct.pack("<BI", self._packet_id, len(chunk)) + chunk)

    async def exit(self, status: int) -> None:
        await self._stream.write(struct.pack("<BIB", SHELL_EXIT, 1, status & 0xFF))


class ShellProtocolStdin:
    """Demultiplexes the host's shell-protocol packets: stdin data, close-stdin, and window-size changes (ignored)."""

    def __init__(self, inbox: StreamInbox) -> None:
        self._inbox = inbox
        self._buffer = bytearray()
        self._eof = False

    async def _pump(self) -> None:
        try:
            header = await self._inbox.read_exactly(5)
            packet_id, length = struct.unpack("<BI", header)
            body = await self._inbox.read_exactly(length)
        except EOFError:
            self._eof = True
            return
        if packet_id == SHELL_STDIN:
            self._buffer += body
        elif packet_id == SHELL_CLOSE_STDIN:
            self._eof = True

    async def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buffer) < size):
            await self._pump()
        size = len(self._buffer) if size < 0 else size
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    async def read_some(self) -> bytes:
        while not self._buffer and not self._eof:
            await self._pump()
        chunk = bytes(self._buffer)
        self._buffer.clear()
        return chunk


@dataclass(frozen=True)
class ShellRequest:
    """A parsed ``shell[,v2][,raw|pty][,TERM=...]:command`` or ``exec:command`` destination."""

    service: str
    command: str
    v2: bool
    pty: bool

    @classmethod
    def parse(cls, destination: str) -> ShellRequest | None:
        head, _, command = destination.partition(":")
        name, *options = head.split(",")
        if name == "exec":
            return cls("exec", command, v2=False, pty=False)
        if name != "shell":
            return None
        v2 = "v2" in options
        pty = "pty" in options or ("raw" not in options and not command)
        return cls("shell,v2" if v2 else "shell", command, v2=v2, pty=pty)


class ShellService:
    """``shell:``, ``shell,v2,...:`` and ``exec:``: command lines on the fake sh, or a session when there is none."""

    def __init__(self, state: PhoneState, renderer: ScreenRenderer) -> None:
        self._state = state
        self._renderer = renderer

    async def serve(self, stream: AdbStream, request: ShellRequest) -> None:
        shell = VirtualShell(self._state, request.service, self._renderer)
        stdout = StreamSink(stream, SHELL_STDOUT if request.v2 else None, request.pty)
        stderr = stdout if not request.v2 or request.pty else StreamSink(stream, SHELL_STDERR, False)
        stdin: ByteSource = ShellProtocolStdin(stream.inbox) if request.v2 else stream.inbox
        if request.command:
            status = await shell.run(request.command, CommandIO(stdin, stdout, stderr))
        else:
            status = await self._interact(shell, stdin, CommandIO(BytesStdin(), stdout, stderr), request.pty)
        if request.v2:
            await stdout.exit(status)
        await stream.close()

    @staticmethod
    async def _interact(shell: VirtualShell, stdin: ByteSource, io: CommandIO, pty: bool) -> int:
        """Runs input line by line; on a pty it also prompts and echoes, so ``adb shell`` is usable by hand."""
        line = bytearray()

        async def terminal(data: bytes) -> None:
            if pty:
                await io.out(data)

        await terminal(shell.prompt.encode())
        while not shell.exited:
            chunk = await stdin.read_some()
            if not chunk:
                break
            for byte in chunk:
                if byte in (0x0D, 0x0A):
                    await terminal(b"\n")
                    text = line.decode(errors="replace")
                    line.clear()
                    if text.strip():
                        await shell.run(text, io)
                    if shell.exited:
                        break
                    await terminal(shell.prompt.encode())
                elif byte == 0x03 and pty:
                    line.clear()
                    await terminal(b"^C\n" + shell.prompt.encode())
                elif byte == 0x04 and pty and not line:
                    return shell.last_status
                elif byte in (0x08, 0x7F) and pty:
                    if line:
                        line.pop()
                        await terminal(b"\b \b")
                else:
                    line.append(byte)
                    await terminal(bytes([byte]))
        return shell.last_status


class SyncService:
    """``sync:``: STAT/LIST/SEND/RECV/QUIT and the stat_v2/ls_v2 forms (STA2, LST2, LIS2) on the in-memory files."""

    STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")

    def __init__(self, state: PhoneState) -> None:
        self._state = state
        self._fs = state.files

    async def serve(self, stream: AdbStream) -> None:
        inbox = stream.inbox
        with contextlib.suppress(EOFError):
            while True:
                ident, length = struct.unpack("<4sI", await inbox.read_exactly(8))
                if ident == b"QUIT":
                    break
                if length > SYNC_PATH_MAX:
                    await self._fail(stream, "path too long")
                    break
                path = (await inbox.read_exactly(length)).decode("utf-8", "replace")
                self._state.actions.append("sync", [ident.decode("ascii", "replace"), path])
                if not await self._handle(stream, ident, path):
                    break
        await stream.close()

    async def _handle(self, stream: AdbStream, ident: bytes, path: str) -> bool:
        if ident == b"STAT":
            found = self._fs.stat(path)
            fields = (found.mode, found.size, found.mtime) if found else (0, 0, 0)
            await stream.write(b"STAT" + struct.pack("<III", *fields))
        elif ident in (b"STA2", b"LST2"):
            await stream.write(self._stat_v2(ident, path))
        elif ident in (b"LIST", b"LIS2"):
            await self._list(stream, path, v2=ident == b"LIS2")
        elif ident == b"SEND":
            return await self._receive(stream, path)
        elif ident == b"RECV":
            return await self._send(stream, path)
        else:
            await self._fail(stream, f"unknown sync command {ident!r}")
            return False
        return True

    def _stat_v2(self, ident: bytes, path: str, name_length: int | None = None) -> bytes:
        found = self._fs.stat(path)
        if found is None:
            packed = self.STAT_V2.pack(ident, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # errno 2: ENOENT
        else:
            inode = hash(self._fs.normalize(path)) & 0xFFFFFFFF
            nlink = 2 if stat.S_ISDIR(found.mode) else 1
            packed = self.STAT_V2.pack(ident, 0, 0xFD00, inode, found.mode, nlink, 2000, 2000, found.size,
                                       found.mtime, found.mtime, found.mtime)  # fmt: skip
        return packed if name_length is None else packed + struct.pack("<I", name_length)

    async def _list(self, stream: AdbStream, path: str, v2: bool) -> None:
        try:
            entries = self._fs.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        out = bytearray()
        folder = self._fs.normalize(path).rstrip("/")
        for name, info in entries:
            encoded = name.encode()
            if v2:
                out += self._stat_v2(b"DNT2", f"{folder}/{name}", len(encoded)) + encoded
            else:
                out += b"DENT" + struct.pack("<IIII", info.mode, info.size, info.mtime, len(encoded)) + encoded
        out += b"DONE" + bytes(self.STAT_V2.size if v2 else 16)
        await stream.write(bytes(out))

    async def _receive(self, stream: AdbStream, spec: str) -> bool:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"
        try:
            mode = int(mode_text)
        except ValueError:
            mode = 0o100644
        data = bytearray()
        mtime = int(time.time())
        while True:
            ident, length = struct.unpack("<4sI", await stream.inbox.read_exactly(8))
            if ident == b"DATA":
                if length > SYNC_DATA_MAX:
                    await self._fail(stream, "data packet too large")
                    return False
                data += await stream.inbox.read_exactly(length)
            elif ident == b"DONE":
                mtime = length
                break
            else:
                await self._fail(stream, f"invalid data message {ident!r}")
                return False
        try:
            self._fs.write(path, bytes(data), mode=mode, mtime=mtime, make_parents=True)
        except IsADirectoryError:
            await self._fail(stream, f"couldn't create file: {path}: Is a directory")
            return False
        except (PermissionError, FileNotFoundError):
            await self._fail(stream, f"couldn't create file: {path}: Permission denied")
            return False
        await stream.write(b"OKAY" + bytes(4))
        return True

    async def _send(self, stream: AdbStream, path: str) -> bool:
        try:
            data = self._fs.read(path)
        except FileNotFoundError:
            await self._fail(stream, "No such file or directory")
            return False
        except IsADirectoryError:
            await self._fail(stream, "read failed: Is a directory")
            return False
        out = bytearray()
        for start in range(0, len(data), SYNC_DATA_MAX):
            chunk = data[start : start + SYNC_DATA_MAX]
            out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
            if len(out) >= 4 * SYNC_DATA_MAX:
                await stream.write(bytes(out))
                out.clear()
        await stream.write(bytes(out) + b"DONE" + bytes(4))
        return True

    @staticmethod
    async def _fail(stream: AdbStream, message: str) -> None:
        encoded = message.encode()
        await stream.write(b"FAIL" + struct.pack("<I", len(encoded)) + encoded)


class ServiceRouter:
    """Maps an OPEN destination to the service that serves it; unknown destinations are refused with CLSE."""

    def __init__(self, state: PhoneState, renderer: ScreenRenderer) -> None:
        self._state = state
        self._renderer = renderer
        self._shell = ShellService(state, renderer)
        self._sync = SyncService(state)

    def route(self, destination: str) -> Callable[[AdbStream], Awaitable[None]] | None:
        request = ShellRequest.parse(destination)
        if request is not None:
            return lambda stream: self._shell.serve(stream, request)
        name, _, argument = destination.partition(":")
        if name == "sync":
            return self._sync.serve
        if name == "framebuffer":
            return self._framebuffer
        if name == "reboot":
            return self._rebooting
        replies = {
            "root": "adbd cannot run as root in production builds\n",
            "unroot": "adbd not running as root\n",
            "remount": 'Not running as root. Try "adb root" first.\n',
            "tcpip": f"restarting in TCP mode port: {argument}\n",
            "usb": "restarting in USB mode\n",
            "enable-verity": "verity cannot be enabled/disabled - USER build\n",
            "disable-verity": "verity cannot be enabled/disabled - USER build\n",
        }
        if name in replies:
            return lambda stream: self._reply(stream, name, replies[name])
        return None

    async def _reply(self, stream: AdbStream, name: str, text: str) -> None:
        self._state.actions.append(name, [name])
        await stream.write(text.encode())
        await stream.close()

    async def _rebooting(self, stream: AdbStream) -> None:
        """``reboot:`` (``adb reboot``): the stream closes, then the phone drops off and boots again."""
        self._state.actions.append("reboot", ["reboot"])
        await stream.close()
        self._state.request_reboot()

    async def _framebuffer(self, stream: AdbStream) -> None:
        """``framebuffer:``: a version-2 header (32 bpp RGBA, sRGB) and the raw pixels."""
        self._state.actions.append("framebuffer", ["framebuffer"])
        raw = self._renderer.raw(self._state)
        width, height = struct.unpack("<II", raw[:8])
        pixels = raw[16:]
        header = struct.pack("<14I", 2, 32, 1, len(pixels), width, height, 0, 8, 16, 8, 8, 8, 24, 8)
        await stream.write(header + pixels)
        await stream.close()


# --------------------------------------------------------------------------------------------- transport


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
            self._connect(message)
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

    async def _serve(self, stream: AdbStream, handler: Callable[[AdbStream], Awaitable[None]]) -> None:
        try:
            await handler(stream)
        except StreamClosedError:
            pass
        except Exception:
            log.exception("virtual phone %s: service %r failed", self._phone.adb_serial, stream.destination)
        finally:
            if not stream.closed:
                await stream.close()


# --------------------------------------------------------------------------------------------- phones


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


# --------------------------------------------------------------------------------------------- adb server side


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
