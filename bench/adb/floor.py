"""The floor: bare loops against the same phones and adb server, from this process, one command in flight per
phone like the agent (adbutils from a thread pool of the agent's size and a larger one, the lean client
from threads and on the event loop), the VIEW intent to every phone at once, and one call's latency."""

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import adbutils

from bench.adb.lean import async_lean_shell, lean_shell
from bench.adb.phones import Phones
from bench.adb.whatif import patched
from bench.adb.workload import AGENT_POOL, BIG_POOL, TAP, VIEW, VIEW_COMMAND, Size
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


async def async_loop(port: int, serials: Sequence[str], per_phone: int, in_flight: int) -> float:
    """``command_loop`` without threads: the lean client on the event loop, at most ``in_flight`` at once."""
    gate = asyncio.Semaphore(in_flight)

    async def one(serial: str) -> None:
        for _ in range(per_phone):
            async with gate:
                code, out = await async_lean_shell(port, serial, TAP)
            if code != 0:
                raise RuntimeError(f"{serial}: {TAP} exited {code}: {out}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in serials))
    return time.perf_counter() - t0


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


async def measure_floor(port: int, phones: Phones, size: Size) -> Floor:
    serials = phones.serials
    plain = adbutils_call(port, serials)
    lean = lean_call(port)
    rates: dict[str, float] = {}
    for label, call, pool in ((f"adbutils shell2, {AGENT_POOL} threads (the agent's pool)", plain, AGENT_POOL),
                              (f"adbutils shell2, {BIG_POOL} threads", plain, BIG_POOL),
                              (f"lean shell,v2 client, {AGENT_POOL} threads", lean, AGENT_POOL)):
        marks = await phones.marks()
        seconds = await command_loop(call, serials, size.floor_per_phone, pool)
        done = sum(n for n, _, _ in await phones.scan(marks, TAP))
        assert done == len(serials) * size.floor_per_phone, (label, done)
        rates[label] = done / seconds
    marks = await phones.marks()
    seconds = await async_loop(port, serials, size.floor_per_phone, BIG_POOL)
    done = sum(n for n, _, _ in await phones.scan(marks, TAP))
    assert done == len(serials) * size.floor_per_phone, ("asyncio", done)
    rates[f"lean shell,v2 on the event loop, {BIG_POOL} in flight"] = done / seconds
    views: dict[str, Summary] = {}
    for label, call, pool in ((f"adbutils, {AGENT_POOL} threads", plain, AGENT_POOL),
                              (f"adbutils, {BIG_POOL} threads", plain, BIG_POOL)):
        views[label] = Summary.of([await view_all(call, phones, pool) for _ in range(size.fanouts)])
    latency: dict[str, Summary] = {}
    latency["adbutils shell2 (2 connections, 2 x 10 ms sleep)"] = await one_call_latency(plain, serials[0])
    with patched(frozenset({"no-close-sleep"}), port):
        latency["adbutils shell2 without the close sleep"] = await one_call_latency(plain, serials[0])
        with patched(frozenset({"no-close-sleep", "cache-version"}), port):
            latency["  ... and the version asked once"] = await one_call_latency(plain, serials[0])
    latency["lean shell,v2 (1 connection)"] = await one_call_latency(lean, serials[0])
    return Floor(rates, views, latency)
