"""``python -m bench.soak [--minutes N]``: the chaos soak.

Virtual phones (in this process, so their action logs outlive every agent) on several real agent
processes, each on its own adb server and behind its own fault proxy to one real server process, whose
own PostgreSQL sits behind another proxy. Jobs flow the whole time while seeded random faults hit
every part: agent SIGKILL and restart, link cut and half-open stall, server SIGKILL and restart,
PostgreSQL restart, phone unplug and replug. Then everything is healed, the jobs converge, and every
job's accounting is checked against what the phones ran (``bench.soak.audit``). Exit status 0 only when
nothing was lost, recorded twice or run twice unrecorded, and every job converged.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.soak.audit import CATEGORIES, Context, Verdict, audit, phone_runs, read_database
from bench.soak.cluster import Rack, ServerProcess, SoakPostgres
from bench.soak.faults import Chaos, PlannedFault, Target, plan_faults
from bench.soak.workload import JobFeeder

SERVER_ENV = {"PHONEFLEET_MAINTENANCE_SEC": "0.5", "PHONEFLEET_RETRY_MAX_SEC": "10"}
LABELS = {"lost": "runs lost", "recorded_twice": "recorded twice",
          "run_twice_unrecorded": "run twice without a record of both attempts",
          "recorded_not_run": "recorded but never ran", "not_converged": "job accounting not converged"}


def say(line: str) -> None:
    print(line, flush=True)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long faults are injected (default 10)")
    p.add_argument("--agents", type=int, default=4, help="agent processes, each with its own adb server (4)")
    p.add_argument("--phones", type=int, default=50, help="virtual phones per agent (50)")
    p.add_argument("--seed", type=int, default=1, help="seeds the fault plan and the jobs (1)")
    p.add_argument("--fault-every", type=float, default=6.0, help="mean seconds between faults (6)")
    p.add_argument("--in-flight", type=int, default=0, help="open jobs kept flowing (default: phones / 10)")
    p.add_argument("--converge-sec", type=float, default=300.0, help="how long jobs may take to converge (300)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) even when the soak passes")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="logs, agent state and the embedded database (default: a new temp dir)")
    return p.parse_args(argv)


class Soak:
    def __init__(self, opts: argparse.Namespace, work: Path) -> None:
        self.opts = opts
        self.work = work
        self.admin = "pfadm_soak-" + secrets.token_urlsafe(16)
        self.pg = SoakPostgres(work, os.environ.get("DATABASE_URL"))
        self.server: ServerProcess | None = None
        self.racks: list[Rack] = []
        self.plan = plan_faults(opts.seed, opts.minutes * 60, opts.agents, opts.phones, opts.fault_every)
        self.chaos = Chaos(self.plan, self._target)
        self.feeder: JobFeeder | None = None
        self.converged_sec: float | None = None
        self.t0 = time.time()
        """Wall clock at the soak's start: the audit prints times after it."""

    # ------------------------------------------------------------------ set-up

    async def start(self) -> None:
        total = self.opts.agents * self.opts.phones
        say(f"starting PostgreSQL ({self.pg.kind}) ...")
        await self.pg.start()
        self.server = ServerProcess(self.work, self.pg.server_dsn, self.admin, SERVER_ENV)
        say("starting the server ...")
        self.server.start()
        await self.server.wait_healthy()
        say(f"starting {self.opts.agents} adb servers and {total} virtual phones ...")
        for i in range(self.opts.agents):
            rack = Rack(i, self.opts.phones, self.work, self.server.port, {})
            self.racks.append(rack)
            await rack.start_phones()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.admin}"}) as http:
            for rack in self.racks:
                async with http.post(self.server.url + "/api/agents", json={"name": rack.name}) as r:
                    assert r.status == 201, await r.text()
                    rack.token = (await r.json())["token"]
            say(f"starting {self.opts.agents} agents ...")
            for rack in self.racks:
                rack.start_agent()
            await self._wait_idle(http, total)
        self.feeder = JobFeeder(self.server.url, self.admin, self.pg.direct_dsn, random.Random(self.opts.seed + 1),
                                in_flight=self.opts.in_flight or max(4, total // 10),
                                max_target=max(2, total // 8))

    async def _wait_idle(self, http: aiohttp.ClientSession, total: int) -> None:
        assert self.server is not None
        deadline = time.monotonic() + 60 + total
        idle = 0
        while time.monotonic() < deadline:
            async with http.get(self.server.url + "/api/devices") as r:
                idle = sum(d["state"] == "idle" for d in await r.json())
            if idle >= total:
                say(f"{total} phones idle")
                return
            await asyncio.sleep(1)
        raise TimeoutError(f"only {idle}/{total} phones became idle; see {self.work / 'logs'}")

    def _target(self, fault: PlannedFault) -> Target:
        assert self.server is not None
        rack = self.racks[fault.rack]
        server = self.server

        def nothing() -> None:
            return None

        if fault.kind == "agent_kill":
            return Target(f"agent {rack.name}", rack.kill_agent, rack.start_agent)
        if fault.kind == "link_cut":
            return Target(f"link {rack.name}", rack.proxy.cut, nothing)
        if fault.kind == "link_stall":
            return Target(f"link {rack.name}", rack.proxy.stall, rack.proxy.heal)
        if fault.kind == "server_kill":
            return Target("server", server.kill, server.start)
        if fault.kind == "postgres_restart":
            return Target("postgres", lambda: self.pg.restart(fault.hold), nothing)
        phone = rack.fleet.phones[fault.phone]
        return Target(f"phone {phone.adb_serial}", phone.go_offline, phone.come_back)

    # ------------------------------------------------------------------ the soak

    async def run(self) -> Verdict:
        assert self.feeder is not None
        seconds = self.opts.minutes * 60
        say(f"soaking for {seconds:.0f} s: {len(self.plan)} faults planned (seed {self.opts.seed}) ...")
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.t0 = time.time()
        feeding = asyncio.create_task(self.feeder.run())
        chaos = asyncio.create_task(self.chaos.run(started, say))
        try:
            while (left := started + seconds - loop.time()) > 0:
                await asyncio.sleep(min(left, 15))
                say(f"  t={loop.time() - started:5.0f} s  jobs created {self.feeder.created} "
                    f"(+{self.feeder.failed_creates} refused or unanswered)  faults {self._fault_line()}")
        finally:
            for task in (feeding, chaos):
                task.cancel()
            await asyncio.gather(feeding, chaos, return_exceptions=True)
            await self.chaos.heal_all()
        await self._heal()
        await self._converge()
        await self._agents_quiet()
        return await self._audit()

    def _fault_line(self) -> str:
        return ", ".join(f"{k} {n}" for k, n in self.chaos.counts().items())

    async def _heal(self) -> None:
        """Every part up again, whatever a fault left behind."""
        assert self.server is not None and self.pg.proxy is not None
        say("faults over; healing everything ...")
        self.pg.proxy.heal()
        if not self.server.running:
            self.server.start()
        await self.server.wait_healthy()
        for rack in self.racks:
            rack.proxy.heal()
            if not rack.agent_running:
                rack.start_agent()
            for phone in rack.fleet.phones:
                if not phone.online:
                    await phone.come_back()

    async def _converge(self) -> None:
        """Wait until every job has ended and no attempt is open (or ``--converge-sec`` passed)."""
        loop = asyncio.get_running_loop()
        begun = loop.time()
        last = ""
        while loop.time() - begun < self.opts.converge_sec:
            try:
                conn = await asyncpg.connect(self.pg.direct_dsn)
                try:
                    jobs = await conn.fetchval(
                        "SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'cancelled')")
                    open_ = await conn.fetchval("SELECT count(*) FROM assignments WHERE status IN "
                                                "('pending', 'delivered', 'running', 'paused')")
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError):
                jobs = open_ = -1
            if jobs == 0 and open_ == 0:
                self.converged_sec = loop.time() - begun
                say(f"every job converged {self.converged_sec:.0f} s after the faults ended")
                return
            line = f"  waiting for {jobs} open jobs, {open_} open attempts ..."
            if line != last:
                say(line)
                last = line
            await asyncio.sleep(1)
        say(f"jobs did not converge within {self.opts.converge_sec:.0f} s")

    async def _agents_quiet(self, timeout: float = 90) -> None:
        """Let each agent finish what it runs and empty its outbox, so a late run is not half-seen."""
        deadline = time.monotonic() + timeout
        quiet_rounds = 0
        while time.monotonic() < deadline and quiet_rounds < 2:
            statuses = [await rack.agent_status() for rack in self.racks]
            quiet = all(s is not None and _idle(s) for s in statuses)
            quiet_rounds = quiet_rounds + 1 if quiet else 0
            await asyncio.sleep(1)
        if quiet_rounds < 2:
            say("note: some agent was still busy or had results in its outbox when the audit began")

    async def _audit(self) -> Verdict:
        jobs, attempts = await read_database(self.pg.direct_dsn)
        phones = [p for rack in self.racks for p in rack.fleet.phones]
        runs, dropped = phone_runs(phones)
        rack_of = {p.adb_serial: rack.name for rack in self.racks for p in rack.fleet.phones}
        return audit(jobs, attempts, runs, Context(self.chaos.records, rack_of, self.t0), dropped)

    async def stop(self, *, keep_data: bool) -> None:
        for rack in self.racks:
            await rack.stop()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        await self.pg.stop(keep_data=keep_data)
        if keep_data:
            say(f"database {self.pg.database} kept" + (
                f" in {self.work / 'pg'} (EmbeddedPostgres(Path({str(self.work)!r})).start() serves it)"
                if self.pg.embedded else " in DATABASE_URL's server"))


def _idle(status: dict[str, Any]) -> bool:
    """An agent's status: nothing in its outbox, nothing running or queued on any phone."""
    phones: list[dict[str, Any]] = status.get("phones", [])
    return status.get("outbox") == 0 and not any(p.get("running") or p.get("queued") for p in phones)


def figures(soak: Soak, verdict: Verdict, seconds: float) -> dict[str, Any]:
    opts = soak.opts
    not_converged = {v.job_id for v in verdict.violations if v.category == "not_converged"}
    return {
        "command": " ".join(["python -m bench.soak", *map(shlex.quote, sys.argv[1:])]),
        "seed": opts.seed, "minutes": opts.minutes, "agents": opts.agents, "phones_per_agent": opts.phones,
        "database": soak.pg.kind, "wall_sec": round(seconds, 1),
        "faults": soak.chaos.counts(), "faults_skipped": soak.chaos.skipped(),
        "jobs_created": soak.feeder.created if soak.feeder else 0,
        "creates_refused_or_unanswered": soak.feeder.failed_creates if soak.feeder else 0,
        "jobs": verdict.jobs, "attempts": verdict.attempts, "phone_runs": verdict.runs,
        "finished_runs": verdict.finished_runs, "excused": dict(verdict.excused),
        "converged_after_sec": None if soak.converged_sec is None else round(soak.converged_sec, 1),
        "violations": {c: verdict.count(c) for c in CATEGORIES}, "jobs_not_converged": len(not_converged),
        "dropped_log_records": verdict.dropped_log_records, "ok": verdict.ok,
        "details": [str(v) for v in verdict.violations],
    }


def report(fig: dict[str, Any], verdict: Verdict) -> None:
    say("")
    say(f"faults injected: {', '.join(f'{k} {n}' for k, n in fig['faults'].items())}"
        f"  (total {sum(fig['faults'].values())}; {fig['faults_skipped']} skipped: target already under a fault)")
    say(f"jobs: {fig['jobs_created']} created ({fig['creates_refused_or_unanswered']} creates refused or "
        f"unanswered during faults), {fig['jobs']} in the database; converged "
        + (f"{fig['converged_after_sec']} s after the faults" if fig["converged_after_sec"] is not None else "NOT"))
    say(f"runs checked: {fig['phone_runs']} runs on the phones ({fig['finished_runs']} finished) against "
        f"{fig['attempts']} attempts in the database")
    for why, n in fig["excused"].items():
        say(f"  {n} finished but not completed, explained by a fault: {why}")
    for category in CATEGORIES:
        say(f"{LABELS[category]}: {fig['violations'][category]}")
    say(f"jobs not converged: {fig['jobs_not_converged']}")
    if fig["dropped_log_records"]:
        say(f"phone log records dropped (runs unseen): {fig['dropped_log_records']}")
    for category in CATEGORIES:
        found = [v for v in verdict.violations if v.category == category]
        for v in found[:20]:
            say(f"  {v}")
        if len(found) > 20:
            say(f"  ... and {len(found) - 20} more {category}")
    say("verdict: " + ("PASS" if fig["ok"] else "FAIL"))


async def amain(opts: argparse.Namespace) -> int:
    work = opts.work_dir.resolve() if opts.work_dir else Path(tempfile.mkdtemp(prefix="pfsoak-"))
    work.mkdir(parents=True, exist_ok=True)
    total = opts.agents * opts.phones
    say(f"== chaos soak: {opts.agents} agents x {opts.phones} virtual phones = {total}, "
        f"{opts.minutes:g} min of faults, seed {opts.seed}")
    say("command: " + " ".join(["python -m bench.soak", *map(shlex.quote, sys.argv[1:])]))
    say(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; work dir {work}")
    soak = Soak(opts, work)
    main_task = asyncio.current_task()
    assert main_task is not None

    def stop_once() -> None:
        """Ctrl-C or SIGTERM: cancel the soak once, so a second signal cannot cut its clean-up short."""
        if not main_task.cancelling():
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop_once)
    began = time.monotonic()
    ok = False
    try:
        await soak.start()
        verdict = await soak.run()
        fig = figures(soak, verdict, time.monotonic() - began)
        report(fig, verdict)
        if opts.json is not None:
            opts.json.write_text(json.dumps(fig, indent=2))
        ok = bool(fig["ok"])
        return 0 if ok else 1
    finally:
        await soak.stop(keep_data=opts.keep or not ok)
        if ok and not opts.keep and opts.work_dir is None:  # only a temp dir of its own
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"logs kept in {work / 'logs'}")


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(amain(options(argv)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; everything the soak started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
