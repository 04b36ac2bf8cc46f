"""The floor: bare loops against the same phones and adb server, from this process, one command in flight per
phone like the agent. The floor proper is a bare asyncio client of the adb server's smart-socket protocol
(``host:transport:SERIAL`` then ``shell:`` or ``shell,v2:``) with at most 50 and 200 commands in flight, in two
forms (asyncio streams, and a protocol parsing bytes as they arrive, as the agent's client does), the best of
them the floor; beside it
adbutils from a pool of the old agent's size (what the agent ran before issue 14), the VIEW intent to every
phone at once, and one call's latency."""

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import adbutils

from bench.adb.lean import bare_protocol_shell, bare_shell, lean_shell
from bench.adb.phones import Phones
from bench.adb.whatif import patched
from bench.adb.workload import AGENT_POOL, TAP, VIEW, VIEW_COMMAND, Size
from bench.harness import LOOPBACK, Summary

Call = Callable[[str, str], tuple[int, str]]


def adbutils_call(port: int, serials: Sequence[str]) -> Call:
    client = adbutils.AdbClient(host=LOOPBACK, port=port)
    devices = {s: client.device(s) for s in serials}

    def call(serial: str, cmd: str) -> tuple[int, str]:
        result = devices[serial].shell2(cmd, timeout=60)  # what AdbPhone.shell runs
        return int(result.returncode), str(result.output)

    return call


def lean_call(port: int) -> Call:
    def call(serial: str, cmd: str) -> tuple[int, str]:
        return lean_shell(port, serial, cmd)

    return call


async def command_loop(call: Call, serials: Sequence[str], per_phone: int, pool: int) -> float:
    """Every phone ``per_phone`` taps, one in flight per phone (as the agent's workers do); returns seconds."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(pool, thread_name_prefix="floor") as executor:
        async def one(serial: str) -> None:
            for _ in range(per_phone):
                code, out = await loop.run_in_executor(executor, call, serial, TAP)
                if code != 0:
                    raise RuntimeError(f"{serial}: {TAP} exited {code}: {out}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(s) for s in serials))
        return time.perf_counter() - t0


BARE_IN_FLIGHT = (50, 200)
BARE_COMMANDS = 3000
"""The bare loops run at least this many commands (a loop of a second or more at the floor's rate)."""


CLIENTS = {"asyncio": bare_shell, "asyncio protocol": bare_protocol_shell}
"""The bare clients: asyncio streams, and a protocol parsing bytes as they arrive (as the agent's client does)."""


def bare_label(in_flight: int, v2: bool, client: str = "asyncio") -> str:
    return f"bare {client} {'shell,v2' if v2 else 'shell'}, {in_flight} in flight"


async def bare_loop(port: int, serials: Sequence[str], per_phone: int, in_flight: int, v2: bool, *,
                    client: str = "asyncio") -> float:
    """``command_loop`` without threads: a bare client on the event loop, at most ``in_flight`` at once."""
    gate = asyncio.Semaphore(in_flight)
    shell = CLIENTS[client]

    async def one(serial: str) -> None:
        for _ in range(per_phone):
            async with gate:
                code, out = await shell(port, serial, TAP, v2=v2)
            if code not in (0, None):
                raise RuntimeError(f"{serial}: {TAP} exited {code}: {out!r}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in serials))
    return time.perf_counter() - t0


async def bare_view_all(port: int, phones: Phones, in_flight: int, client: str = "asyncio") -> float:
    """The VIEW intent to every phone at once from a bare client, at most ``in_flight`` at once; seconds until
    the last phone logged it."""
    gate = asyncio.Semaphore(in_flight)
    shell = CLIENTS[client]

    async def one(serial: str) -> None:
        async with gate:
            await shell(port, serial, VIEW_COMMAND, v2=False)

    marks = await phones.marks()
    t0 = time.time()
    await asyncio.gather(*(one(s) for s in phones.serials))
    stamps = await phones.wait_all(marks, VIEW, 30)
    return max(stamps) - t0


async def view_all(call: Call, phones: Phones, pool: int) -> float:
    """The VIEW intent to every phone at once; seconds until the last phone logged it (as the agent's figure)."""
    loop = asyncio.get_running_loop()
    marks = await phones.marks()
    with ThreadPoolExecutor(pool, thread_name_prefix="floor") as executor:
        t0 = time.time()
        await asyncio.gather(*(loop.run_in_executor(executor, call, s, VIEW_COMMAND) for s in phones.serials))
    stamps = await phones.wait_all(marks, VIEW, 30)
    return max(stamps) - t0


async def one_call_latency(call: Call, serial: str, calls: int = 30) -> Summary:
    """One thread, one phone, nothing else running: seconds per command."""
    def timed() -> float:
        t0 = time.perf_counter()
        code, _ = call(serial, TAP)
        assert code == 0
        return time.perf_counter() - t0

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="floor") as executor:
        await loop.run_in_executor(executor, timed)
        return Summary.of([await loop.run_in_executor(executor, timed) for _ in range(calls)])


@dataclass
class Floor:
    rates: dict[str, float]  # label -> commands/s
    views: dict[str, Summary]  # label -> seconds until every phone logged its VIEW
    latency: dict[str, Summary]  # label -> seconds per call, one thread
    bare_per_phone: int = 0

    @property
    def best_rate(self) -> tuple[str, float]:
        """The bare client's best rate: the floor the agent is a ratio of."""
        return max(((k, v) for k, v in self.rates.items() if k.startswith("bare")), key=lambda kv: kv[1])

    @property
    def best_view(self) -> tuple[str, Summary]:
        """The bare client's fastest VIEW to every phone (by p50)."""
        return min(((k, v) for k, v in self.views.items() if k.startswith("bare")), key=lambda kv: kv[1].p50)


async def measure_floor(port: int, phones: Phones, size: Size) -> Floor:
    serials = phones.serials
    plain = adbutils_call(port, serials)
    lean = lean_call(port)
    rates: dict[str, float] = {}
    bare_per_phone = max(size.floor_per_phone, -(-BARE_COMMANDS // len(serials)))
    for client in CLIENTS:
        for in_flight in BARE_IN_FLIGHT:
            for v2 in (False, True):
                marks = await phones.marks()
                seconds = await bare_loop(port, serials, bare_per_phone, in_flight, v2, client=client)
                done = sum(n for n, _, _ in await phones.scan(marks, TAP))
                assert done == len(serials) * bare_per_phone, (client, in_flight, v2, done)
                rates[bare_label(in_flight, v2, client)] = done / seconds
    label = f"adbutils shell2, {AGENT_POOL} threads (the agent before issue 14)"
    marks = await phones.marks()
    seconds = await command_loop(plain, serials, size.floor_per_phone, AGENT_POOL)
    done = sum(n for n, _, _ in await phones.scan(marks, TAP))
    assert done == len(serials) * size.floor_per_phone, (label, done)
    rates[label] = done / seconds
    views: dict[str, Summary] = {}
    for client in CLIENTS:
        for in_flight in BARE_IN_FLIGHT:
            views[bare_label(in_flight, False, client)] = Summary.of(
                [await bare_view_all(port, phones, in_flight, client) for _ in range(size.fanouts)])
    views[f"adbutils, {AGENT_POOL} threads"] = Summary.of(
        [await view_all(plain, phones, AGENT_POOL) for _ in range(size.fanouts)])
    latency: dict[str, Summary] = {}
    latency["adbutils shell2 (2 connections, 2 x 10 ms sleep)"] = await one_call_latency(plain, serials[0])
    with patched(frozenset({"no-close-sleep"}), port):
        latency["adbutils shell2 without the close sleep"] = await one_call_latency(plain, serials[0])
    latency["lean shell,v2 (1 connection), from a thread"] = await one_call_latency(lean, serials[0])
    return Floor(rates, views, latency, bare_per_phone)
