"""The virtual phones the agent drives: on the agent's own loop (as ``phonefleet-agent --virtual N`` runs them),
or in a child process of their own (``--phones-apart``), their action logs read over a pipe."""

import asyncio
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Protocol

from phonefleet.virtual import VirtualFleet, VirtualPhone

Hits = list[tuple[int, float, float]]  # per phone: matching records since the mark, first and last time.time()


def _scan(phones: Sequence[VirtualPhone], marks: Sequence[int], needle: str) -> Hits:
    out: Hits = []
    for phone, mark in zip(phones, marks, strict=True):
        log = phone.actions
        dropped = len(log) - len(log.records)
        stamps = [r.timestamp for r in log.records[max(0, mark - dropped):] if needle in r.command]
        out.append((len(stamps), min(stamps, default=float("nan")), max(stamps, default=float("nan"))))
    return out


async def _wait_all(phones: Sequence[VirtualPhone], marks: Sequence[int], needle: str, timeout: float) -> list[float]:
    """Each phone's first record holding ``needle`` since its mark (waiting for it; event-driven, no polling)."""
    records = await asyncio.gather(*(p.actions.wait_for(lambda r: needle in r.command, timeout, since=m)
                                     for p, m in zip(phones, marks, strict=True)))
    return [r.timestamp for r in records]


class Phones(Protocol):
    serials: list[str]
    pid: int

    async def marks(self) -> list[int]: ...

    async def scan(self, marks: Sequence[int], needle: str) -> Hits: ...

    async def wait_all(self, marks: Sequence[int], needle: str, timeout: float) -> list[float]: ...

    async def stop(self) -> None: ...


class LocalPhones:
    """A ``VirtualFleet`` on this process' loop, as ``phonefleet-agent --virtual N`` runs it."""

    def __init__(self, fleet: VirtualFleet) -> None:
        self.fleet = fleet
        self.serials = fleet.serials
        self.pid = os.getpid()

    @classmethod
    async def start(cls, count: int, adb_port: int) -> "LocalPhones":
        fleet = VirtualFleet(count, adb_port=adb_port)
        await fleet.start()
        return cls(fleet)

    async def marks(self) -> list[int]:
        return [len(p.actions) for p in self.fleet.phones]

    async def scan(self, marks: Sequence[int], needle: str) -> Hits:
        return _scan(self.fleet.phones, marks, needle)

    async def wait_all(self, marks: Sequence[int], needle: str, timeout: float) -> list[float]:
        return await _wait_all(self.fleet.phones, marks, needle, timeout)

    async def stop(self) -> None:
        await self.fleet.stop()


def _phone_host(count: int, adb_port: int, pipe: Connection) -> None:
    asyncio.run(_phone_host_async(count, adb_port, pipe))


async def _phone_host_async(count: int, adb_port: int, pipe: Connection) -> None:
    fleet = VirtualFleet(count, adb_port=adb_port)
    try:
        await fleet.start()
    except Exception as exc:
        pipe.send(("error", repr(exc)))
        return
    pipe.send(("ready", fleet.serials, os.getpid()))
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as reader:
        while True:
            request = await loop.run_in_executor(reader, pipe.recv)
            if request[0] == "stop":
                break
            try:
                if request[0] == "marks":
                    result: Any = [len(p.actions) for p in fleet.phones]
                elif request[0] == "scan":
                    result = _scan(fleet.phones, request[1], request[2])
                else:
                    result = await _wait_all(fleet.phones, request[1], request[2], request[3])
            except Exception as exc:
                pipe.send(("error", repr(exc)))
            else:
                pipe.send(("ok", result))
    await fleet.stop()
    pipe.send(("stopped",))


class RemotePhones:
    """A ``VirtualFleet`` in a spawned child process of its own; its action logs are read over a pipe."""

    def __init__(self, count: int, adb_port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_phone_host, args=(count, adb_port, child), name="virtual-phones",
                                 daemon=True)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="phones-pipe")  # never the agent's executor
        self._lock = asyncio.Lock()
        self.serials: list[str] = []
        self.pid = 0

    @classmethod
    async def start(cls, count: int, adb_port: int) -> "RemotePhones":
        self = cls(count, adb_port)
        self._proc.start()
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(self._reader, self._pipe.poll, 120):
            self._proc.kill()
            raise RuntimeError("the virtual phones' process did not start")
        reply = self._pipe.recv()
        if reply[0] != "ready":
            raise RuntimeError(f"virtual phones: {reply}")
        _, self.serials, self.pid = reply
        return self

    async def _call(self, *request: Any) -> Any:
        async with self._lock:
            self._pipe.send(request)
            reply = await asyncio.get_running_loop().run_in_executor(self._reader, self._pipe.recv)
        if reply[0] != "ok":
            raise RuntimeError(f"virtual phones: {reply}")
        return reply[1]

    async def marks(self) -> list[int]:
        marks: list[int] = await self._call("marks")
        return marks

    async def scan(self, marks: Sequence[int], needle: str) -> Hits:
        hits: Hits = await self._call("scan", list(marks), needle)
        return hits

    async def wait_all(self, marks: Sequence[int], needle: str, timeout: float) -> list[float]:
        stamps: list[float] = await self._call("wait", list(marks), needle, timeout)
        return stamps

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._proc.is_alive():
            self._pipe.send(("stop",))
            if await loop.run_in_executor(self._reader, self._pipe.poll, 60):
                self._pipe.recv()
            await loop.run_in_executor(self._reader, self._proc.join, 10)
        if self._proc.is_alive():
            self._proc.kill()
        self._reader.shutdown(wait=False)
