"""The floor: what the same work costs with nothing of phonefleet in the way.

* database: a bulk INSERT of N assignment-like rows and a bulk status UPDATE of them, through asyncpg with
  ``unnest``, on a scratch table shaped like ``assignments`` (same columns, defaults, checks and indexes)
  in the benchmark's own database;
* Socket.IO: a bare python-socketio ``AsyncServer`` on aiohttp in a child process, the same number of
  simulated agents connected to it, and an HTTP request that makes it emit a payload of the same size to
  every agent (``job:assign`` with an ack, or a ``job:paused``); timed from the request until the last
  agent has the message.

Run alone: ``python -m bench.floor [--quick]``.
"""

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import asyncpg

from bench.harness import (
    LOOPBACK,
    PLAN,
    Summary,
    database_facts,
    postgres_root,
    print_header,
    run,
    scratch_database,
    session,
)
from phonefleet.protocol import events as ev
from phonefleet.sim.agent import SimAgent

MODULE = "bench.floor"


# ---------------------------------------------------------------------- database


@dataclass
class DbFloor:
    insert: list[float]
    update: list[float]

    def both(self) -> list[float]:
        return [i + u for i, u in zip(self.insert, self.update, strict=True)]


async def db_floor(dsn: str, rows: int, runs: int, warmup: int = 2) -> DbFloor:
    """Bulk INSERT then bulk UPDATE of ``rows`` rows, ``runs`` times (after ``warmup`` untimed ones)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_floor")
        await conn.execute("CREATE TABLE bench_floor (LIKE assignments INCLUDING ALL)")
        device_ids = list(range(1, rows + 1))
        agent_ids = [1 + i // 500 for i in range(rows)]
        attempts = [1] * rows
        result = DbFloor([], [])
        for run in range(warmup + runs):
            t0 = time.perf_counter()
            inserted = await conn.fetch(
                """INSERT INTO bench_floor (job_id, device_id, agent_id, attempt)
                   SELECT $1, t.device_id, t.agent_id, t.attempt
                   FROM unnest($2::bigint[], $3::bigint[], $4::int[]) AS t(device_id, agent_id, attempt)
                   RETURNING id, device_id, agent_id, attempt""",
                run + 1, device_ids, agent_ids, attempts,
            )
            t1 = time.perf_counter()
            ids = [r["id"] for r in inserted]
            t2 = time.perf_counter()
            await conn.execute(
                """UPDATE bench_floor b SET status = t.status, finished_at = now()
                   FROM unnest($1::bigint[], $2::text[]) AS t(id, status)
                   WHERE b.id = t.id AND b.status IN ('pending', 'delivered', 'running')""",
                ids, ["completed"] * len(ids),
            )
            t3 = time.perf_counter()
            if run >= warmup:
                result.insert.append(t1 - t0)
                result.update.append(t3 - t2)
        await conn.execute("DROP TABLE bench_floor")
        return result
    finally:
        await conn.close()


# ---------------------------------------------------------------------- bare Socket.IO server


def assign_like(job_id: int, first_id: int, first_device: int, count: int) -> dict[str, Any]:
    """The same keys and sizes as the server's ``job:assign`` to an agent that takes plans once: the job's fields
    once, and one slot per phone."""
    return {
        "jobs": [{"job_id": job_id, "title": "fanout", "plan": PLAN, "priority": 0, "timeout_sec": 3600,
                  "allow_shell": False, "on_interrupt": "fail"}],
        "slots": [{"assignment_id": first_id + k, "job_id": job_id, "device_id": first_device + k,
                   "serial": f"pc{(first_device + k) // 1000:03d}-{(first_device + k) % 1000:04d}", "attempt": 1,
                   "status": "pending"} for k in range(count)],
    }


def _serve_bare(pipe: Connection, lean: bool) -> None:
    asyncio.run(_serve_bare_async(pipe, lean))


async def _serve_bare_async(pipe: Connection, lean: bool) -> None:
    import socketio
    from aiohttp import web

    from phonefleet.protocol.wire import OrJson as Json
    from phonefleet.protocol.wire import TextPacket as LeanPacket

    # The server's own configuration (orjson); ``lean`` also skips the per-emit walk looking for bytes.
    sio = socketio.AsyncServer(async_mode="aiohttp", json=Json, logger=False, engineio_logger=False,
                               serializer=LeanPacket if lean else "default",
                               max_http_buffer_size=16 * 1024 * 1024, ping_interval=10, ping_timeout=10)
    app = web.Application()
    sio.attach(app)
    sids: list[str] = []
    prepared: list[tuple[str, str, dict[str, Any]]] = []

    @sio.on("connect", namespace=ev.AGENT_NAMESPACE)  # type: ignore[untyped-decorator]
    async def connect(sid: str, _environ: Any, _auth: Any) -> bool:
        sids.append(sid)
        return True

    async def prepare(request: web.Request) -> web.Response:
        """Build the payloads outside the timed request: a floor for the emit, not for Python dicts."""
        body = await request.json()
        job_id, per, event = int(body["job_id"]), int(body["per_client"]), str(body["event"])
        prepared.clear()
        for i, sid in enumerate(sids):
            ids = range(job_id * 1_000_000 + i * per, job_id * 1_000_000 + (i + 1) * per)
            if event == ev.JOB_ASSIGN:
                data: dict[str, Any] = assign_like(job_id, ids[0], i * 1000, per)
            else:
                data = {"job_id": job_id, "assignment_ids": list(ids), "abort_running": False}
            prepared.append((sid, event, data))
        return web.json_response({"clients": len(sids)})

    async def emit(_request: web.Request) -> web.Response:
        def ack(*_args: Any) -> None:
            return None

        async def one(sid: str, event: str, data: dict[str, Any]) -> None:
            await sio.emit(event, data, to=sid, namespace=ev.AGENT_NAMESPACE,
                           callback=ack if event == ev.JOB_ASSIGN else None)

        await asyncio.gather(*(one(*p) for p in prepared))
        return web.json_response({"sent": len(prepared)})

    app.router.add_post("/prepare", prepare)
    app.router.add_post("/emit", emit)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pipe.send(("ready", port, os.getpid()))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await runner.cleanup()


@contextlib.asynccontextmanager
async def bare_server(lean: bool = False) -> AsyncIterator[str]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_bare, args=(child, lean), name="bare-socketio", daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    try:
        if not await loop.run_in_executor(None, parent.poll, 60):
            raise RuntimeError("bare Socket.IO server did not start")
        _, port, _pid = parent.recv()
        yield f"http://{LOOPBACK}:{port}"
    finally:
        if proc.is_alive():
            parent.send("stop")
            await loop.run_in_executor(None, proc.join, 10)
        if proc.is_alive():
            proc.kill()


async def sio_floor(n_agents: int, per_agent: int, runs: int, *, event: str = ev.JOB_ASSIGN,
                    warmup: int = 2, lean: bool = True) -> list[float]:
    """Seconds from the request until every agent holds its ``event``, per run."""
    times: list[float] = []
    async with bare_server(lean) as url, session() as http:
        agents = [SimAgent(url, "pfagt_floor", []) for _ in range(n_agents)]
        for a in agents:
            await a.connect(hello=False)
        try:
            for run in range(warmup + runs):
                job_id = run + 1
                async with http.post(url + "/prepare", json={"job_id": job_id, "per_client": per_agent,
                                                             "event": event}) as r:
                    assert (await r.json())["clients"] == n_agents
                for a in agents:
                    a.received.clear()
                    a.orders.clear()
                t0 = time.perf_counter()
                async with http.post(url + "/emit") as r:
                    await r.read()

                def seen(a: SimAgent) -> bool:
                    return any(n == event for n, _, _ in a.received)

                await asyncio.gather(*(a.wait_for(functools.partial(seen, a), 30) for a in agents))
                last = max(t for a in agents for n, _, t in a.received if n == event)
                if run >= warmup:
                    times.append(last - t0)
        finally:
            for a in agents:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(a.disconnect(), 5)
    return times


# ---------------------------------------------------------------------- standalone


async def main_async(args: argparse.Namespace) -> None:
    sizes = [(10, 100, 20)] if args.quick else [(10, 100, 30), (20, 500, 10)]
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
            for agents, per, runs in sizes:
                rows = agents * per
                db = await db_floor(dsn, rows, runs)
                print(f"\n-- {rows} rows / {agents} agents x {per}")
                print(f"db INSERT {rows:>6}          {Summary.of(db.insert).ms()}")
                print(f"db UPDATE {rows:>6}          {Summary.of(db.update).ms()}")
                assign = await sio_floor(agents, per, runs)
                print(f"socket.io job:assign emit   {Summary.of(assign).ms()}  (text packets, as the server)")
                walking = await sio_floor(agents, per, runs, lean=False)
                print(f"  python-socketio default   {Summary.of(walking).ms()}  (walks payloads for bytes)")
                paused = await sio_floor(agents, per, runs, event=ev.JOB_PAUSED)
                print(f"socket.io job:paused emit   {Summary.of(paused).ms()}")
                sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    args = parser.parse_args()
    print_header(MODULE, "floor: bare database work and bare Socket.IO emits")
    run(main_async(args))


if __name__ == "__main__":
    main()
