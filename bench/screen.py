"""The live screen: frames per second, tap-to-changed-frame latency, CPU per stream and bytes per frame.

Four processes, so each one's CPU is its own: the server (a child, default settings), the real agent (a child,
``virtual=0``: it drives the phones through the adb server as it would USB phones), the virtual phones (a
child: their ``screencap`` PNG encoding is the phones' cost, not the agent's), and this driver with the viewers
(``ScreenViewer``: /dashboard sockets that watch and tap as the browser does, acknowledging each frame).

1. One phone, 1 viewer, then 10 viewers: frames/s while its picture changes at every capture (``animate``: a
   moving block in the status bar), then ``--taps`` taps sent through the server (``screen:input`` from the
   controlling viewer) on a still screen, each timed from the emit to the changed frame arriving at every viewer.
2. ``--phones`` phones watched at once (one viewer socket watching all, as a fleet grid would), every picture
   changing: frames/s per phone, CPU of server, agent and phones per stream, bytes per frame.
Goals (issue 12): tap-to-frame p99 <= 500 ms on virtual phones; >= 2 frames/s per phone with 20 watched.
"""

import argparse
import asyncio
import functools
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench.harness import (
    ADMIN,
    LOOPBACK,
    Summary,
    agent_token,
    postgres_root,
    print_header,
    run,
    running_server,
    scratch_database,
    session,
    verdict,
)
from phonefleet.sim.screen_viewer import ScreenViewer
from phonefleet.virtual import LocalAdbServer

MODULE = "bench.screen"
GOAL_TAP_P99_SEC = 0.5
GOAL_FPS = 2.0


# ---------------------------------------------------------------------- child processes


def _phones_main(count: int, adb_port: int, pipe: Connection) -> None:
    asyncio.run(_phones(count, adb_port, pipe))


async def _phones(count: int, adb_port: int, pipe: Connection) -> None:
    import os

    from phonefleet.virtual import VirtualFleet

    fleet = VirtualFleet(count, adb_port=adb_port)
    await fleet.start()
    pipe.send(("ready", os.getpid(), fleet.serials))
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, pipe.recv)
        if message == "stop":
            break
        _, serials, on = message
        for phone in fleet.phones:
            if phone.adb_serial in serials:
                phone.state.animate = on
        pipe.send("ok")
    await fleet.stop()
    pipe.send("stopped")


def _agent_main(server_url: str, token: str, adb_port: int, state_dir: str, pipe: Connection) -> None:
    asyncio.run(_agent(server_url, token, adb_port, state_dir, pipe))


async def _agent(server_url: str, token: str, adb_port: int, state_dir: str, pipe: Connection) -> None:
    import os

    from phonefleet.agent.agent import Agent
    from phonefleet.agent.config import AgentSettings
    from phonefleet.logs import setup_logging

    setup_logging("WARNING")
    agent = Agent(AgentSettings(server=server_url, token=token, state_dir=Path(state_dir), virtual=0,
                                adb_port=adb_port))
    await agent.start()
    pipe.send(("ready", os.getpid()))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await agent.stop()
    pipe.send("stopped")


class Child:
    def __init__(self, target: Any, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(*args, child), daemon=True)

    async def start(self, timeout: float = 120) -> tuple[Any, ...]:
        self.proc.start()
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.pipe.poll, timeout):
            self.proc.kill()
            raise RuntimeError("child did not start")
        ready: tuple[Any, ...] = self.pipe.recv()
        return ready

    async def ask(self, message: Any) -> Any:
        self.pipe.send(message)
        return await asyncio.get_running_loop().run_in_executor(None, self.pipe.recv)

    async def stop(self) -> None:
        if self.proc.is_alive():
            self.pipe.send("stop")
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(None, self.pipe.poll, 30):
                self.pipe.recv()
            await loop.run_in_executor(None, self.proc.join, 10)
        if self.proc.is_alive():
            self.proc.kill()


class Cpu:
    """CPU seconds of named processes between two readings."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start: dict[str, float] = {}
        self.t0 = 0.0

    @staticmethod
    def _used(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    def begin(self) -> None:
        self.t0 = time.perf_counter()
        self.start = {n: self._used(p) for n, p in self.procs.items()}

    def end(self) -> dict[str, float]:
        """Each process's share of one core over the span (1.0 = a whole core)."""
        wall = time.perf_counter() - self.t0
        return {n: (self._used(p) - self.start[n]) / wall for n, p in self.procs.items()}


def adb_server_pid(port: int) -> int | None:
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "adb" in (p.info.get("name") or "") and str(port) in cmd and "server" in cmd:
            return int(p.pid)
    return None


# ---------------------------------------------------------------------- measurements


async def frames_per_second(viewers: list[ScreenViewer], device_ids: list[int], sec: float
                            ) -> tuple[list[float], list[int]]:
    """Frames/s each viewer got of each phone over ``sec``, and the size of every frame in the window."""
    marks = [{d: len(v.of(d)) for d in device_ids} for v in viewers]
    t0 = time.monotonic()
    await asyncio.sleep(sec)
    wall = time.monotonic() - t0
    rates, sizes = [], []
    for v, mark in zip(viewers, marks, strict=True):
        for d in device_ids:
            got = v.of(d)[mark[d]:]
            rates.append(len(got) / wall)
            sizes += [len(f.data) for f in got]
    return rates, sizes


async def tap_latencies(viewers: list[ScreenViewer], device_id: int, taps: int) -> tuple[list[float], list[float]]:
    """Tap (emitted by the first viewer, which controls) -> the next frame at every viewer; and the input ack."""
    controller = viewers[0]
    latencies: list[float] = []
    acks: list[float] = []
    for i in range(taps):
        marks = [len(v.of(device_id)) for v in viewers]
        x, y = 60 + (i * 97) % 960, 300 + (i * 211) % 1900
        t0 = time.monotonic()
        task = asyncio.create_task(controller.input(device_id, {"type": "tap", "x": x, "y": y}))
        for v, mark in zip(viewers, marks, strict=True):
            await v.wait_for(functools.partial(_more, v, device_id, mark), timeout=30)
            latencies.append(v.of(device_id)[mark].at - t0)
        answer = await task
        assert answer.get("ok"), answer
        acks.append(time.monotonic() - t0)
        await asyncio.sleep(0.2)  # the next tap on a settled screen
    return latencies, acks


def _more(viewer: ScreenViewer, device_id: int, mark: int) -> bool:
    return len(viewer.of(device_id)) > mark


def rate_line(rates: list[float]) -> str:
    return (f"min {min(rates):.2f}   median {statistics.median(rates):.2f}   max {max(rates):.2f} frames/s"
            f"   (n={len(rates)})")


def cpu_line(cpu: dict[str, float], streams: int) -> str:
    return "   ".join(f"{name} {share * 100:5.1f}% ({share * 100 / streams:4.1f}%/stream)"
                       for name, share in cpu.items())


async def one_phone(viewers: list[ScreenViewer], device_id: int, phones: Child, serial: str, *, cpu: Cpu,
                    args: argparse.Namespace) -> list[float]:
    n = len(viewers)
    for v in viewers:
        ack = await v.watch(device_id)
        assert ack["ok"], ack
    await viewers[0].control(device_id, True)
    await phones.ask(("animate", [serial], True))
    await asyncio.sleep(1.0)  # warm-up
    cpu.begin()
    rates, sizes = await frames_per_second(viewers, [device_id], args.sec)
    used = cpu.end()
    await phones.ask(("animate", [serial], False))
    await asyncio.sleep(1.0)
    print(f"\n-- one phone, {n} viewer{'s' if n > 1 else ''} (picture changing at every capture, {args.sec:g} s)")
    print(f"frames/s per viewer: {rate_line(rates)}")
    print(f"bytes per frame: mean {statistics.fmean(sizes):,.0f}   (max {max(sizes):,})")
    print(f"cpu (share of one core): {cpu_line(used, 1)}")
    latencies, acks = await tap_latencies(viewers, device_id, args.taps)
    print(f"tap -> changed frame at each of {n} viewer(s): {Summary.of(latencies).ms()}")
    print(f"tap -> input acknowledged: {Summary.of(acks).ms()}")
    await viewers[0].control(device_id, False)
    for v in viewers:
        await v.unwatch(device_id)
    return latencies


async def measure(root: str, args: argparse.Namespace) -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        adb_port = int(s.getsockname()[1])
    async with scratch_database(root) as dsn, running_server(dsn) as server, LocalAdbServer(adb_port):
        phones = Child(_phones_main, args.phones, adb_port)
        _, phones_pid, serials = await phones.start()
        with tempfile.TemporaryDirectory(prefix="pfbench-screen-") as tmp:
            agent = Child(_agent_main, server.url, await agent_token(dsn, "bench-screen"), adb_port, tmp)
            _, agent_pid = await agent.start()
            http = session()
            viewers: list[ScreenViewer] = []
            try:
                headers = {"Authorization": f"Bearer {ADMIN}"}
                deadline = time.monotonic() + 120
                while True:
                    async with http.get(f"{server.url}/api/devices", headers=headers) as r:
                        devices = {d["serial"]: d for d in await r.json()}
                    if sum(devices.get(s, {}).get("state") == "idle" for s in serials) == len(serials):
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError("phones not idle on the server")
                    await asyncio.sleep(0.5)
                ids = [devices[s]["id"] for s in serials]
                pids = {"server": server.pid, "agent": agent_pid, "phones": phones_pid}
                adb_pid = adb_server_pid(adb_port)
                if adb_pid is not None:
                    pids["adb server"] = adb_pid
                cpu = Cpu(pids)
                print(f"{len(serials)} virtual phones (1080x2400) idle on the server; frames scaled to 480 px wide, "
                      f"JPEG quality 70; capture at most every 150 ms")
                for _ in range(max(10, 1)):
                    v = ScreenViewer(server.url, ADMIN)
                    await v.connect()
                    viewers.append(v)
                worst = max(await one_phone(viewers[:1], ids[0], phones, serials[0], cpu=cpu, args=args))
                ten = await one_phone(viewers[:10], ids[0], phones, serials[0], cpu=cpu, args=args)
                p99 = Summary.of(ten).p99

                print(f"\n-- {len(ids)} phones watched at once, every picture changing ({args.sec:g} s)")
                grid = viewers[0]
                for d in ids:
                    ack = await grid.watch(d)
                    assert ack["ok"], ack
                await phones.ask(("animate", serials, True))
                await asyncio.sleep(2.0)
                cpu.begin()
                rates, sizes = await frames_per_second([grid], ids, args.sec)
                used = cpu.end()
                print(f"frames/s per phone: {rate_line(rates)}")
                print(f"bytes per frame: mean {statistics.fmean(sizes):,.0f}   (max {max(sizes):,})")
                print(f"cpu (share of one core): {cpu_line(used, len(ids))}")
                print(f"\ngoal tap-to-frame p99 <= {GOAL_TAP_P99_SEC * 1e3:.0f} ms (10 viewers): "
                      f"{p99 * 1e3:.0f} ms, {verdict(p99, GOAL_TAP_P99_SEC)} (1 viewer: max {worst * 1e3:.0f} ms)")
                print(f"goal >= {GOAL_FPS:g} frames/s per phone with {len(ids)} watched: slowest "
                      f"{min(rates):.2f}, {verdict(min(rates), GOAL_FPS, lower_is_better=False)}")
            finally:
                for v in viewers:
                    await v.disconnect()
                await http.close()
                await agent.stop()
        await phones.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=20)
    parser.add_argument("--taps", type=int, default=40)
    parser.add_argument("--sec", type=float, default=15.0, help="each frames/s window")
    parser.add_argument("--quick", action="store_true", help="5 phones, 10 taps, 5 s windows")
    args = parser.parse_args()
    if args.quick:
        args.phones, args.taps, args.sec = 5, 10, 5.0
    print_header(MODULE, "live screen: frames/s, tap-to-frame latency, CPU per stream, bytes per frame")
    print("here: server, agent and virtual phones each in a child process; viewers (socket.io, as the browser) "
          "in this one", flush=True)
    with postgres_root() as root:
        run(measure(root, args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
