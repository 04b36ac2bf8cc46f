"""Fleet health: how fast a misbehaving phone leaves distribution, how long each recovery rung takes to heal
one, and whether a long run with ordinary failures quarantines any healthy phone.

The real agent (``phonefleet.agent.agent.Agent``, its default probe: every 15 s, all phones at once) drives
``--phones`` virtual phones through a private adb server, against a real server (a child process, default
settings). Faults are set on the virtual phones (``VirtualPhone.set_fault``), as
``phonefleet-agent virtual SERIAL --fault`` does.

1. Detection: ``--each`` phones get ``hot``, ``--each`` others ``hang``, at a random moment of the probe cycle;
   the figure is fault -> the server no longer lists the phone idle (it left distribution), per phone.
2. Flapping: ``--each`` phones flap (offline and back every ``--flap-sec``); the figure is the policy tripping
   (its 4th disconnect in the phone's timeline) -> quarantined, from the server's own timestamps.
3. Healing: hung phones healed by the agent's recovery ladder; the figure is each rung's start -> end, from
   the phones' timelines, and fault -> idle again.
4. Soak (``--soak-sec``, 600 in the issue): jobs on every phone back to back, each run failing at random
   with probability ``--noise`` (``am start`` fails), plus five faulty phones (hot, flap, unauthorized,
   bootloop, amfail). Goal: no healthy phone quarantined, every faulty one out of distribution at the end.
"""

import argparse
import asyncio
import json
import random
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

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
)
from phonefleet.agent.agent import Agent
from phonefleet.agent.config import AgentSettings
from phonefleet.virtual import LocalAdbServer, VirtualPhone

MODULE = "bench.health"
GOAL_LEAVE_SEC = 20.0
AVAILABLE = ("idle", "busy")


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = session()
        self.headers = {"Authorization": f"Bearer {ADMIN}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.url + path, json=body, headers=self.headers) as r:
            data = await r.json()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {data}")
            return data

    async def states(self) -> dict[str, str]:
        return {d["serial"]: d["state"] for d in await self.call("GET", "/api/devices")}

    async def close(self) -> None:
        await self.http.close()


async def wait_all(api: Api, serials: Sequence[str], leave: bool, timeout: float) -> dict[str, float]:
    """perf_counter time each phone was first seen out of (``leave``) or back in distribution."""
    seen: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(seen) < len(serials) and time.perf_counter() < deadline:
        states = await api.states()
        now = time.perf_counter()
        for s in serials:
            if s not in seen and (states.get(s) not in AVAILABLE) == leave:
                seen[s] = now
        await asyncio.sleep(0.1)
    return seen


def line(label: str, values: Sequence[float], goal: float | None = None) -> None:
    if not values:
        print(f"{label:<44} no sample")
        return
    s = Summary.of(values)
    verdict = "" if goal is None else f"   goal p99 <= {goal:g} s: {'MEETS' if s.p99 <= goal else 'MISSES'}"
    print(f"{label:<44} p50 {s.p50:6.2f} s   p99 {s.p99:6.2f} s   max {s.max:6.2f} s   (n={s.n}){verdict}")


async def detection(api: Api, phones: list[VirtualPhone], fault: str, probe_sec: float) -> list[float]:
    """Each phone gets the fault at its own random moment of the probe cycle; fault -> out, per phone."""
    started: dict[str, float] = {}

    async def hit(phone: VirtualPhone) -> None:
        await asyncio.sleep(random.uniform(0, probe_sec))
        started[phone.adb_serial] = time.perf_counter()
        await phone.set_fault(fault)

    hits = asyncio.gather(*(hit(p) for p in phones))
    left = await wait_all(api, [p.adb_serial for p in phones], leave=True, timeout=120)
    await hits
    return [left[s] - started[s] for s in started if s in left]


async def flapping(api: Api, dsn: str, phones: list[VirtualPhone], flap_sec: float) -> list[float]:
    for p in phones:
        await p.set_fault("flap", flap_sec=flap_sec)
    await wait_all(api, [p.adb_serial for p in phones], leave=True, timeout=300)
    serials = [p.adb_serial for p in phones]
    for _ in range(600):
        states = await api.states()
        if all(states.get(s) == "quarantined" for s in serials):
            break
        await asyncio.sleep(0.5)
    for p in phones:
        await p.set_fault("none")
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT d.serial, e.kind, e.actor, e.created_at FROM device_events e JOIN devices d ON d.id = e.device_id
               WHERE d.serial = ANY($1::text[]) ORDER BY e.id""", serials)
    finally:
        await conn.close()
    out = []
    for s in serials:
        disconnects = [r["created_at"] for r in rows if r["serial"] == s and r["kind"] == "disconnected"
                       and r["actor"] == "agent"]
        quarantined = [r["created_at"] for r in rows if r["serial"] == s and r["kind"] == "quarantined"]
        if len(disconnects) >= 4 and quarantined:
            tripped: datetime = disconnects[3]
            out.append((quarantined[0] - tripped).total_seconds())
    return out


async def soak(api: Api, phones: list[VirtualPhone], seconds: float, noise: float) -> bool:
    """Jobs on every phone back to back for ``seconds``, every ``am start`` failing with probability ``noise``,
    five phones faulty; True when no healthy phone was quarantined and every faulty one is out."""
    for p in phones:
        p.state.am_fail_rate = noise
    faulty = dict(zip(("hot", "flap", "unauthorized", "bootloop", "amfail"), phones[:5], strict=True))
    healthy = [p.adb_serial for p in phones[5:]]
    for fault, phone in faulty.items():
        await phone.set_fault(fault, **({"flap_sec": 3.0} if fault == "flap" else {}))
    faulty["bootloop"].state.request_reboot()  # a boot loop begins at a reboot
    plan = [{"type": "open_url", "url": "https://example.com/soak", "duration_sec": 1}]
    jobs = runs = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        job = await api.call("POST", "/api/jobs", {"title": f"soak {jobs}", "plan": plan, "max_retries": 0,
                                                    "target_type": "all_devices", "timeout_sec": 60})
        jobs += 1
        for _ in range(1200):  # done: completed, or every run it made ended (a phone that left after the
            got = await api.call("GET", f"/api/jobs/{job['id']}")  # target was resolved leaves a slot open)
            ended = got["completed_count"] + got["failed_count"]
            if got["status"] == "completed" or (ended == got["assigned_count"] and got["running_count"] == 0
                                                 and ended >= got["target_count"] - 5):
                runs += ended
                break
            await asyncio.sleep(0.25)
        if jobs % 20 == 0:
            print(f"  soak: {jobs} jobs, {runs} runs, {int(end - time.perf_counter())} s left", flush=True)
    await asyncio.sleep(5)  # the last reports and the health watch
    states = await api.states()
    detail = {d["serial"]: d for d in await api.call("GET", "/api/devices")}
    wrongly = [s for s in healthy if states.get(s) == "quarantined"]
    still_in = [f for f, p in faulty.items() if states.get(p.adb_serial) in AVAILABLE]
    print(f"\n-- soak: {seconds / 60:g} min, {jobs} jobs, {runs} runs on {len(phones)} phones, noise {noise:.0%} "
          f"(am start fails at random), 5 faulty phones")
    for fault, phone in faulty.items():
        d = detail.get(phone.adb_serial, {})
        why = d.get("quarantine_reason") or d.get("health_reason") or d.get("recovering") or ""
        print(f"  {fault:<13} {phone.adb_serial:<22} {states.get(phone.adb_serial, '?'):<12} {why}")
    print(f"healthy phones quarantined: {len(wrongly)} (goal 0){'   ' + ', '.join(wrongly) if wrongly else ''}")
    listed = "   " + ", ".join(still_in) if still_in else ""
    print(f"faulty phones still in distribution: {len(still_in)} of 5 (goal 0){listed}")
    return not wrongly and not still_in


async def healing(api: Api, dsn: str, phones: list[VirtualPhone]) -> tuple[list[float], dict[str, list[float]]]:
    """Hung phones left to the agent's ladder (its defaults): fault -> back in distribution per phone, and
    each rung's start -> end (by rung and outcome) from the phones' timelines."""
    t0 = time.perf_counter()
    for p in phones:
        await p.set_fault("hang")
    serials = [p.adb_serial for p in phones]
    await wait_all(api, serials, leave=True, timeout=120)
    back = await wait_all(api, serials, leave=False, timeout=600)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT d.serial, e.kind, e.data, e.created_at FROM device_events e JOIN devices d ON d.id = e.device_id
               WHERE d.serial = ANY($1::text[]) AND e.kind IN ('recovery_started', 'recovery_ended') ORDER BY e.id""",
            serials)
    finally:
        await conn.close()
    rungs: dict[str, list[float]] = {}
    open_at: dict[tuple[str, str], datetime] = {}
    for r in rows:
        data = json.loads(r["data"])  # this connection has no jsonb codec: the text as stored
        key = (r["serial"], data["rung"])
        if r["kind"] == "recovery_started":
            open_at[key] = r["created_at"]
        elif key in open_at:
            rungs.setdefault(f"{data['rung']} ({data.get('outcome')})", []).append(
                (r["created_at"] - open_at.pop(key)).total_seconds())
    return [back[s] - t0 for s in serials if s in back], rungs


async def measure(root: str, args: argparse.Namespace) -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        adb_port = int(s.getsockname()[1])
    async with scratch_database(root) as dsn, running_server(dsn) as server, LocalAdbServer(adb_port):
        with tempfile.TemporaryDirectory(prefix="pfbench-health-") as tmp:
            settings = AgentSettings(server=server.url, token=await agent_token(dsn, "bench-health"),
                                     state_dir=Path(tmp), virtual=args.phones, adb_port=adb_port)
            agent = Agent(settings)
            api = Api(server.url)
            t_start = time.perf_counter()
            await agent.start()
            assert agent.fleet is not None
            phones = sorted(agent.fleet.phones, key=lambda p: p.adb_serial)
            back = await wait_all(api, [p.adb_serial for p in phones], leave=False, timeout=300)
            print(f"agent: {len(back)}/{len(phones)} phones idle on the server "
                  f"{max(back.values()) - t_start:.1f} s after start; probe every {settings.probe_sec:g} s, "
                  f"cut after {settings.probe_timeout_sec:g} s or its threshold if sooner", flush=True)
            try:
                random.shuffle(phones)
                n = args.each
                hot, hung, flappy = phones[:n], phones[n:2 * n], phones[2 * n:3 * n]
                print(f"\n-- detection: {n} phones hot, {n} hung, {n} flapping (of {len(phones)})", flush=True)
                hot_sec, hung_sec = await asyncio.gather(
                    detection(api, hot, "hot", settings.probe_sec), detection(api, hung, "hang", settings.probe_sec))
                line("hot -> out of distribution", hot_sec, GOAL_LEAVE_SEC)
                line("hung -> out of distribution", hung_sec, GOAL_LEAVE_SEC)
                flap_sec = await flapping(api, dsn, flappy, args.flap_sec)
                line("flapping: policy tripped -> quarantined", flap_sec, settings.probe_sec)
                for p in hot + hung:
                    await p.set_fault("none")
                await wait_all(api, [p.adb_serial for p in hot + hung], leave=False, timeout=300)
                healed, rungs = await healing(api, dsn, hung)
                print(f"\n-- healing: {n} hung phones left to the agent's recovery ladder (its defaults: "
                      f"{settings.recovery_grace_sec:g} s grace, then reconnect, usb_reset, reboot)", flush=True)
                line("hung -> back in distribution", healed)
                for rung, took in sorted(rungs.items()):
                    line(f"  rung {rung}", took)
                if args.soak_sec:
                    clear = await wait_all(api, [p.adb_serial for p in phones[:2 * n]], leave=False, timeout=300)
                    print(f"(hot and hung phones back in distribution: {len(clear)} of {2 * n})")
                    ok = await soak(api, [p for p in phones if p not in flappy], args.soak_sec, args.noise)
                    print(f"soak goal: {'MEETS' if ok else 'MISSES'}")
            finally:
                await api.close()
                await agent.stop()
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    with postgres_root() as root:
        await measure(root, args)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=200)
    parser.add_argument("--each", type=int, default=10, help="phones per fault kind")
    parser.add_argument("--flap-sec", type=float, default=3.0)
    parser.add_argument("--soak-sec", type=float, default=600.0, help="0: no soak")
    parser.add_argument("--noise", type=float, default=0.05, help="chance a run fails at random in the soak")
    parser.add_argument("--quick", action="store_true", help="50 phones, 5 per fault, a 2-minute soak")
    args = parser.parse_args()
    if args.quick:
        args.phones, args.each, args.soak_sec = 50, 5, 120.0
    print_header(MODULE, "fleet health: fault -> out of distribution, healing, no healthy phone quarantined")
    print("here: the real agent with its virtual phones (private adb server) in this process; the server a child")
    run(main_async(args), limit_sec=3600)


if __name__ == "__main__":
    main()
