"""Job creation under a backlog: ``POST /api/jobs`` per second with 0, 1,000 and 10,000 jobs already waiting.

The waiting jobs are count jobs for phones that are not there (a ``lab-b`` tag no connected phone
carries), of higher priority than the new ones: every one ranks ahead of a new job and can take none
of the idle phones. The new jobs each want one phone of a fleet of simulated agents that finish every
run at once, so phones free up all the time (each a fill of its own) while jobs are created. A create
must cost the same whatever waits; the floor is the same server answering authenticated reads of
one job (``GET /api/jobs/{id}``) at the same concurrency.
"""

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
import asyncpg

from bench.harness import (
    ADMIN,
    PLAN,
    Fleet,
    Summary,
    Watcher,
    database_facts,
    postgres_root,
    print_header,
    run,
    running_server,
    scratch_database,
    verdict,
    wait_until,
)

MODULE = "bench.create_rate"
GOAL_RATE = 500.0
GOAL_RATIO = 0.8


async def add_backlog(dsn: str, n: int) -> None:
    """``n`` active count jobs that no connected phone may take, inserted directly (setup is not measured)."""
    if n == 0:
        return
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO jobs (title, plan, target_type, target_value, target_count, filters, priority, status,
                                 timeout_sec, activated_at)
               SELECT 'waiting for lab B ' || g, $2::jsonb, 'device_count', 5, 5, '{"tags": ["lab-b"]}'::jsonb, 10,
                      'active', 3600, now()
               FROM generate_series(1, $1) AS g""",
            n, json.dumps(PLAN),
        )
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


async def creates(http: Any, url: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    """``total`` creates from ``concurrency`` clients at once; returns (seconds, each create's latency)."""
    body = {"title": "new", "plan": [{"type": "open_url", "url": "https://example.com/new", "duration_sec": 0}],
            "target_type": "device_count", "target_value": 1}
    latencies: list[float] = []
    left = total

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            async with http.post(url + "/api/jobs", json=body) as r:
                await r.read()
                assert r.status == 201, (r.status, await r.text())
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


async def reads(http: Any, url: str, total: int, concurrency: int, job_id: int) -> float:
    """The floor: the same number of authenticated requests that read one job, at the same concurrency."""
    left = total

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with http.get(f"{url}/api/jobs/{job_id}") as r:
                await r.read()
                assert r.status == 200

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def measure(root: str, backlog: int, *, total: int, concurrency: int, agents: int,
                  phones_each: int) -> tuple[float, float]:
    async with scratch_database(root) as dsn, running_server(dsn) as server, aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {ADMIN}"}, connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=120)) as http:
        fleet = await Fleet.start(server.url, dsn, agents, phones_each, auto_finish=True)
        watcher = await Watcher.connect(dsn)
        try:
            await watcher.wait_idle(fleet.phones, timeout=60)
            await add_backlog(dsn, backlog)
            t0 = time.perf_counter()

            async def settled() -> bool:  # the sweep has found every waiting job has no phone to wait for
                return bool(await watcher.conn.fetchval("SELECT count(*) FROM jobs WHERE starved") >= backlog)

            await wait_until(settled, timeout=300, interval=0.1, what="the backlog marked as waiting")
            if backlog:
                took = time.perf_counter() - t0
                print(f"   (the maintenance sweep marked the {backlog} waiting jobs in {took:.1f} s)")
            await creates(http, server.url, max(50, total // 10), concurrency)  # warm-up
            seconds, latencies = await creates(http, server.url, total, concurrency)
            last = await watcher.conn.fetchval("SELECT max(id) FROM jobs")
            floor = await reads(http, server.url, total, concurrency, last)
            waiting = await watcher.conn.fetchval(
                "SELECT count(*) FROM jobs WHERE status = 'active' AND assigned_count < target_count")
            if backlog == 0:
                print(f"database: {await database_facts(dsn)}")
        finally:
            await watcher.close()
            await fleet.stop()
    rate = total / seconds
    print(f"-- backlog {backlog:>6} waiting jobs: {rate:8.0f} creates/s   latency {Summary.of(latencies).ms()}")
    print(f"   floor: {total / floor:8.0f} authenticated one-row reads/s at the same concurrency; "
          f"creates at {rate / (total / floor):.2f} of it; jobs still waiting at the end: {waiting}")
    sys.stdout.flush()
    return rate, total / floor


async def main_async(args: argparse.Namespace) -> None:
    backlogs = [int(b) for b in args.backlogs.split(",")]
    with postgres_root() as root:
        rates = [(b, (await measure(root, b, total=args.creates, concurrency=args.concurrency, agents=args.agents,
                                    phones_each=args.phones_each))[0]) for b in backlogs]
    print()
    for backlog, rate in rates:
        print(f"goal >= {GOAL_RATE:.0f} creates/s with {backlog} waiting: "
              f"{verdict(rate, GOAL_RATE, lower_is_better=False)} ({rate:.0f}/s)")
    ratio = rates[-1][1] / rates[0][1]
    print(f"goal last/first >= {GOAL_RATIO}: {verdict(ratio, GOAL_RATIO, lower_is_better=False)} ({ratio:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer creates")
    parser.add_argument("--backlogs", default="0,1000,10000", help="waiting jobs before each run")
    parser.add_argument("--creates", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--phones-each", type=int, default=50)
    args = parser.parse_args()
    if args.quick:
        args.creates = 600
    print_header(MODULE, "job creation under a backlog of waiting jobs")
    run(main_async(args))


if __name__ == "__main__":
    main()
