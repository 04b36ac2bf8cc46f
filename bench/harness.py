"""What every benchmark shares: a database, the server in a child process, a fleet of simulated agents,
and the statistics.

The server runs alone in a child process (its own event loop and interpreter, as in production); the
simulated agents and the benchmark driver share the parent's loop. On a 2-core machine this keeps the
clients' JSON decoding and acks from stealing the server's loop, so a figure is the server's.
"""

import argparse
import asyncio
import atexit
import contextlib
import functools
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.sim.agent import SimAgent, assigned_orders

ADMIN = "pfadm_bench-admin-token"
LOOPBACK = "127.0.0.1"

# The job every benchmark posts: one open_url step, as in the README's first example.
PLAN: list[dict[str, Any]] = [{"type": "open_url", "url": "https://example.com", "duration_sec": 60}]
LAB_PLAN: list[dict[str, Any]] = [
    {"type": "install_apk", "name": "install the build under test",
     "url": "https://artifacts.example.com/builds/app-release-4.12.0-rc3.apk",
     "sha256": "9f2c1e5b7a3d4c8e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60", "grant_permissions": True},
    {"type": "launch_app", "name": "cold start", "package": "com.example.shop",
     "activity": "com.example.shop.ui.MainActivity", "stop_first": True},
    {"type": "wait", "name": "let it settle", "duration_sec": 3},
    {"type": "tap", "name": "accept terms", "x": 540, "y": 1820},
    {"type": "text", "name": "search box", "text": "wireless headphones"},
    {"type": "keyevent", "name": "submit", "key": "KEYCODE_ENTER"},
    {"type": "swipe", "name": "scroll results", "x1": 540, "y1": 1600, "x2": 540, "y2": 400, "duration_ms": 400},
    {"type": "screenshot", "name": "results page"},
    {"type": "run_tests", "name": "checkout suite",
     "runner": "com.example.shop.test/androidx.test.runner.AndroidJUnitRunner",
     "args": {"class": "com.example.shop.CheckoutTest", "size": "medium", "coverage": "false"}},
    {"type": "stop_app", "name": "clean up", "package": "com.example.shop"},
]
"""A device lab's usual job (install, start, a few inputs, a screenshot, instrumentation tests): what a fan-out
carries per phone when each order holds its plan (about 1 KB of JSON)."""


# ---------------------------------------------------------------------- statistics and output


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Summary:
    n: int
    p50: float
    p99: float
    max: float
    mean: float
    min: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        return cls(len(values), percentile(values, 50), percentile(values, 99), max(values),
                   statistics.fmean(values), min(values))

    def ms(self) -> str:
        return (f"p50 {self.p50 * 1e3:8.1f} ms   p99 {self.p99 * 1e3:8.1f} ms   max {self.max * 1e3:8.1f} ms"
                f"   (min {self.min * 1e3:.1f}, mean {self.mean * 1e3:.1f}, n={self.n})")


def command(module: str) -> str:
    return " ".join(["python", "-m", module, *map(shlex.quote, sys.argv[1:])])


def print_header(module: str, title: str) -> None:
    print(f"== {title}")
    print(f"command: {command(module)}")
    db = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL (pgserver)"
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}, database: {db}")
    print("layout: server in a child process; simulated agents + driver in this process; loopback only")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before the run: {load} (other work on the machine widens the tails)")
    sys.stdout.flush()


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """``--breakdown`` and ``--what-if``, shared by the benchmarks that run the server."""
    parser.add_argument("--breakdown", action="store_true",
                        help="time the server's steps (an instrumented run: figures are slightly pessimistic)")
    parser.add_argument("--what-if", default="", metavar="A,B",
                        help="try server-side changes from the outside: " + "; ".join(f"{k}: {v}"
                                                                                      for k, v in WHAT_IF.items()))


def _spin(deadline: float) -> None:
    while time.monotonic() < deadline:
        pass


class BackgroundLoad:
    """``spinners`` processes that keep a core each busy at normal priority (the machine as loaded by others), and
    the load the runs saw: the 1-minute load average, and runnable tasks sampled now and then (``sample``)."""

    def __init__(self, spinners: int, limit_sec: float = 1800) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.spinners = spinners
        self._procs = [ctx.Process(target=_spin, args=(time.monotonic() + limit_sec,), daemon=True,
                                   name="background-load") for _ in range(spinners)]
        self._runnable: list[int] = []

    def __enter__(self) -> "BackgroundLoad":
        for proc in self._procs:
            proc.start()
        if self.spinners:  # the 1-minute average takes a minute or so to show them
            deadline = time.monotonic() + 150
            while os.getloadavg()[0] < self.spinners - 0.05 and time.monotonic() < deadline:
                time.sleep(1)
            print(f"background load: {self.spinners} spinning process(es); load average "
                  f"{os.getloadavg()[0]:.2f} before the benchmark starts", flush=True)
        return self

    def __exit__(self, *_: object) -> None:
        for proc in self._procs:
            proc.kill()
            proc.join(5)

    def sample(self) -> None:
        """Runnable tasks now (/proc/loadavg's fourth field), minus this sample's own reader."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            self._runnable.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)

    def describe(self) -> str:
        runnable = f", runnable tasks p50 {statistics.median(self._runnable):.0f} (max {max(self._runnable)}, " \
                   f"{len(self._runnable)} samples)" if self._runnable else ""
        return (f"{self.spinners} spinning process(es) beside the benchmark; load average now "
                f"{os.getloadavg()[0]:.2f}{runnable}")


def what_if_of(args: argparse.Namespace) -> frozenset[str]:
    chosen = frozenset(x.strip() for x in str(args.what_if).split(",") if x.strip())
    unknown = chosen - set(WHAT_IF)
    if unknown:
        raise SystemExit(f"unknown --what-if {sorted(unknown)}; choose from {sorted(WHAT_IF)}")
    for name in sorted(chosen):
        print(f"what-if: {name}: {WHAT_IF[name]}")
    return chosen


def verdict(value: float, goal: float, *, lower_is_better: bool = True) -> str:
    ok = value <= goal if lower_is_better else value >= goal
    return "MEETS goal" if ok else "MISSES goal"


# ---------------------------------------------------------------------- database


@contextlib.contextmanager
def postgres_root() -> Iterator[str]:
    """A server-level DSN: ``DATABASE_URL`` when set, else a private embedded PostgreSQL in a temp dir."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from phonefleet.server.database import EmbeddedPostgres

    tmp = tempfile.mkdtemp(prefix="pfbench-pg-")
    # pgserver's own exit hook writes into the runtime dir inside; registered first, this runs after it.
    atexit.register(shutil.rmtree, tmp, True)
    embedded = EmbeddedPostgres(Path(tmp))
    try:
        yield embedded.start()
    finally:
        embedded.stop()


def _with_db(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@contextlib.asynccontextmanager
async def scratch_database(root: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one benchmark run, dropped afterwards."""
    from phonefleet.server.database import migrate

    name = f"pfbench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(root)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    dsn = _with_db(root, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        conn = await asyncpg.connect(root)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()


async def database_facts(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        settings = {k: await conn.fetchval(f"SHOW {k}") for k in ("fsync", "synchronous_commit", "shared_buffers")}
    finally:
        await conn.close()
    return f"PostgreSQL {version} " + " ".join(f"{k}={v}" for k, v in settings.items())


# ---------------------------------------------------------------------- the server, in a child process


# "What if" experiments: a server-side change tried from the outside, to size a suggested speed-up.
WHAT_IF = {
    "lean-packets": "python-socketio told that no payload holds bytes (Packet.uses_binary_events = False)",
    "no-fk": "assignments without its foreign keys (none are left since migrations 0002 and 0011: a no-op)",
    "async-commit": "synchronous_commit = off for the benchmark database (no WAL flush wait per commit)",
    "pool-30": "db_pool_max = 30 instead of 10",
    "claim-whole": "a fan-out claimed in one statement, its orders sent after it (no CLAIM_CHUNK chunks)",
    "gc-default": "CPython's garbage collection defaults, as before issue 14 (no gc_policy.settle_after_start: "
                  "start-up's objects walked by every full collection, gen0 threshold 700)",
}


async def _apply_what_if_db(dsn: str, what_if: frozenset[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if "no-fk" in what_if:
            for fk in ("job_id", "device_id", "agent_id"):
                await conn.execute(f"ALTER TABLE assignments DROP CONSTRAINT IF EXISTS assignments_{fk}_fkey")
        if "async-commit" in what_if:
            await conn.execute(f"ALTER DATABASE {await conn.fetchval('SELECT current_database()')}"
                               " SET synchronous_commit = off")
    finally:
        await conn.close()


def _serve(dsn: str, overrides: dict[str, Any], breakdown: bool, what_if: frozenset[str], pipe: Connection) -> None:
    asyncio.run(_serve_async(dsn, overrides, breakdown, what_if, pipe))


async def _serve_async(dsn: str, overrides: dict[str, Any], breakdown: bool, what_if: frozenset[str],
                       pipe: Connection) -> None:
    from aiohttp import web

    from phonefleet.logs import setup_logging
    from phonefleet.server.app import create_app
    from phonefleet.server.config import Settings

    setup_logging("WARNING")
    if "lean-packets" in what_if:
        import socketio

        socketio.packet.Packet.uses_binary_events = False
    if "pool-30" in what_if:
        overrides = {**overrides, "db_pool_max": 30}
    if "claim-whole" in what_if:
        from phonefleet.server import distributor

        distributor.CLAIM_CHUNK = 10**9
    with tempfile.TemporaryDirectory(prefix="pfbench-srv-") as tmp:
        settings = Settings(**{"database_url": dsn, "admin_token": ADMIN, "data_dir": Path(tmp), "port": 0,
                               **overrides})
        app = create_app(settings)
        if breakdown:
            from bench import spans

            spans.install(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if "gc-default" not in what_if:  # as `phonefleet-server run` does once it is up
            from phonefleet import gc_policy

            gc_policy.settle_after_start()
        pipe.send(("ready", port, os.getpid()))
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        await runner.cleanup()
    pipe.send("stopped")


class ServerProcess:
    """``create_app(Settings(...))`` on a loopback port, in a spawned child process."""

    def __init__(self, dsn: str, *, breakdown: bool = False, what_if: frozenset[str] = frozenset(),
                 **overrides: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(dsn, overrides, breakdown, what_if, child),
                                 name="phonefleet-server", daemon=True)
        self.dsn = dsn
        self.what_if = what_if
        self.url = ""
        self.pid = 0
        self._spy: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60) -> "ServerProcess":
        await _apply_what_if_db(self.dsn, self.what_if)
        self._proc.start()
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._pipe.poll, timeout)
        if not ready:
            self._proc.kill()
            raise RuntimeError("server did not start")
        _, port, self.pid = self._pipe.recv()
        self.url = f"http://{LOOPBACK}:{port}"
        print(f"server: {self.url} (pid {self.pid})", file=sys.stderr)
        out = os.environ.get("PFBENCH_PYSPY")
        if out:  # sample the server for the whole run: PFBENCH_PYSPY=/tmp/prof python -m bench.fanout
            path = f"{out}-{self.pid}.txt"
            self._spy = await asyncio.create_subprocess_exec(
                "py-spy", "record", "--pid", str(self.pid), "--rate", "250", "--format", "raw", "--output", path,
                stdout=asyncio.subprocess.DEVNULL)
            print(f"server: sampled by py-spy into {path}", file=sys.stderr)
            await asyncio.sleep(1.0)
        return self

    async def stop(self) -> None:
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)
            await asyncio.wait_for(self._spy.wait(), 30)
            self._spy = None
        if not self._proc.is_alive():
            return
        self._pipe.send("stop")
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self._pipe.poll, 30):
            self._pipe.recv()
        await loop.run_in_executor(None, self._proc.join, 10)
        if self._proc.is_alive():
            self._proc.kill()


@contextlib.asynccontextmanager
async def running_server(dsn: str, *, breakdown: bool = False, what_if: frozenset[str] = frozenset(),
                         **overrides: Any) -> AsyncIterator[ServerProcess]:
    server = await ServerProcess(dsn, breakdown=breakdown, what_if=what_if, **overrides).start()
    try:
        yield server
    finally:
        await server.stop()


# ---------------------------------------------------------------------- waiting


async def agent_token(dsn: str, name: str) -> str:
    """Register an agent (as ``phonefleet-server agents add`` does) and return its token."""
    from phonefleet.server.tokens import add_agent

    conn = await asyncpg.connect(dsn)
    try:
        return (await add_agent(conn, name))[1]
    finally:
        await conn.close()


async def wait_until(check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.002,
                     what: str = "condition") -> float:
    """Re-check until true; returns the perf_counter time it was first seen true."""
    deadline = time.perf_counter() + timeout
    while True:
        if await check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        await asyncio.sleep(interval)


class Watcher:
    """The driver's own database connection: job status and idle phones, straight from the source of truth."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> "Watcher":
        return cls(await asyncpg.connect(dsn))

    async def close(self) -> None:
        await self.conn.close()

    async def job(self, job_id: int) -> asyncpg.Record:
        row = await self.conn.fetchrow(
            "SELECT status, assigned_count, completed_count, failed_count, target_count FROM jobs WHERE id = $1",
            job_id)
        assert row is not None
        return row

    async def idle(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM devices WHERE state = 'idle'"))

    async def wait_job(self, job_id: int, statuses: tuple[str, ...], timeout: float, interval: float = 0.002) -> float:
        async def check() -> bool:
            return (await self.job(job_id))["status"] in statuses

        try:
            return await wait_until(check, timeout=timeout, interval=interval, what=f"job {job_id} in {statuses}")
        except TimeoutError as exc:
            counts = await self.conn.fetch("SELECT status, count(*) AS n FROM assignments WHERE job_id = $1"
                                           " GROUP BY status", job_id)
            raise TimeoutError(f"{exc}: job {dict(await self.job(job_id))}, assignments "
                               f"{ {r['status']: r['n'] for r in counts} }") from None

    async def wait_idle(self, phones: int, timeout: float) -> None:
        async def check() -> bool:
            return await self.idle() == phones

        await wait_until(check, timeout=timeout, interval=0.01, what=f"{phones} idle phones")


# ---------------------------------------------------------------------- the fleet


@dataclass
class Fleet:
    """Simulated agents (``phonefleet.sim.agent.SimAgent``), all connected over Socket.IO on loopback."""

    url: str
    agents: list[SimAgent]
    phones_each: int
    _beats: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False

    @property
    def phones(self) -> int:
        return len(self.agents) * self.phones_each

    @classmethod
    async def start(cls, url: str, dsn: str, n_agents: int, phones_each: int, *, auto_finish: bool = False,
                    heartbeat_sec: float = 5.0) -> "Fleet":
        from phonefleet.server.tokens import add_agent

        tokens = []
        conn = await asyncpg.connect(dsn)
        try:
            for i in range(n_agents):
                tokens.append((await add_agent(conn, f"bench-pc{i:03d}"))[1])
        finally:
            await conn.close()
        agents = [SimAgent(url, t, [f"pc{i:03d}-{p:04d}" for p in range(phones_each)], auto_finish=auto_finish)
                  for i, t in enumerate(tokens)]
        for a in agents:  # one at a time: a burst of hellos is not what is being measured
            await a.connect()
        fleet = cls(url, agents, phones_each)
        fleet._beats = [asyncio.create_task(fleet._heartbeat(a, heartbeat_sec)) for a in agents]
        return fleet

    async def _heartbeat(self, agent: SimAgent, every: float) -> None:
        """What a real agent does every ``heartbeat_sec``: keep itself (and its leases) alive."""
        while not self._stopping:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await agent.call(ev.AGENT_HEARTBEAT, {"running": []}, timeout=10)

    async def stop(self) -> None:
        self._stopping = True
        for t in self._beats:
            t.cancel()
        await asyncio.wait(self._beats, timeout=5)
        for a in self.agents:  # bounded: a client's disconnect can wait on its read loop
            with contextlib.suppress(Exception):
                await asyncio.wait_for(a.disconnect(), 5)

    def forget(self) -> None:
        """Drop what the agents have seen, so the next run's waits look only at new events."""
        for a in self.agents:
            a.received.clear()
            a.orders.clear()

    async def wait_assigned(self, job_id: int, timeout: float) -> float:
        """Until every phone's order for ``job_id`` has arrived; returns the latest arrival (perf_counter)."""

        def enough(a: SimAgent) -> bool:
            return sum(1 for o in a.orders.values() if o["job_id"] == job_id) >= self.phones_each

        await asyncio.gather(*(a.wait_for(functools.partial(enough, a), timeout) for a in self.agents))
        return max(t for a in self.agents for n, d, t in a.received
                   if n == ev.JOB_ASSIGN and any(o["job_id"] == job_id for o in assigned_orders(d)))

    async def wait_control(self, event: str, job_id: int, agents: Sequence[SimAgent], timeout: float) -> float:
        """Until each of ``agents`` has received ``event`` for ``job_id``; returns the latest arrival."""

        def seen(a: SimAgent) -> bool:
            return any(n == event and d.get("job_id") == job_id for n, d, _ in a.received)

        await asyncio.gather(*(a.wait_for(functools.partial(seen, a), timeout) for a in agents))
        return max(t for a in agents for n, d, t in a.received if n == event and d.get("job_id") == job_id)

    async def finish_all(self, job_id: int) -> None:
        async def one(a: SimAgent) -> None:
            ids = [i for i, o in a.orders.items() if o["job_id"] == job_id]
            if ids:
                ack = await a.finish(ids)
                assert ack["ok"], ack
                assert len(ack["data"]["recorded"]) == len(ids), (len(ids), ack)

        await asyncio.gather(*(one(a) for a in self.agents))


# ---------------------------------------------------------------------- REST as the operator uses it


class Operator:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.headers = {"Authorization": f"Bearer {ADMIN}"}

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        async with self.session.request(method, self.url + path, json=body, headers=self.headers) as r:
            data = await r.json()
            if r.status != expect:
                raise RuntimeError(f"{method} {path} answered {r.status}: {data}")
            return data

    async def create_job(self, title: str, plan: list[dict[str, Any]] = PLAN) -> dict[str, Any]:
        body = {"title": title, "plan": plan, "target_type": "all_devices"}
        job: dict[str, Any] = await self.call("POST", "/api/jobs", body, expect=201)
        return job

    async def set_status(self, job_id: int, status: str) -> dict[str, Any]:
        job: dict[str, Any] = await self.call("PATCH", f"/api/jobs/{job_id}", {"status": status})
        return job

    async def spans(self) -> list[list[Any]]:
        """The server's step timings since the last call (only with ``--breakdown``)."""
        data: list[list[Any]] = await self.call("GET", "/bench/spans")
        return data

    async def metrics(self) -> dict[str, float]:
        """The server's Prometheus counters (plain samples only)."""
        async with self.session.get(self.url + "/metrics", headers=self.headers) as r:
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10), timeout=aiohttp.ClientTimeout(total=120))


def run(main: Coroutine[Any, Any, None], limit_sec: float = 900) -> None:
    """``asyncio.run`` with a hard bound: a benchmark that hangs fails instead of running on."""
    async def bounded() -> None:
        await asyncio.wait_for(main, limit_sec)

    asyncio.run(bounded())
