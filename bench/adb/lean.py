"""A lean adb client: one connection to the adb server per command, ``shell,v2`` for the exit code. The floor
measures it, and the what-ifs put it in place of adbutils."""

import asyncio
import socket
import struct

import adbutils

from bench.harness import LOOPBACK


def _frame(text: str) -> bytes:
    encoded = text.encode()
    return b"%04x" % len(encoded) + encoded


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the adb server closed the connection")
        data += chunk
    return bytes(data)


def _request(sock: socket.socket, text: str) -> None:
    sock.sendall(_frame(text))
    status = _exactly(sock, 4)
    if status != b"OKAY":
        length = int(_exactly(sock, 4), 16) if status == b"FAIL" else 0
        raise adbutils.AdbError(f"{text}: {status!r} {_exactly(sock, length).decode(errors='replace')}")


def lean_shell(port: int, serial: str, cmd: str, timeout: float | None = 60) -> tuple[int, str]:
    """One connection to the adb server per command: ``host:tport:serial:S`` then ``shell,v2:CMD``; the exit code
    comes in the shell protocol's exit packet, so no ``; echo X4EXIT:$?`` and no second connection."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        _request(sock, f"host:tport:serial:{serial}")
        _exactly(sock, 8)  # transport id
        _request(sock, f"shell,v2:{cmd}")
        out = bytearray()
        while True:
            kind, length = struct.unpack("<BI", _exactly(sock, 5))
            data = _exactly(sock, length)
            if kind == 3:
                return data[0], out.decode(errors="replace")
            if kind in (1, 2):
                out += data


async def _arequest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> None:
    writer.write(_frame(text))
    status = await reader.readexactly(4)
    if status != b"OKAY":
        length = int(await reader.readexactly(4), 16) if status == b"FAIL" else 0
        raise adbutils.AdbError(f"{text}: {status!r} {(await reader.readexactly(length)).decode(errors='replace')}")


async def async_lean_shell(port: int, serial: str, cmd: str) -> tuple[int, str]:
    """``lean_shell`` on the event loop: no thread, no GIL hand-off."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        await _arequest(reader, writer, f"host:tport:serial:{serial}")
        await reader.readexactly(8)
        await _arequest(reader, writer, f"shell,v2:{cmd}")
        out = bytearray()
        while True:
            kind, length = struct.unpack("<BI", await reader.readexactly(5))
            data = await reader.readexactly(length)
            if kind == 3:
                return data[0], out.decode(errors="replace")
            if kind in (1, 2):
                out += data
    finally:
        writer.close()


async def bare_shell(port: int, serial: str, cmd: str, *, v2: bool) -> tuple[int | None, bytes]:
    """The floor: the adb server's smart-socket protocol and nothing else, on the event loop. ``host:transport:S``
    then ``shell:CMD`` read to the end (no exit code: None), or ``shell,v2:CMD`` read to its exit packet."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        await _arequest(reader, writer, f"host:transport:{serial}")
        await _arequest(reader, writer, f"shell,v2:{cmd}" if v2 else f"shell:{cmd}")
        if not v2:
            return None, await reader.read(-1)
        out = bytearray()
        while True:
            kind, length = struct.unpack("<BI", await reader.readexactly(5))
            data = await reader.readexactly(length)
            if kind == 3:
                return data[0], bytes(out)
            if kind in (1, 2):
                out += data
    finally:
        writer.close()


class _BareProtocol(asyncio.Protocol):
    """``bare_shell`` as a protocol parsing bytes as they arrive (what the agent's ``AdbHost.run`` does), so the
    floor is never a client slower than the agent's: ``host:transport:S``, its OKAY, the service, its OKAY, then
    ``shell:`` read to the end or ``shell,v2:`` to its exit packet."""

    def __init__(self, serial: str, cmd: str, v2: bool, done: "asyncio.Future[tuple[int | None, bytes]]") -> None:
        self.second = _frame(f"shell,v2:{cmd}" if v2 else f"shell:{cmd}")
        self.first = _frame(f"host:transport:{serial}")
        self.v2, self.done, self.buffer, self.out, self.okays = v2, done, bytearray(), bytearray(), 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.first)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.okays < 2 and len(self.buffer) >= 4:
            if self.buffer[:4] != b"OKAY":
                self._end(error=adbutils.AdbError(f"refused: {bytes(self.buffer)!r}"))
                return
            del self.buffer[:4]
            self.okays += 1
            if self.okays == 1 and self.transport is not None:
                self.transport.write(self.second)
        if self.okays < 2 or not self.v2:
            return
        while len(self.buffer) >= 5:
            kind, length = struct.unpack_from("<BI", self.buffer)
            if len(self.buffer) < 5 + length:
                return
            if kind == 3:
                self._end(result=(self.buffer[5], bytes(self.out)))
                return
            if kind in (1, 2):
                self.out += self.buffer[5:5 + length]
            del self.buffer[:5 + length]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.okays == 2 and not self.v2:  # the legacy shell's output ends with its connection
            self._end(result=(None, bytes(self.buffer)))
        else:
            self._end(error=adbutils.AdbError("the adb server hung up"))

    def _end(self, *, result: tuple[int | None, bytes] | None = None, error: Exception | None = None) -> None:
        if not self.done.done():
            if result is not None:
                self.done.set_result(result)
            else:
                self.done.set_exception(error or adbutils.AdbError("ended"))
        if self.transport is not None:
            self.transport.close()



async def bare_protocol_shell(port: int, serial: str, cmd: str, *, v2: bool) -> tuple[int | None, bytes]:
    """``bare_shell`` through ``_BareProtocol``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int | None, bytes]] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _BareProtocol(serial, cmd, v2, done), LOOPBACK, port)
    try:
        return await done
    finally:
        transport.close()
