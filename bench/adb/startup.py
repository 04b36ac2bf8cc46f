"""``python -m bench.adb.startup [PHONES]``: where the agent's start-up goes with many phones. Virtual phones on a
private adb server; per bound on concurrent probes, ``adb list`` and ``DeviceTracker._resync`` (list, probe every
phone online, report the full list to a listener that does nothing), timed. No phonefleet server: the hello and
the server's registration are measured by ``python -m bench.adb`` (``all N idle in the DB``)."""

import asyncio
import os
import socket
import sys
import time

import adbutils

from bench.harness import LOOPBACK
from phonefleet.agent.devices import DeviceTracker
from phonefleet.protocol import events as ev
from phonefleet.virtual import LocalAdbServer, VirtualFleet

BOUNDS = (32, 64, 128)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def _nothing(reports: list[ev.DeviceReport], full: bool) -> None:
    del reports, full


async def main(phones: int) -> None:
    print(f"== agent start-up with {phones} virtual phones: adb list, then a probe of every phone")
    print("command: python -m bench.adb.startup " + str(phones))
    print("load average before the run: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    port = _free_port()
    async with LocalAdbServer(port):
        fleet = VirtualFleet(phones, adb_port=port)
        await fleet.start()
        try:
            client = adbutils.AdbClient(host=LOOPBACK, port=port)
            for bound in BOUNDS:
                t0 = time.perf_counter()
                listed = await asyncio.to_thread(client.list)
                listing = time.perf_counter() - t0
                tracker = DeviceTracker(client, _nothing, probe_sec=3600, max_probes=bound)
                t0 = time.perf_counter()
                await tracker._resync()
                resync = time.perf_counter() - t0
                print(f"max_probes {bound:4d}: adb list {listing * 1e3:5.0f} ms ({len(listed)} phones); list + probe "
                      f"every phone + the full report {resync:5.2f} s")
        finally:
            await fleet.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
