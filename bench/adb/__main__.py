"""``python -m bench.adb``: per size, a fresh database, server, adb server and phones; the agent, then the floor."""

import argparse
import asyncio
import os
import platform
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import adbutils

import bench.adb
from bench.adb.agent_run import measure_agent
from bench.adb.cpu import CpuMeter, adb_server_pid
from bench.adb.floor import measure_floor
from bench.adb.phones import LocalPhones, Phones, RemotePhones
from bench.adb.report import SizeRun, print_size
from bench.adb.whatif import WHAT_IF, patched
from bench.adb.workload import AGENT_POOL, BIG_POOL, MODULE, Size, sizes
from bench.harness import LOOPBACK, command, database_facts, postgres_root, run, running_server, scratch_database
from phonefleet.virtual import LocalAdbServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def measure(root: str, size: Size, args: argparse.Namespace, what_if: frozenset[str]) -> SizeRun:
    port = _free_port()
    started = time.perf_counter()
    async with scratch_database(root) as dsn, running_server(dsn) as server, LocalAdbServer(port) as adb:
        t = time.perf_counter()
        phones: Phones = await (RemotePhones.start(size.phones, port) if args.phones_apart
                                else LocalPhones.start(size.phones, port))
        fleet_sec = time.perf_counter() - t
        adb_pid = adb_server_pid(port)
        pids = {"this process (agent" + (")" if args.phones_apart else " + phones)"): os.getpid(),
                "adb server": adb_pid or -1, "phonefleet server": server.pid}
        if args.phones_apart:
            pids["virtual phones' process"] = phones.pid
        try:
            with tempfile.TemporaryDirectory(prefix="pfbench-agent-") as tmp, patched(what_if, port):
                got = await measure_agent(server.url, dsn, port, phones, size=size, state_dir=Path(tmp),
                                          profile=args.profile, meter=CpuMeter(pids), probe_sec=args.probe_sec)
            floor = await measure_floor(adb.port, phones, size)
        finally:
            await phones.stop()
    return SizeRun(size, port, adb_pid, args.phones_apart, args.probe_sec, fleet_sec, got, floor, started)


async def main_async(args: argparse.Namespace) -> None:
    what_if = frozenset(x.strip() for x in str(args.what_if).split(",") if x.strip())
    unknown = what_if - set(WHAT_IF)
    if unknown:
        raise SystemExit(f"unknown --what-if {sorted(unknown)}; choose from {sorted(WHAT_IF)}")
    for name in sorted(what_if):
        print(f"what-if: {name}: {WHAT_IF[name]}")
    if "pool-64" in what_if:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(BIG_POOL, thread_name_prefix="asyncio"))
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
        for size in sizes(quick=args.quick, phones=args.phones):
            print_size(await measure(root, size, args, what_if))


def parse_args() -> argparse.Namespace:
    description = (bench.adb.__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog=MODULE, description=description)
    parser.add_argument("--quick", action="store_true", help="20 and 100 phones, short jobs")
    parser.add_argument("--phones", type=int, action="append", help="only this size (repeatable)")
    parser.add_argument("--phones-apart", action="store_true",
                        help="virtual phones in a child process of their own instead of the agent's process")
    parser.add_argument("--profile", action="store_true",
                        help="sample this process with py-spy during the throughput jobs (figures slightly lower)")
    parser.add_argument("--probe-sec", type=float, default=3600.0,
                        help="the agent's health-probe interval (default: none during the run; the agent's own "
                             "default is 30 s, and a round probes every phone one after another)")
    parser.add_argument("--what-if", default="", metavar="A,B",
                        help="agent-side changes tried from the outside: "
                             + "; ".join(f"{k}: {v}" for k, v in WHAT_IF.items()))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print("== PC agent over ADB: adb commands/s and open_url fan-out through the real adb server")
    print(f"command: {command(MODULE)}")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}, "
          f"adbutils {adbutils.__version__}, agent pool (asyncio default executor) {AGENT_POOL} threads")
    print("layout: phonefleet server in a child process; adb server (adbutils' binary) on a free port; "
          + ("virtual phones in a child process; agent + driver in this process"
             if args.phones_apart else "agent + its virtual phones + driver in this process (one event loop)"))
    print("load average before the run: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    sys.stdout.flush()
    run(main_async(args), limit_sec=900)


if __name__ == "__main__":
    main()
