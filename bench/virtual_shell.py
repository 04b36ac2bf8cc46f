"""Sequential ``shell`` calls through the real adb server to one virtual phone, as ``tests/test_virtual_phone.py``
makes them (adbutils ``device.shell`` from a worker thread), against the floor: the same number of adb server
round trips that reach no phone (``host:version``).

    python -m bench.virtual_shell [--calls 100] [--runs 5]
"""

import argparse
import asyncio
import os
import platform
import socket
import time
from collections.abc import Callable

import adbutils

from bench.harness import Summary, command, verdict
from phonefleet.virtual import LocalAdbServer, VirtualFleet

MODULE = "bench.virtual_shell"
GOAL_SEC = 15.0  # the bound tests/test_virtual_phone.py held 100 calls to, before timing left the tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def timed(calls: int, call: Callable[[], object]) -> list[float]:
    """Seconds per call, one call after another on this thread."""
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return took


async def main_async(calls: int, runs: int) -> None:
    async with LocalAdbServer(free_port()) as server, VirtualFleet(1, adb_port=server.port) as fleet:
        client = adbutils.AdbClient(host="127.0.0.1", port=server.port)
        device = client.device(fleet.phones[0].adb_serial)
        await asyncio.to_thread(timed, 10, lambda: device.shell("echo warm"))  # warm-up, not counted
        shell: list[float] = []
        floor: list[float] = []
        for run in range(1, runs + 1):
            took = await asyncio.to_thread(timed, calls, lambda: device.shell("echo hi"))
            floor += await asyncio.to_thread(timed, calls, client.server_version)
            shell += took
            total = sum(took)
            print(f"run {run}: {calls} shell calls in {total:.2f} s  ({verdict(total, GOAL_SEC)} of {GOAL_SEC:.0f} s)")
        print(f"shell call, per call:          {Summary.of(shell).ms()}")
        print(f"floor (host:version), per call: {Summary.of(floor).ms()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"== sequential shell calls to one virtual phone\ncommand: {command(MODULE)}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; load average before: {load}")
    asyncio.run(main_async(args.calls, args.runs))


if __name__ == "__main__":
    main()
