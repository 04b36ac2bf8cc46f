"""What one command of the virtual sh sees: its streams, its working directory, and how it fails."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from phonefleet.virtual.state import VirtualFileSystem


class CommandError(Exception):
    """A command failed with a message for stderr; lets helpers bail out without threading status codes."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class OutputSink(Protocol):
    async def write(self, data: bytes) -> None: ...


class StdinSource(Protocol):
    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all of them until end of input when -1); fewer only at end of input."""
        ...


class BufferSink:
    """Collects output: between the commands of a pipeline, and for ``> file``."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


class NullSink:
    """``/dev/null``."""

    async def write(self, data: bytes) -> None:
        return None


class BytesStdin:
    """Input that is already known: the output of the previous command of a pipeline, or none."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = data
        self._pos = 0

    async def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk


@dataclass
class CommandIO:
    """What one command sees: its three streams and the working directory of the session."""

    stdin: StdinSource
    stdout: OutputSink
    stderr: OutputSink
    cwd: str = "/"

    async def out(self, text: str | bytes) -> None:
        await self.stdout.write(text.encode() if isinstance(text, str) else text)

    async def err(self, text: str | bytes) -> None:
        await self.stderr.write(text.encode() if isinstance(text, str) else text)

    def path(self, name: str) -> str:
        return VirtualFileSystem.normalize(name, self.cwd)


Handler = Callable[[list[str], CommandIO], Awaitable[int]]
"""A command: its arguments (without its name) and its streams in, its exit status out."""
