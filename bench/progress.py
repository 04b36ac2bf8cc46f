"""Progress reports at fleet scale: what running-step ``assignment:progress`` reports cost the server, at a
report every 0.5 s and every 1.0 s per busy phone (issue 13).

One job runs on every phone of the fleet (20 agents x 500 phones by default), its runs started and never
finished. Then, phase by phase on the same server, each simulated agent reports progress for all its runs:

* ``none``: no progress at all (the floor of this setup: heartbeats, the probe, the dashboard);
* ``window``: one ``AssignmentProgress`` per agent every P seconds with one item per running phone (the
  fewest messages the load can take; agents' windows at random offsets);
* ``link``: what the real link does (``phonefleet.agent.link``): every phone ticks every P seconds at its own
  phase (runs start at different moments), and the agent sends whatever ticked as soon as its previous
  message was acked, newest item per run, so a message's size is what arrived during one round trip.

The loaded phases run ``--passes`` times, every other pass in reverse order (the first pass is a fresh job's
first minutes). Per phase: progress items recorded per second (the acks' ``recorded``), messages per second,
the ack latency of each progress message, per phone the time between two of its reports acked, CPU of the
server process, of the PostgreSQL instance, of this driver process and of other work on the machine (psutil,
over the phase), the share of HOT updates among the ``assignments`` UPDATEs, ``job:progress`` pushes per
second that a dashboard client received for the job, and whether the rest of the server still responds: a
probe agent with a few phones outside the long job gets a small job posted (POST -> its ``job:assign``
arrived) and paused (PATCH -> ``job:paused`` arrived), back to back, for the whole phase. Afterwards, on the
same database: ``record_progress`` for one agent's batch under ``EXPLAIN (ANALYZE, WAL)``, beside the same
UPDATE without its locking CTE (a what-if).
"""

import argparse
import asyncio
import contextlib
import heapq
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import psutil

from bench.harness import (
    ADMIN,
    PLAN,
    WHAT_IF,
    Fleet,
    Operator,
    Summary,
    Watcher,
    agent_token,
    database_facts,
    percentile,
    postgres_root,
    print_header,
    run,
    running_server,
    scratch_database,
    session,
    what_if_of,
)
from phonefleet.protocol import events as ev
from phonefleet.server.store import Conn
from phonefleet.server.store import assignments as assignments_store
from phonefleet.sim.agent import SimAgent, SimDashboard, assigned_orders

MODULE = "bench.progress"
PROBE_AGENT = "bench-probe"
PROBE_PHONES = 10


# ---------------------------------------------------------------------- CPU of processes


class MachineMeter:
    """CPU of the whole machine between two readings (what the other meters leave out is other work)."""

    def __init__(self) -> None:
        self._start, self._t0 = 0.0, 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                     + getattr(t, "steal", 0.0))

    def start(self) -> None:
        self._start, self._t0 = self._busy(), time.perf_counter()

    def percent(self) -> float:
        return 100 * (self._busy() - self._start) / (time.perf_counter() - self._t0)


class CpuMeter:
    """CPU seconds (user + system) of a set of processes between two readings."""

    def __init__(self, roots: Callable[[], list[psutil.Process]]) -> None:
        self._roots = roots
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    def _read(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for p in self._roots():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
        return out

    def start(self) -> None:
        self._start, self._t0 = self._read(), time.perf_counter()

    def percent(self) -> float:
        """Since ``start``, in % of one core."""
        end, wall = self._read(), time.perf_counter() - self._t0
        return 100 * sum(v - self._start.get(pid, 0.0) for pid, v in end.items()) / wall


async def postgres_processes(dsn: str) -> Callable[[], list[psutil.Process]] | None:
    """The local PostgreSQL instance's processes (postmaster and its children); None if it is not local."""
    conn = await asyncpg.connect(dsn)
    try:
        postmaster = psutil.Process(int(await conn.fetchval("SELECT pg_backend_pid()"))).parent()
    except psutil.Error:  # not on this machine
        return None
    finally:
        await conn.close()
    if postmaster is None or "postgres" not in postmaster.name():
        return None
    return lambda: [postmaster, *postmaster.children(recursive=True)]


# ---------------------------------------------------------------------- one phase


@dataclass
class Phase:
    mode: str  # none | window | link
    every_sec: float
    seconds: float

    @property
    def label(self) -> str:
        return "none" if self.mode == "none" else f"{self.mode} P={self.every_sec:g}"


@dataclass
class Result:
    phase: Phase
    seconds: float = 0.0
    items: int = 0
    recorded: int = 0
    messages: int = 0
    failed: int = 0
    acks: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    server_cpu: float = 0.0
    pg_cpu: float | None = None
    driver_cpu: float = 0.0
    others_cpu: float = 0.0
    pushes: int = 0
    probe_assign: list[float] = field(default_factory=list)
    probe_pause: list[float] = field(default_factory=list)
    updates: int = 0
    hot: int = 0
    last_ack: dict[int, float] = field(default_factory=dict)
    gaps: list[float] = field(default_factory=list)
    """Per phone, the time between two of its reports recorded (acked) in this phase."""


def item(assignment_id: int, progress: float, elapsed: float) -> dict[str, Any]:
    """One running step's report, as the runner's ticker makes it."""
    return {"assignment_id": assignment_id, "step_index": 0, "step_count": 1, "progress": round(progress, 4),
            "message": f"open_url · {elapsed:.0f} s"}


async def send(agent: SimAgent, items: list[dict[str, Any]], result: Result) -> None:
    t0 = time.perf_counter()
    try:
        ack = await agent.call(ev.ASSIGNMENT_PROGRESS, {"items": items}, timeout=30)
    except Exception:  # a timeout: counted, the load goes on
        result.failed += 1
        return
    t_ack = time.perf_counter()
    result.acks.append(t_ack - t0)
    for i in items:
        last = result.last_ack.get(i["assignment_id"])
        if last is not None:
            result.gaps.append(t_ack - last)
        result.last_ack[i["assignment_id"]] = t_ack
    result.messages += 1
    result.items += len(items)
    result.batch_sizes.append(len(items))
    if ack.get("ok"):
        result.recorded += int(ack["data"]["recorded"])
    else:
        result.failed += 1


async def windows(agent: SimAgent, ids: list[int], phase: Phase, t_end: float, result: Result) -> None:
    """One message per window with every running phone in it."""
    t_begin = time.perf_counter()
    await asyncio.sleep(random.uniform(0, phase.every_sec))
    due = time.perf_counter()
    while due < t_end:
        now = time.perf_counter()
        elapsed = now - t_begin
        await send(agent, [item(i, min(1.0, elapsed / 600), elapsed) for i in ids], result)
        due += phase.every_sec
        await asyncio.sleep(max(0.0, due - time.perf_counter()))


async def link(agent: SimAgent, ids: list[int], phase: Phase, t_end: float, result: Result) -> None:
    """The real link's shape: each phone ticks at its own phase; what ticked goes out once the last ack is in."""
    t_begin = time.perf_counter()
    ticks = [(t_begin + random.uniform(0, phase.every_sec), i) for i in ids]
    heapq.heapify(ticks)
    while True:
        now = time.perf_counter()
        if now >= t_end:
            return
        if ticks[0][0] > now:
            await asyncio.sleep(min(ticks[0][0], t_end) - now)
            continue
        batch = []
        while ticks[0][0] <= now:
            due, i = heapq.heappop(ticks)
            while due <= now:  # ticks missed during a long round trip: the newest only
                due += phase.every_sec
            heapq.heappush(ticks, (due, i))
            batch.append(item(i, min(1.0, (now - t_begin) / 600), now - t_begin))
        await send(agent, batch, result)


# ---------------------------------------------------------------------- does the rest of the server respond


class Probe:
    """A small job on a few phones outside the long job: posted, paused, cancelled, again and again."""

    def __init__(self, op: Operator, agent: SimAgent, conn: asyncpg.Connection) -> None:
        self.op = op
        self.agent = agent
        self.conn = conn
        self.n = 0

    async def idle(self) -> None:
        assert self.agent.agent_id is not None
        deadline = time.perf_counter() + 60
        while await self.conn.fetchval("SELECT count(*) FROM devices WHERE agent_id = $1 AND state = 'idle'",
                                       self.agent.agent_id) < PROBE_PHONES:
            if time.perf_counter() > deadline:
                raise TimeoutError("probe phones not idle")
            await asyncio.sleep(0.01)

    async def once(self) -> tuple[float, float]:
        self.n += 1
        body = {"title": f"probe {self.n}", "plan": PLAN, "target_type": "all_devices",
                "filters": {"agents": [PROBE_AGENT]}}
        t0 = time.perf_counter()
        job = await self.op.call("POST", "/api/jobs", body, expect=201)
        jid = job["id"]

        def assigns() -> list[tuple[int, float]]:
            return [(sum(o["job_id"] == jid for o in assigned_orders(d)), t)
                    for n, d, t in self.agent.received if n == ev.JOB_ASSIGN]

        await self.agent.wait_for(lambda: sum(k for k, _ in assigns()) >= PROBE_PHONES, timeout=60)
        t_assign = max(t for k, t in assigns() if k)
        t1 = time.perf_counter()
        await self.op.set_status(jid, "paused")
        await self.agent.wait_for(lambda: any(n == ev.JOB_PAUSED and d.get("job_id") == jid
                                              for n, d, _ in self.agent.received), timeout=60)
        t_paused = max(t for n, d, t in self.agent.received if n == ev.JOB_PAUSED and d.get("job_id") == jid)
        await self.op.set_status(jid, "cancelled")
        await self.idle()
        self.agent.received.clear()
        self.agent.orders.clear()
        return t_assign - t0, t_paused - t1

    async def loop(self, t_end: float, result: Result) -> None:
        while time.perf_counter() < t_end:
            assign, pause = await self.once()
            result.probe_assign.append(assign)
            result.probe_pause.append(pause)
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------- the run


async def one_phase(phase: Phase, *, fleet: Fleet, ids: dict[int, list[int]], probe: Probe, dash: SimDashboard,
                    job_id: int, meters: dict[str, CpuMeter | None]) -> Result:
    result = Result(phase)
    machine = MachineMeter()
    machine.start()
    seen = len(dash.received)
    upd0, hot0 = await updates(probe.conn)
    for m in meters.values():
        if m is not None:
            m.start()
    t0 = time.perf_counter()
    t_end = t0 + phase.seconds
    tasks = [asyncio.create_task(probe.loop(t_end, result))]
    if phase.mode != "none":
        sender = windows if phase.mode == "window" else link
        tasks += [asyncio.create_task(sender(a, ids[i], phase, t_end, result)) for i, a in enumerate(fleet.agents)]
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - t0
    server, pg, driver = meters["server"], meters["postgres"], meters["driver"]
    assert server is not None and driver is not None
    result.server_cpu, result.driver_cpu = server.percent(), driver.percent()
    result.pg_cpu = pg.percent() if pg is not None else None
    result.others_cpu = machine.percent() - result.server_cpu - (result.pg_cpu or 0.0) - result.driver_cpu
    result.pushes = sum(1 for n, d in dash.received[seen:] if n == ev.JOB_PROGRESS and d.get("job_id") == job_id)
    await asyncio.sleep(1.0)  # backends report their statistics at most once a second
    upd1, hot1 = await updates(probe.conn)
    result.updates, result.hot = upd1 - upd0, hot1 - hot0
    return result


PLAIN_UPDATE = """UPDATE assignments a SET progress = t.progress, step_index = t.step_index
    FROM unnest($1::bigint[], $2::real[], $3::int[]) AS t(id, progress, step_index)
    WHERE a.id = t.id AND a.agent_id = $4 AND a.status IN ('pending', 'delivered', 'running')
    RETURNING a.id, a.job_id"""
"""What-if: ``record_progress`` without its ``FOR UPDATE`` CTE (the UPDATE takes its own row locks)."""


class Explained:
    """Stands in for the connection so that a store function's own statement runs under ``EXPLAIN (ANALYZE, WAL)``:
    its execution time and WAL records, without copying its SQL."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.took: list[float] = []
        self.wal: list[int] = []

    async def fetch(self, query: str, *args: Any, record_class: Any = None) -> list[Any]:
        plan = "\n".join(r[0] for r in await self.conn.fetch("EXPLAIN (ANALYZE, WAL, FORMAT TEXT) " + query, *args))
        self.wal.append(int(plan.split("WAL: records=", 1)[1].split()[0]) if "WAL: records=" in plan else 0)
        self.took.append(float(plan.rsplit("Execution Time: ", 1)[1].split()[0]) / 1e3)
        return []


async def statement_alone(dsn: str, agent_id: int, ids: list[int], runs: int) -> dict[str, Explained]:
    """One agent's batch of new values, straight on the database, under EXPLAIN: ``record_progress`` as it is,
    and the what-if statement without the locking CTE, alternately (each first every other time)."""
    conn = await asyncpg.connect(dsn)
    out = {"record_progress as is": Explained(conn), "without the FOR UPDATE CTE (what-if)": Explained(conn)}
    as_is, plain = out.values()
    try:
        for n in range(runs):
            for which in ((as_is, plain) if n % 2 else (plain, as_is)):
                items = [{"assignment_id": i, "progress": 0.5 + n / 1000 + (which is plain) / 1e4, "step_index": 0}
                         for i in ids]
                if which is as_is:
                    await assignments_store.record_progress(cast(Conn, which), agent_id, items)
                else:
                    await which.fetch(PLAIN_UPDATE, [i["assignment_id"] for i in items],
                                      [i["progress"] for i in items], [i["step_index"] for i in items], agent_id)
        return out
    finally:
        await conn.close()


async def updates(conn: asyncpg.Connection) -> tuple[int, int]:
    """UPDATEs of assignments rows so far, and how many of them were HOT (no index entries written)."""
    row = await conn.fetchrow("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'assignments'")
    assert row is not None
    return int(row["n_tup_upd"]), int(row["n_tup_hot_upd"])


async def measure(root: str, args: argparse.Namespace, phases: list[Phase], what_if: frozenset[str]) -> None:
    phones = args.agents * args.phones_each
    async with scratch_database(root) as dsn, running_server(dsn, what_if=what_if) as server, session() as http:
        print(f"database: {await database_facts(dsn)}")
        op = Operator(http, server.url)
        if args.fillfactor:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f"ALTER TABLE assignments SET (fillfactor = {int(args.fillfactor)})")
            finally:
                await conn.close()
            print(f"what-if: assignments created with fillfactor {args.fillfactor} (default 100)")
        fleet = await Fleet.start(server.url, dsn, args.agents, args.phones_each)
        for a in fleet.agents:  # Fleet heartbeats every 5 s already; the agent's own loop would double that
            if a._heartbeat_task is not None:
                a._heartbeat_task.cancel()
        probe_agent = SimAgent(server.url, await agent_token(dsn, PROBE_AGENT),
                               [f"probe-{p:02d}" for p in range(PROBE_PHONES)])
        await probe_agent.connect()
        dash = SimDashboard(server.url, ADMIN)
        await dash.connect()
        watcher = await Watcher.connect(dsn)
        results: list[Result] = []
        try:
            await watcher.wait_idle(phones + PROBE_PHONES, timeout=60)
            names = [f"bench-pc{i:03d}" for i in range(args.agents)]
            job = await op.call("POST", "/api/jobs", {"title": "long step everywhere", "plan": PLAN,
                                                      "target_type": "all_devices", "filters": {"agents": names}},
                                expect=201)
            assert job["target_count"] == phones, job
            await fleet.wait_assigned(job["id"], timeout=120)
            ids = {n: sorted(i for i, o in a.orders.items() if o["job_id"] == job["id"])
                   for n, a in enumerate(fleet.agents)}
            for a, n in zip(fleet.agents, ids, strict=True):
                ack = await a.start(ids[n])
                assert ack["ok"] and len(ack["data"]["started"]) == len(ids[n]), ack
            print(f"fleet: {phones} phones = {args.agents} agents x {args.phones_each} running job {job['id']}; "
                  f"probe agent with {PROBE_PHONES} phones; one dashboard client", flush=True)
            pg = await postgres_processes(dsn)
            me = psutil.Process()
            meters: dict[str, CpuMeter | None] = {
                "server": CpuMeter(lambda: [psutil.Process(server.pid)]),
                "postgres": CpuMeter(pg) if pg is not None else None,
                "driver": CpuMeter(lambda: [me])}
            probe = Probe(op, probe_agent, watcher.conn)
            await probe.once()  # warm-up
            for phase in phases:
                r = await one_phase(phase, fleet=fleet, ids=ids, probe=probe, dash=dash, job_id=job["id"],
                                    meters=meters)
                results.append(r)
                print_phase(r, phones)
            assert fleet.agents[0].agent_id is not None
            alone = await statement_alone(dsn, fleet.agents[0].agent_id, ids[0], args.statement_runs)
            indexes = await watcher.conn.fetchval("SELECT count(*) FROM pg_indexes WHERE tablename = 'assignments'")
        finally:
            await watcher.close()
            with contextlib.suppress(Exception):
                await dash.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe_agent.disconnect(), 5)
            await fleet.stop()
    print_table(results, phones)
    print(f"\none agent's {args.phones_each} runs, new values, straight on the database under EXPLAIN ANALYZE, "
          f"{args.statement_runs} times each (load stopped):")
    for what, ex in alone.items():
        print(f"  {what:<38} {Summary.of(ex.took).ms()}; WAL records per row p50 "
              f"{percentile(ex.wal, 50) / args.phones_each:.1f}")
    print(f"assignments has {indexes} indexes; a non-HOT UPDATE writes an entry in each")
    sys.stdout.flush()


def fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def print_phase(r: Result, phones: int) -> None:
    want = 0 if r.phase.mode == "none" else phones / r.phase.every_sec
    acks = Summary.of(r.acks) if r.acks else None
    sizes = Summary.of([float(s) for s in r.batch_sizes]) if r.batch_sizes else None
    print(f"\n-- {r.phase.label}: {r.seconds:.1f} s")
    print(f"progress items recorded/s   {r.recorded / r.seconds:9,.0f} /s   (asked {want:,.0f}/s; sent "
          f"{r.items / r.seconds:,.0f}/s; failed messages {r.failed})")
    if acks is not None and sizes is not None:
        print(f"messages/s                  {r.messages / r.seconds:9,.1f} /s   (items per message p50 "
              f"{sizes.p50:.0f}, min {sizes.min:.0f}, max {sizes.max:.0f})")
        print(f"progress ack latency        {acks.ms()}")
        gaps = Summary.of(r.gaps)
        print(f"per phone, between two recorded reports: p50 {gaps.p50:.2f} s, p99 {gaps.p99:.2f} s, max "
              f"{gaps.max:.2f} s; over 1.0 s: {100 * sum(g > 1.0 for g in r.gaps) / len(r.gaps):.1f}%")
    print(f"CPU: server {r.server_cpu:.0f}%, PostgreSQL {fmt_pct(r.pg_cpu)}, driver+agents {r.driver_cpu:.0f}%, "
          f"other work on the machine {r.others_cpu:.0f}% (% of one core; 2 cores in all)")
    print(f"dashboard job:progress for the job  {r.pushes / r.seconds:.1f} /s")
    print(f"assignments UPDATEs (pg_stat) {r.updates:,}, HOT {100 * r.hot / max(r.updates, 1):.0f}%")
    if r.probe_assign:
        print(f"probe POST -> job:assign    {Summary.of(r.probe_assign).ms()}")
        print(f"probe PATCH -> job:paused   {Summary.of(r.probe_pause).ms()}")
    sys.stdout.flush()


def print_table(results: list[Result], phones: int) -> None:
    print(f"\n== summary, {phones} phones (markdown)")
    print("| phase | items/s recorded (asked) | msgs/s | ack p50 / p99 ms | server CPU | PostgreSQL CPU | driver CPU "
          "| other work CPU | job:progress/s | probe assign p50 / max ms | probe pause p50 / max ms | HOT "
          "| gap per phone p99 / max s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        want = 0 if r.phase.mode == "none" else phones / r.phase.every_sec
        acks = f"{Summary.of(r.acks).p50 * 1e3:.0f} / {Summary.of(r.acks).p99 * 1e3:.0f}" if r.acks else "-"
        pa, pp = Summary.of(r.probe_assign), Summary.of(r.probe_pause)
        gap = f"{percentile(r.gaps, 99):.2f} / {max(r.gaps):.2f}" if r.gaps else "-"
        print(f"| {r.phase.label} | {r.recorded / r.seconds:,.0f} ({want:,.0f}) | {r.messages / r.seconds:,.0f} "
              f"| {acks} | {r.server_cpu:.0f}% | {fmt_pct(r.pg_cpu)} | {r.driver_cpu:.0f}% "
              f"| {r.others_cpu:.0f}% | {r.pushes / r.seconds:.1f} | {pa.p50 * 1e3:.0f} / {pa.max * 1e3:.0f} "
              f"| {pp.p50 * 1e3:.0f} / {pp.max * 1e3:.0f} | {100 * r.hot / max(r.updates, 1):.0f}% | {gap} |")


async def main_async(args: argparse.Namespace) -> None:
    loaded = [Phase(mode.strip(), float(every), args.seconds)
              for mode in args.modes.split(",") for every in args.every.split(",")]
    phases = [Phase("none", 0.0, args.seconds)]
    for n in range(args.passes):
        phases += loaded if n % 2 == 0 else loaded[::-1]
    what_if = what_if_of(args)
    with postgres_root() as root:
        await measure(root, args, phases, what_if)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--phones-each", type=int, default=500)
    parser.add_argument("--every", default="0.5,1.0", help="report intervals to try, seconds (comma-separated)")
    parser.add_argument("--modes", default="window,link", help="window, link, or both")
    parser.add_argument("--seconds", type=float, default=25.0, help="length of each phase")
    parser.add_argument("--statement-runs", type=int, default=20)
    parser.add_argument("--fillfactor", type=int, default=0, help="what-if: the assignments table's fillfactor")
    parser.add_argument("--passes", type=int, default=2,
                        help="every phase this many times, every other pass in reverse order")
    parser.add_argument("--quick", action="store_true", help="2,000 phones (10 x 200), 8 s phases")
    parser.add_argument("--what-if", default="", metavar="A,B",
                        help="try server-side changes from the outside: " + "; ".join(f"{k}: {v}"
                                                                                      for k, v in WHAT_IF.items()))
    args = parser.parse_args()
    if args.quick:
        args.agents, args.phones_each, args.seconds, args.statement_runs = 10, 200, 8.0, 5
    print_header(MODULE, "progress reports: what running-step progress costs the server")
    run(main_async(args), limit_sec=1800)


if __name__ == "__main__":
    main()
