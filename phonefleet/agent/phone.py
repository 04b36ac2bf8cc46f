"""A phone as the plan runner sees it: commands on the event loop through the adb server's own protocol
(``adbhost``): no thread and no sleep per command, and a timeout or a cancel closes the connection at once.
Only a push goes through adbutils (its sync protocol), in a worker thread.

(The health probe does not come through here: it speaks to ``adbhost`` itself.)
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from phonefleet.agent.adbhost import SHELL_V2, AdbHost, AdbHostError

EXIT_MARK = b"\x1ephonefleet-exit:"
"""Printed after a streamed command with its exit status (the legacy shell service carries none of its own)."""
OUTPUT_LIMIT = 64 * 1024 * 1024
"""A command printing more than this (a runaway logcat) fails rather than filling the agent's memory."""
PUSH_REPORT_BYTES = 256 * 1024
"""A push says how far it is at most once per this many bytes."""

Progress = Callable[[int, int | None], None]
"""Bytes done so far, and of how many (None: not known)."""


class AdbPhone:
    """One phone's commands through ``AdbHost``; ``device`` (an ``adbutils.AdbDevice``) serves pushes only."""

    def __init__(self, device: Any, host: AdbHost) -> None:
        self.device = device
        self.serial: str = device.serial
        self.host = host

    async def shell(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        """Run a command: its exit code and output (stdout and stderr). Through the shell protocol when the
        phone speaks it (one connection, the exit code in a packet), else the legacy shell with the exit status
        printed after the output. Not ending within ``timeout`` seconds is an ``AdbHostError`` (a bare
        ``TimeoutError`` would read as the whole run's timeout)."""
        async with _within(command, timeout):  # one bound for the features question and the command
            if SHELL_V2 in await self.host.features(self.serial):
                code, output = await self.host.run(self.serial, command, limit=OUTPUT_LIMIT)
                return code, output.decode("utf-8", "replace")
            return await self.shell_stream(command, lambda _line: None)

    async def shell_stream(self, command: str, on_line: Callable[[str], None],
                           timeout: float | None = None) -> tuple[int, str]:
        """Run a command and hand each line of its output to ``on_line`` as the phone prints it; its exit code and
        whole output at the end. No thread waits on it: a cancel (an abort) closes the connection at once and
        the phone ends the command. Not ending within ``timeout`` seconds is an ``AdbHostError``."""
        output = bytearray()
        lines = _Lines(on_line)
        async with _within(command, timeout):
            chunks = self.host.stream(self.serial, f"shell:{command}; echo {EXIT_MARK.decode()}$?")
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    output += chunk
                    lines.feed(chunk)
        lines.end()
        mark = output.rfind(EXIT_MARK)
        if mark < 0:
            raise AdbHostError(f"`{command[:200]}` ended without its exit status (the phone hung up)")
        try:
            code = int(output[mark + len(EXIT_MARK):].strip() or b"-1")
        except ValueError:
            code = -1
        return code, output[:mark].decode("utf-8", "replace")

    async def shell_bytes(self, command: str, timeout: float | None = None) -> bytes:
        """A command's stdout as bytes, untouched (``exec:``, as ``adb exec-out``: a screencap's PNG); no exit
        code. Not ending within ``timeout`` seconds is an ``AdbHostError``."""
        async with _within(command, timeout):
            return await self.host.service(self.serial, f"exec:{command}", limit=OUTPUT_LIMIT)

    async def push(self, local: Path, remote: str, progress: Progress | None = None) -> None:
        """Copy a file to the phone; ``progress`` hears the bytes sent so far (on the loop, never per chunk)."""
        loop = asyncio.get_running_loop()

        def push() -> None:
            with local.open("rb") as f:
                source: BinaryIO = f
                if progress is not None:
                    total = local.stat().st_size
                    counting = _Counting(f, lambda done: loop.call_soon_threadsafe(progress, done, total))
                    source = cast(BinaryIO, counting)  # adbutils only reads it
                self.device.sync.push(source, remote)

        await asyncio.to_thread(push)


@contextlib.asynccontextmanager
async def _within(command: str, timeout: float | None) -> AsyncIterator[None]:
    """Bound a command's time; running out is an ``AdbHostError`` naming it, never a bare ``TimeoutError`` (the
    runner would read that as the whole run's timeout)."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise AdbHostError(f"`{command[:200]}` did not end within {timeout:g} s") from None


class _Lines:
    """Splits streamed output into lines for a listener; the exit mark and what follows it are never a line."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.partial = b""

    def feed(self, chunk: bytes) -> None:
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        for line in complete:
            self._say(line)

    def end(self) -> None:
        if self.partial:
            self._say(self.partial)
        self.partial = b""

    def _say(self, line: bytes) -> None:
        mark = line.find(EXIT_MARK)
        if mark >= 0:
            line = line[:mark]
            if not line:
                return
        self.on_line(line.decode("utf-8", "replace").rstrip("\r"))


class _Counting:
    """A file that tells how much of it was read, at most once per ``PUSH_REPORT_BYTES``, and at its end."""

    def __init__(self, f: BinaryIO, report: Callable[[int], object]) -> None:
        self.f = f
        self.report = report
        self.done = 0
        self.told = 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.done += len(data)
        if self.done - self.told >= PUSH_REPORT_BYTES or (not data and self.done != self.told):
            self.told = self.done
            self.report(self.done)
        return data
