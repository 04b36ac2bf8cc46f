"""The services a virtual phone answers on an OPENed stream: ``shell:``, ``shell,v2,...:`` (exit codes),
``exec:``, ``sync:`` (push, pull, stat) and ``reboot:`` (``adb reboot``). Other destinations are refused, as adbd
refuses what it lacks."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import struct
import time
from dataclasses import dataclass

from phonefleet.virtual.adbd import AdbStream, Service, StreamInbox
from phonefleet.virtual.commandio import CommandIO, StdinSource
from phonefleet.virtual.faults import Fault
from phonefleet.virtual.screen import ScreenRenderer
from phonefleet.virtual.shell import VirtualShell
from phonefleet.virtual.state import PhoneState

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024

# shell protocol (shell_v2) packet ids
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINDOW_SIZE = range(6)


class StreamSink:
    """A shell's stdout or stderr on a stream: raw bytes, or shell-protocol packets of the given id (shell_v2)."""

    def __init__(self, stream: AdbStream, packet_id: int | None) -> None:
        self._stream = stream
        self._packet_id = packet_id

    async def write(self, data: bytes) -> None:
        if not data:
            return
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


@dataclass(frozen=True)
class ShellRequest:
    """A parsed ``shell[,v2][,raw|pty][,TERM=...]:command`` or ``exec:command`` destination."""

    service: str
    command: str
    v2: bool

    @classmethod
    def parse(cls, destination: str) -> ShellRequest | None:
        head, _, command = destination.partition(":")
        name, *options = head.split(",")
        if name == "exec":
            return cls("exec", command, v2=False)
        if name != "shell":
            return None
        v2 = "v2" in options
        return cls("shell,v2" if v2 else "shell", command, v2=v2)


class ShellService:
    """Runs the request's command line on the fake sh; a session without one (``adb shell`` by hand) ends at
    once with status 0: no client of phonefleet opens one. A phone with the ``hang`` fault never answers."""

    def __init__(self, state: PhoneState, renderer: ScreenRenderer) -> None:
        self._state = state
        self._renderer = renderer

    async def serve(self, stream: AdbStream, request: ShellRequest) -> None:
        if self._state.fault is Fault.hang:  # never answers: cancelled when the host hangs up
            await asyncio.Event().wait()
        shell = VirtualShell(self._state, request.service, self._renderer)
        stdout = StreamSink(stream, SHELL_STDOUT if request.v2 else None)
        stderr = StreamSink(stream, SHELL_STDERR) if request.v2 else stdout
        stdin: StdinSource = ShellProtocolStdin(stream.inbox) if request.v2 else stream.inbox
        status = await shell.run(request.command, CommandIO(stdin, stdout, stderr)) if request.command else 0
        if request.v2:
            await stdout.exit(status)
        await stream.close()


class SyncService:
    """``sync:``: STAT/SEND/RECV/QUIT and the stat_v2 forms (STA2, LST2) on the in-memory files."""

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
        elif ident == b"SEND":
            return await self._receive(stream, path)
        elif ident == b"RECV":
            return await self._send(stream, path)
        else:
            await self._fail(stream, f"unknown sync command {ident!r}")
            return False
        return True

    def _stat_v2(self, ident: bytes, path: str) -> bytes:
        found = self._fs.stat(path)
        if found is None:
            return self.STAT_V2.pack(ident, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # errno 2: ENOENT
        inode = hash(self._fs.normalize(path)) & 0xFFFFFFFF
        nlink = 2 if stat.S_ISDIR(found.mode) else 1
        return self.STAT_V2.pack(ident, 0, 0xFD00, inode, found.mode, nlink, 2000, 2000, found.size,
                                 found.mtime, found.mtime, found.mtime)  # fmt: skip

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


class RebootService:
    """``reboot:[TARGET]``: adbd itself reboots the phone (no shell involved, so a hung phone takes it too); the
    stream closes with nothing said, as adbd's does. Every target (``bootloader``, ``recovery``) boots Android."""

    def __init__(self, state: PhoneState) -> None:
        self._state = state

    async def serve(self, stream: AdbStream, target: str) -> None:
        self._state.actions.append("reboot", [target] if target else [])
        self._state.request_reboot()
        await stream.close()


class ServiceRouter:
    """Maps an OPEN destination to the service that serves it; unknown destinations are refused with CLSE."""

    def __init__(self, state: PhoneState, renderer: ScreenRenderer) -> None:
        self._shell = ShellService(state, renderer)
        self._sync = SyncService(state)
        self._reboot = RebootService(state)

    def route(self, destination: str) -> Service | None:
        request = ShellRequest.parse(destination)
        if request is not None:
            return lambda stream: self._shell.serve(stream, request)
        name, _, argument = destination.partition(":")
        if name == "sync":
            return self._sync.serve
        if name == "reboot":
            target = argument.rstrip("\0")
            return lambda stream: self._reboot.serve(stream, target)
        return None

