"""The real agent against a real server: throughput jobs of many taps, then open_url fan-outs."""

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.adb.cpu import CpuMeter
from bench.adb.phones import Phones
from bench.adb.spy import Spy, summarize_profile
from bench.adb.workload import POLL_SEC, TAP, URL, VIEW, Size
from bench.harness import Operator, Watcher, session, wait_until
from phonefleet import gc_policy
from phonefleet.agent.agent import Agent
from phonefleet.agent.config import AgentSettings
from phonefleet.protocol import events as ev
from phonefleet.server.auth import AGENT_PREFIX, hash_token, new_token


@dataclass
class AgentRun:
    startup: float = 0.0
    ready: float = 0.0
    rates: list[float] = field(default_factory=list)  # commands / (completed - POST)
    steady: list[float] = field(default_factory=list)  # commands / (last tap - first tap)
    job_sec: list[float] = field(default_factory=list)
    first_tap: list[float] = field(default_factory=list)  # POST -> first tap logged
    all_started: list[float] = field(default_factory=list)  # POST -> every phone logged its first tap
    last_tap: list[float] = field(default_factory=list)  # POST -> last tap logged
    outbox_max: list[int] = field(default_factory=list)  # the agent's outbox backlog, sampled every 0.25 s
    fanout: list[float] = field(default_factory=list)  # POST -> last VIEW logged
    assign: list[float] = field(default_factory=list)  # POST -> job:assign handled by the agent
    respond: list[float] = field(default_factory=list)  # POST -> 201
    cores: dict[str, float] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)


async def add_agent(dsn: str) -> str:
    from phonefleet.server.store import agents as agents_store

    token = new_token(AGENT_PREFIX)
    conn = await asyncpg.connect(dsn)
    try:
        await agents_store.create(conn, "bench-adb", hash_token(token))
    finally:
        await conn.close()
    return token


async def sample_outbox(agent: Agent, backlog: list[int]) -> None:
    while True:
        backlog.append(len(agent.outbox))
        await asyncio.sleep(0.25)


async def post_job(op: Operator, title: str, plan: list[dict[str, Any]], phones: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    job = await op.call("POST", "/api/jobs", {"title": title, "plan": plan, "target_type": "all_devices"}, expect=201)
    assert job["target_count"] == phones, job
    return int(job["id"]), time.perf_counter() - t0


TAPS = {"type": "tap", "x": 1, "y": 1}


@dataclass
class Driver:
    """The agent under test, the view of the database that says when a job is done, and what was measured."""

    agent: Agent
    watcher: Watcher
    op: Operator
    phones: Phones
    size: Size
    out: AgentRun
    assigned: list[float] = field(default_factory=list)  # when the agent handled each job:assign (time.time())

    @property
    def n(self) -> int:
        return len(self.phones.serials)


def watch_assignments(agent: Agent, assigned: list[float]) -> None:
    """Note when each pushed ``job:assign`` reaches the agent (the link looks the handler up on each one)."""
    original = agent.on_orders

    async def on_orders(orders: list[ev.AssignmentOrder], *, full: bool, since: float | None = None) -> None:
        if orders and not full:
            assigned.append(time.time())
        await original(orders, full=full, since=since)

    setattr(agent, "on_orders", on_orders)  # noqa: B010


async def throughput_job(d: Driver, i: int) -> float:
    """One job of ``size.taps`` taps to every phone; returns its seconds from POST to completed."""
    n, taps, out = d.n, d.size.taps, d.out
    marks = await d.phones.marks()
    backlog = [0]
    sampler = asyncio.create_task(sample_outbox(d.agent, backlog))
    w0, p0 = time.time(), time.perf_counter()
    job_id, _ = await post_job(d.op, f"taps {i}", [TAPS] * taps, n)
    t_done = await d.watcher.wait_job(job_id, ("completed",), timeout=60 + n * taps / 50, interval=POLL_SEC)
    sampler.cancel()
    out.outbox_max.append(max(backlog))
    hits = await d.phones.scan(marks, TAP)
    count = sum(h[0] for h in hits)
    assert count == n * taps, (count, n * taps)
    row = await d.watcher.job(job_id)
    assert row["completed_count"] == n, dict(row)
    first, last = min(h[1] for h in hits), max(h[2] for h in hits)
    out.first_tap.append(first - w0)
    out.all_started.append(max(h[1] for h in hits) - w0)
    out.last_tap.append(last - w0)
    out.job_sec.append(t_done - p0)
    out.rates.append(count / (t_done - p0))
    out.steady.append(count / (last - first))
    return t_done - p0


async def throughput(d: Driver, *, profile: bool, meter: CpuMeter) -> None:
    """The throughput jobs, one after another on idle phones, with CPU (and py-spy when asked) around them."""
    spy = Spy(Path(tempfile.gettempdir()) / f"pfbench-adb-{d.n}-{os.getpid()}.txt") if profile else None
    if spy is not None:
        await spy.start()
    meter.start()
    in_jobs = 0.0
    for i in range(d.size.jobs):
        if i:
            await d.watcher.wait_idle(d.n, timeout=60)
        in_jobs += await throughput_job(d, i)
    d.out.cores = meter.cores()
    if spy is not None:
        await spy.stop()
        d.out.profile = [f"py-spy samples in {spy.path}", *summarize_profile(spy.path, spy.wall, in_jobs)]


async def settled(agent: Agent) -> None:
    """Until the agent's outbox is empty: the last run's results sent and its files (a logcat per run) uploaded,
    so a fan-out starts on a quiet agent, as the floor's loops do."""
    async def empty() -> bool:
        return len(agent.outbox) == 0

    await wait_until(empty, timeout=120, interval=0.01, what="the agent's outbox empty")


async def fanout(d: Driver, i: int) -> None:
    """One open_url to every phone: POST until the last phone logged its VIEW intent."""
    await settled(d.agent)
    marks = await d.phones.marks()
    d.assigned.clear()
    waiting = asyncio.create_task(d.phones.wait_all(marks, VIEW, 60 + d.n / 10))
    await asyncio.sleep(0)
    w0 = time.time()
    job_id, respond = await post_job(d.op, f"open {i}", [{"type": "open_url", "url": URL, "duration_sec": 0}], d.n)
    stamps = await waiting
    d.out.fanout.append(max(stamps) - w0)
    d.out.respond.append(respond)
    if d.assigned:
        d.out.assign.append(max(d.assigned) - w0)
    await d.watcher.wait_job(job_id, ("completed",), timeout=60, interval=POLL_SEC)
    await d.watcher.wait_idle(d.n, timeout=60)


async def measure_agent(server_url: str, dsn: str, port: int, phones: Phones, *, size: Size, state_dir: Path,
                        profile: bool, meter: CpuMeter, probe_sec: float) -> AgentRun:
    out = AgentRun()
    n = len(phones.serials)
    settings = AgentSettings(server=server_url, token=await add_agent(dsn), state_dir=state_dir, adb_port=port,
                             probe_sec=probe_sec)
    agent = Agent(settings)
    assigned: list[float] = []
    watch_assignments(agent, assigned)
    watcher = await Watcher.connect(dsn)
    t0 = time.perf_counter()
    try:
        await agent.start()
        out.startup = time.perf_counter() - t0
        gc_policy.settle_after_start()  # as `phonefleet-agent run` does once it is up
        await watcher.wait_idle(n, timeout=120)
        out.ready = time.perf_counter() - t0
        async with session() as http:
            d = Driver(agent, watcher, Operator(http, server_url), phones, size, out, assigned)
            # warm-up: one short job (the workers, the outbox and the link's first batches)
            job_id, _ = await post_job(d.op, "warm-up", [TAPS] * 2, n)
            await watcher.wait_job(job_id, ("completed",), timeout=60 + n / 5, interval=POLL_SEC)
            await watcher.wait_idle(n, timeout=60)
            await throughput(d, profile=profile, meter=meter)
            await watcher.wait_idle(n, timeout=60)
            for i in range(size.fanouts):
                await fanout(d, i)
    finally:
        await watcher.close()
        await agent.stop()
    return out
