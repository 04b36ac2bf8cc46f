"""Several server nodes behind HAProxy on one PostgreSQL: fan-out and throughput for 1, 2 and 3 nodes,
then one node killed mid-run.

Each node is the server in its own child process (as ``bench.harness`` runs one); HAProxy (Debian's
package, run here as a child process with a generated config) balances them: HTTP mode, websocket
upgrade, ``balance leastconn``, ``option httpchk GET /livez``, ``option redispatch``. The simulated
agents connect only through HAProxy with the websocket transport alone, so no sticky sessions are
needed: a socket lives on the node that accepted its upgrade. The driver's REST calls go through HAProxy
too, so a job is created on whichever node the balancer picks, and the other nodes hear of it over
PostgreSQL LISTEN/NOTIFY (``server.bus``).

Fan-out: POST a job to every phone until every agent has its ``job:assign``. Throughput: the agents
finish at once (``auto_finish``) and jobs go back to back, each waited to ``completed`` in the database.
Kill: with a long job running on every phone over 3 nodes, one node gets SIGKILL; its agents reconnect
through HAProxy as a real agent does (at once, then backoff 0.5 s doubling to 3 s) and say hello; the
job is then finished and every assignment is counted in the database.
"""

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import socketio

from bench.harness import (
    LOOPBACK,
    Fleet,
    Operator,
    ServerProcess,
    Summary,
    Watcher,
    database_facts,
    postgres_root,
    print_header,
    run,
    scratch_database,
    session,
    wait_until,
)
from phonefleet.protocol import events as ev
from phonefleet.sim.agent import SimAgent, assigned_orders

MODULE = "bench.multinode"
INSTALL = "HAProxy is needed: install Debian's package with `apt-get install -y haproxy` (as root)"
HEALTH_ROUTE = "/livez"


@dataclass
class Size:
    agents: int
    phones_each: int
    fanout_runs: int
    jobs: int

    @property
    def phones(self) -> int:
        return self.agents * self.phones_each


# ---------------------------------------------------------------------- HAProxy


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if found is None:
        raise SystemExit(INSTALL)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def haproxy_config(port: int, backends: list[str]) -> str:
    """One frontend, one backend of server nodes; long tunnel timeout for the agents' websockets."""
    servers = "\n".join(f"    server node{i + 1} {url.removeprefix('http://')} check"
                        for i, url in enumerate(backends))
    return f"""global
    maxconn 4000
    nbthread 1

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1

frontend fleet
    bind {LOOPBACK}:{port}
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET {HEALTH_ROUTE}
    http-check expect status 200
    # A dead node is seen by the first refused connection (observe layer4); a busy one is not marked down:
    # /livez asks nothing of the database (/healthz waits for a pooled connection, which a 10,000-phone claim
    # keeps busy for seconds on this machine: 500 ms checks of it flapped the only node DOWN, and the balancer
    # answered 503), and a loop busy for a moment still answers within the check's timeout.
    timeout check 5s
    default-server inter 1s fall 3 rise 2 observe layer4 error-limit 1 on-error mark-down
{servers}
"""


@contextlib.asynccontextmanager
async def haproxy(backends: list[str]) -> AsyncIterator[str]:
    """HAProxy in the foreground as a child process; yields the frontend's URL once it answers."""
    binary = haproxy_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pfbench-haproxy-") as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(haproxy_config(port, backends))
        check = await asyncio.create_subprocess_exec(binary, "-c", "-q", "-f", str(cfg))
        if await check.wait() != 0:
            raise SystemExit(f"haproxy refused the generated config {cfg}")
        proc = await asyncio.create_subprocess_exec(binary, "-db", "-f", str(cfg), stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        log: list[str] = []

        async def drain() -> None:  # its notices (a server going DOWN, ...), kept for the report
            assert proc.stderr is not None
            async for line in proc.stderr:
                log.append(line.decode(errors="replace").rstrip())

        drained = asyncio.create_task(drain())
        url = f"http://{LOOPBACK}:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                deadline = time.perf_counter() + 10
                while True:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(url + HEALTH_ROUTE) as r:
                            if r.status == 200:
                                break
                    if proc.returncode is not None or time.perf_counter() > deadline:
                        raise RuntimeError("haproxy did not come up: " + "\n".join(log))
                    await asyncio.sleep(0.05)
            print(f"haproxy: {url} -> {', '.join(backends)} (pid {proc.pid})", file=sys.stderr)
            yield url
            for line in log:
                if "ALERT" in line or "WARNING" in line or "DOWN" in line or "UP" in line:
                    print(f"haproxy said: {line}")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await drained


@contextlib.asynccontextmanager
async def cluster(dsn: str, nodes: int) -> AsyncIterator[tuple[list[ServerProcess], str]]:
    """``nodes`` server processes on one database, and HAProxy in front of them."""
    servers = [ServerProcess(dsn) for _ in range(nodes)]
    try:
        for s in servers:  # one at a time: each start migrates nothing but opens its pool and listener
            await s.start()
        async with haproxy([s.url for s in servers]) as url:
            yield servers, url
    finally:
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)


async def agents_per_node(http: aiohttp.ClientSession, servers: list[ServerProcess]) -> list[int]:
    """Each live node's own count of agent sockets (its ``phonefleet_connected_agents`` gauge)."""
    counts = []
    for s in servers:
        try:
            counts.append(int((await Operator(http, s.url).metrics()).get("phonefleet_connected_agents", -1)))
        except aiohttp.ClientError:
            counts.append(0)
    return counts


# ---------------------------------------------------------------------- fan-out and throughput


@dataclass
class NodeFigures:
    nodes: str
    spread: list[int]
    fanout: Summary
    rate: float
    per_job: Summary


async def fanout_runs(fleet: Fleet, op: Operator, watcher: Watcher, runs: int, warmup: int) -> Summary:
    arrive: list[float] = []
    respond: list[float] = []
    for i in range(warmup + runs):
        fleet.forget()
        t0 = time.perf_counter()
        job = await op.create_job(f"fanout {i}")
        t_resp = time.perf_counter()
        assert job["target_count"] == fleet.phones, job
        t_last = await fleet.wait_assigned(job["id"], timeout=120)
        if i >= warmup:
            arrive.append(t_last - t0)
            respond.append(t_resp - t0)
        late = sorted(t - t0 for a in fleet.agents for n, d, t in a.received
                      if n == ev.JOB_ASSIGN and t - t0 > 5
                      and any(o["job_id"] == job["id"] for o in assigned_orders(d)))
        if late:  # which deliveries made a slow run: a few stragglers, or everyone
            print(f"run {i}: {len(late)} job:assign arrived more than 5 s after the POST (at "
                  f"{', '.join(f'{x:.1f}' for x in late[:10])}{' ...' if len(late) > 10 else ''} s); "
                  f"POST answered after {t_resp - t0:.1f} s")
        await fleet.finish_all(job["id"])
        await watcher.wait_job(job["id"], ("completed",), timeout=120, interval=0.01)
        await watcher.wait_idle(fleet.phones, timeout=60)
    print("fan-out runs, POST -> 201 / -> last job:assign (ms): "
          + ", ".join(f"{r * 1e3:.0f}/{a * 1e3:.0f}" for r, a in zip(respond, arrive, strict=True)))
    return Summary.of(arrive)


async def throughput_runs(fleet: Fleet, op: Operator, watcher: Watcher, jobs: int, warmup: int) -> list[float]:
    for a in fleet.agents:
        a.auto_finish = True
    per_job: list[float] = []
    try:
        for i in range(warmup + jobs):
            fleet.forget()
            t0 = time.perf_counter()
            job = await op.create_job(f"throughput {i}")
            assert job["target_count"] == fleet.phones, job
            t_done = await watcher.wait_job(job["id"], ("completed",), timeout=180)
            row = await watcher.job(job["id"])
            assert row["completed_count"] == fleet.phones, dict(row)
            if i >= warmup:
                per_job.append(t_done - t0)
            else:
                await watcher.wait_idle(fleet.phones, timeout=60)
    finally:
        for a in fleet.agents:
            a.auto_finish = False
    return per_job


async def measure_nodes(root: str, nodes: int, size: Size, warmup: int, *, direct: bool = False) -> NodeFigures:
    """``direct``: one node, agents and driver connected to it without HAProxy (the balancer's cost)."""
    async with scratch_database(root) as dsn, cluster(dsn, nodes) as (servers, balanced), session() as http:
        url = servers[0].url if direct else balanced
        t0 = time.perf_counter()
        fleet = await Fleet.start(url, dsn, size.agents, size.phones_each)
        watcher = await Watcher.connect(dsn)
        op = Operator(http, url)
        try:
            await watcher.wait_idle(size.phones, timeout=120)
            spread = await agents_per_node(http, servers)
            print(f"\n-- {nodes} node(s): {size.agents} agents x {size.phones_each} = {size.phones} phones connected "
                  f"{'directly' if direct else 'through haproxy'} in {time.perf_counter() - t0:.1f} s; "
                  f"agents per node {spread}")
            fanout = await fanout_runs(fleet, op, watcher, size.fanout_runs, warmup)
            print(f"fan-out, POST -> last job:assign   {fanout.ms()}")
            sys.stdout.flush()
            per_job = await throughput_runs(fleet, op, watcher, size.jobs, 1)
        finally:
            await watcher.close()
            await fleet.stop()
    rate = size.phones * len(per_job) / sum(per_job)
    jobs = Summary.of(per_job)
    print(f"throughput, completed assignments  {rate:9,.0f} /s   ({size.phones * len(per_job):,} in "
          f"{sum(per_job):.2f} s, {len(per_job)} jobs)")
    print(f"per job, POST -> completed in DB   {jobs.ms()}")
    sys.stdout.flush()
    return NodeFigures("1, direct" if direct else str(nodes), spread, fanout, rate, jobs)


# ---------------------------------------------------------------------- one node killed


@dataclass
class Reconnects:
    """What each agent whose node died went through: when it saw the drop and when its hello was answered."""

    dropped: dict[int, float] = field(default_factory=dict)
    greeted: dict[int, float] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    orders_after: dict[int, set[int]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    watching: bool = True


async def reconnect(agent: SimAgent, index: int, seen: Reconnects) -> None:
    """As ``agent.link`` does after a session ends: a new socket at once, then backoff 0.5 s doubling to 3 s."""
    backoff = 0.5
    while True:
        seen.attempts[index] = seen.attempts.get(index, 0) + 1
        try:
            await asyncio.wait_for(agent.reconnect(), 15)
        except (TimeoutError, socketio.exceptions.ConnectionError, aiohttp.ClientError, OSError, AssertionError):
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 3.0)
            continue
        seen.greeted[index] = time.perf_counter()
        seen.orders_after[index] = agent.assigned_ids()
        return


def watch_drops(fleet: Fleet, seen: Reconnects) -> None:
    for i, agent in enumerate(fleet.agents):
        def dropped(*_args: object, i: int = i, agent: SimAgent = agent) -> None:
            if i in seen.dropped or not seen.watching:
                return
            seen.dropped[i] = time.perf_counter()
            task = asyncio.get_running_loop().create_task(reconnect(agent, i, seen))
            seen.tasks.add(task)

        agent.sio.on("disconnect", dropped, namespace=ev.AGENT_NAMESPACE)


async def kill_test(root: str, size: Size) -> None:
    async with scratch_database(root) as dsn, cluster(dsn, 3) as (servers, url), session() as http:
        fleet = await Fleet.start(url, dsn, size.agents, size.phones_each)
        watcher = await Watcher.connect(dsn)
        op = Operator(http, url)
        seen = Reconnects()
        try:
            await watcher.wait_idle(size.phones, timeout=120)
            spread = await agents_per_node(http, servers)
            print(f"\n-- kill: 3 nodes, {size.phones} phones, agents per node {spread}")
            job = await op.create_job("long job, one node killed")
            await fleet.wait_assigned(job["id"], timeout=120)
            before = {i: a.assigned_ids() for i, a in enumerate(fleet.agents)}
            await asyncio.gather(*(a.start(sorted(before[i])) for i, a in enumerate(fleet.agents)))
            running = int(await watcher.conn.fetchval(
                "SELECT count(*) FROM assignments WHERE job_id = $1 AND status = 'running'", job["id"]))
            print(f"long job {job['id']}: {running} of {size.phones} assignments running")
            watch_drops(fleet, seen)
            victim = servers[1]
            t_kill = time.perf_counter()
            os.kill(victim.pid, signal.SIGKILL)
            print(f"SIGKILL node2 (pid {victim.pid}), which held {spread[1]} agents")

            async def all_back() -> bool:
                return len(seen.dropped) >= spread[1] and len(seen.greeted) == len(seen.dropped)

            while not await all_back():
                if time.perf_counter() - t_kill > 120:
                    raise TimeoutError(f"reconnects: {len(seen.greeted)} of {len(seen.dropped)} dropped agents")
                await asyncio.sleep(0.01)
            t_back = time.perf_counter()
            await asyncio.sleep(2)  # any late drop would show now (none is expected)
            live = [s for s in servers if s is not victim]
            after = await agents_per_node(http, live)
            lost = {i: before[i] - seen.orders_after[i] for i in seen.greeted if before[i] - seen.orders_after[i]}
            extra = {i: seen.orders_after[i] - before[i] for i in seen.greeted if seen.orders_after[i] - before[i]}
            await fleet.finish_all(job["id"])
            await watcher.wait_job(job["id"], ("completed",), timeout=120, interval=0.01)
            counts = await watcher.conn.fetch(
                "SELECT status, count(*) AS n, count(DISTINCT device_id) AS phones FROM assignments"
                " WHERE job_id = $1 GROUP BY status ORDER BY status", job["id"])
            row = await watcher.job(job["id"])
            events = await watcher.conn.fetch(
                "SELECT kind, count(*) AS n FROM job_events WHERE job_id = $1 GROUP BY kind ORDER BY kind",
                job["id"])
        finally:
            seen.watching = False  # the fleet's own disconnects below are not drops
            await watcher.close()
            for t in seen.tasks:
                t.cancel()
            await fleet.stop()

    drop_lag = Summary.of([seen.dropped[i] - t_kill for i in seen.dropped])
    back = Summary.of([seen.greeted[i] - t_kill for i in seen.greeted])
    print(f"agents that saw their socket drop: {len(seen.dropped)} (node2 held {spread[1]})")
    print(f"kill -> drop seen by the agent     {drop_lag.ms()}")
    print(f"kill -> hello answered again       {back.ms()}  (all back {t_back - t_kill:.2f} s after the kill)")
    print(f"connect attempts per dropped agent: max {max(seen.attempts.values())}, "
          f"total {sum(seen.attempts.values())}")
    print(f"agents per surviving node after: {after}")
    print(f"open orders handed back on hello: lost {sum(map(len, lost.values()))}, unexpected "
          f"{sum(map(len, extra.values()))}")
    print("assignments of the job by status: " + ", ".join(
        f"{r['status']} {r['n']} ({r['phones']} phones)" for r in counts))
    print(f"job: {dict(row)}")
    print("job events: " + ", ".join(f"{r['kind']} {r['n']}" for r in events))
    ok = (not lost and not extra and row["status"] == "completed" and row["completed_count"] == size.phones
          and [(r["status"], r["n"], r["phones"]) for r in counts] == [("completed", size.phones, size.phones)])
    print("verdict: " + ("NOTHING LOST, nothing duplicated" if ok else "MISMATCH (see above)"))
    sys.stdout.flush()


async def job_audit(watcher: Watcher, job_id: int) -> tuple[str, bool]:
    """Rows per status, and whether every phone ran exactly once and the job counts them all."""
    counts = await watcher.conn.fetch(
        "SELECT status, count(*) AS n, count(DISTINCT device_id) AS phones FROM assignments"
        " WHERE job_id = $1 GROUP BY status ORDER BY status", job_id)
    row = await watcher.job(job_id)
    text = ", ".join(f"{r['status']} {r['n']} ({r['phones']} phones)" for r in counts)
    ok = (row["status"] == "completed" and row["completed_count"] == row["target_count"] == row["assigned_count"]
          and [(r["status"], r["n"], r["phones"]) for r in counts]
          == [("completed", row["target_count"], row["target_count"])])
    return f"job {job_id}: {text}; counted {row['completed_count']}/{row['target_count']}", ok


async def kill_mid_throughput(root: str, size: Size) -> None:
    """Instant phones, a job in flight (assigns, acks and finishes crossing the node) when node2 dies."""
    async with scratch_database(root) as dsn, cluster(dsn, 3) as (servers, url), session() as http:
        fleet = await Fleet.start(url, dsn, size.agents, size.phones_each, auto_finish=True)
        watcher = await Watcher.connect(dsn)
        op = Operator(http, url)
        seen = Reconnects()
        audits: list[tuple[str, bool]] = []
        try:
            await watcher.wait_idle(size.phones, timeout=120)
            spread = await agents_per_node(http, servers)
            print(f"\n-- kill mid-run: 3 nodes, {size.phones} instant phones, agents per node {spread}")
            watch_drops(fleet, seen)
            victim = servers[1]
            job = await op.create_job("in flight when node2 dies")

            async def first_done() -> bool:
                return int((await watcher.job(job["id"]))["completed_count"]) > 0

            await wait_until(first_done, timeout=120, what="the job's first completion")
            t_kill = time.perf_counter()
            os.kill(victim.pid, signal.SIGKILL)
            at_kill = await watcher.conn.fetch(
                "SELECT status, count(*) AS n FROM assignments WHERE job_id = $1 GROUP BY status ORDER BY status",
                job["id"])
            try:
                await watcher.wait_job(job["id"], ("completed",), timeout=60, interval=0.01)
            except TimeoutError:
                print(f"dropped {len(seen.dropped)}, greeted again {len(seen.greeted)}, attempts "
                      f"{sum(seen.attempts.values())}")
                raise
            t_done = time.perf_counter()
            audits.append(await job_audit(watcher, job["id"]))
            await watcher.wait_idle(size.phones, timeout=120)
            after = await agents_per_node(http, [s for s in servers if s is not victim])
            nxt = await op.create_job("after the kill, on the two survivors")
            assert nxt["target_count"] == size.phones, nxt
            await watcher.wait_job(nxt["id"], ("completed",), timeout=120, interval=0.01)
            audits.append(await job_audit(watcher, nxt["id"]))
        finally:
            seen.watching = False
            await watcher.close()
            for t in seen.tasks:
                t.cancel()
            await fleet.stop()
    back = Summary.of([seen.greeted[i] - t_kill for i in seen.greeted]) if seen.greeted else None
    print(f"SIGKILL node2 (held {spread[1]} agents) at the job's first completion; assignments then: "
          + ", ".join(f"{r['status']} {r['n']}" for r in at_kill))
    print(f"job completed {t_done - t_kill:.2f} s after the kill")
    print(f"agents that saw their socket drop: {len(seen.dropped)}; hello answered again: {len(seen.greeted)}")
    if back is not None:
        print(f"kill -> hello answered again       {back.ms()}")
    print(f"agents per surviving node after: {after}")
    for text, _ in audits:
        print(text)
    print("verdict: " + ("NOTHING LOST, nothing duplicated" if all(ok for _, ok in audits)
                         else "MISMATCH (see above)"))
    sys.stdout.flush()


# ---------------------------------------------------------------------- main


async def main_async(args: argparse.Namespace) -> None:
    size = Size(50, 20, 5, 3) if args.quick else Size(args.agents, args.phones_each, args.runs, args.jobs)
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
        figures = []
        if not args.kill_only:
            if args.direct:
                figures.append(await measure_nodes(root, 1, size, args.warmup, direct=True))
            for nodes in args.nodes:
                figures.append(await measure_nodes(root, nodes, size, args.warmup))
        if not args.no_kill:
            await kill_test(root, size)
            await kill_mid_throughput(root, size)
    if figures:
        print(f"\n== summary: {size.phones} phones over {size.agents} agents, through haproxy")
        print("    nodes  agents per node      fan-out p50   fan-out p99   throughput")
        for f in figures:
            print(f"{f.nodes:>9}  {f.spread!s:<19} {f.fanout.p50 * 1e3:9.1f} ms  {f.fanout.p99 * 1e3:9.1f} ms"
                  f"  {f.rate:9,.0f} /s")
        print(f"({os.cpu_count()} cores: every node, PostgreSQL, haproxy and the simulated agents share them, so more "
              "nodes add cross-node work rather than speed)")


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 phones over 50 agents, fewer runs")
    parser.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3],
                        metavar="1,2,3")
    parser.add_argument("--agents", type=int, default=500, help="simulated agents (full size)")
    parser.add_argument("--phones-each", type=int, default=20, help="phones per agent (full size)")
    parser.add_argument("--runs", type=int, default=8, help="fan-out runs per node count (full size)")
    parser.add_argument("--jobs", type=int, default=5, help="throughput jobs per node count (full size)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--direct", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure one node without haproxy (the balancer's own cost)")
    parser.add_argument("--no-kill", action="store_true", help="skip the node-kill test")
    parser.add_argument("--kill-only", action="store_true", help="only the node-kill test")
    args = parser.parse_args()
    haproxy_binary()
    print_header(MODULE, "several nodes behind haproxy: fan-out, throughput, one node killed")
    run(main_async(args), limit_sec=3600)


if __name__ == "__main__":
    main()
