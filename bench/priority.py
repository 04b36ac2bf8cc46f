"""Priority under contention: 200 jobs of mixed priority competing for 1,000 phones.

Distribution is stopped (``POST /api/scheduler/stop``) while the jobs are posted, so every job is
queued before the first phone is handed out; then it is started and the clock runs until the last
job is completed in the database. Phones finish at once (simulated agents with ``auto_finish``), so
each job's slots go out in waves as phones come free, and the order of service is the distributor's
alone. Figures:

- assignments/s: assignments completed / (last job completed - start);
- order fidelity, from the assignments' ``created_at`` in the database, over every pair of jobs of
  different priority: the share of pairs where the higher-priority job got its first phone no later
  than the lower one (1.0 = perfect); Kendall's tau between priority and service order; and strict
  inversions: pairs where a lower-priority job got all its phones before a higher one got its first.

A second scenario posts the same jobs while distribution runs (8 requests in flight), so jobs arrive
into a busy fleet. There the figure is priority violations: phones handed to a job while a job of
higher priority, open for more than a grace (``GRACES_MS``) and still short of phones, could have taken that
phone (it had not run it). Lower is better; 0 means every phone went to the best job it could serve.
"""

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.harness import (
    PLAN,
    Fleet,
    Operator,
    Watcher,
    add_server_options,
    database_facts,
    postgres_root,
    print_header,
    run,
    running_server,
    scratch_database,
    session,
    what_if_of,
)

MODULE = "bench.priority"
GRACES_MS = (0, 50, 200)
"""Transaction start times stamp the rows, and a fill pass works from the jobs visible when it began:
a job younger than the grace may not have been visible yet. Violations are counted at each grace."""
IN_FLIGHT = 8


@dataclass
class Size:
    agents: int
    phones_each: int
    jobs: int
    per_job: int

    @property
    def phones(self) -> int:
        return self.agents * self.phones_each


@dataclass
class Fidelity:
    pairs: int
    agreeing: int
    strict_inversions: int
    tau: float


def fidelity(rows: list[asyncpg.Record]) -> Fidelity:
    """rows: priority, first (first assignment's time), last (last assignment's time), per job."""
    pairs = agreeing = inversions = 0
    concordant = discordant = 0
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["priority"] == b["priority"]:
                continue
            high, low = (a, b) if a["priority"] > b["priority"] else (b, a)
            pairs += 1
            agreeing += high["first"] <= low["first"]
            inversions += low["last"] < high["first"]
            if high["first"] < low["first"]:
                concordant += 1
            elif high["first"] > low["first"]:
                discordant += 1
    tau = (concordant - discordant) / pairs if pairs else float("nan")
    return Fidelity(pairs, agreeing, inversions, tau)


async def wait_all_completed(conn: asyncpg.Connection, ids: list[int], timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while True:
        done = await conn.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1::bigint[]) AND status = 'completed'",
                                   ids)
        if done == len(ids):
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{done}/{len(ids)} jobs completed after {timeout} s")
        await asyncio.sleep(0.005)


VIOLATIONS_SQL = """
    WITH span AS (
        SELECT j.id, j.priority, j.activated_at, max(a.created_at) AS last_assigned
        FROM jobs j JOIN assignments a ON a.job_id = j.id WHERE j.id = ANY($1::bigint[]) GROUP BY j.id
    )
    SELECT count(*) FROM assignments a JOIN jobs l ON l.id = a.job_id
    WHERE a.job_id = ANY($1::bigint[]) AND EXISTS (
        SELECT 1 FROM span h
        WHERE h.priority > l.priority AND h.activated_at < a.created_at - make_interval(secs => $2)
          AND h.last_assigned > a.created_at
          AND NOT EXISTS (SELECT 1 FROM assignments x WHERE x.job_id = h.id AND x.device_id = a.device_id
                          AND x.created_at <= a.created_at))
"""


async def post_jobs(op: Operator, priorities: list[int], per_job: int, in_flight: int) -> list[int]:
    """Post the jobs in order, ``in_flight`` requests at a time; returns their ids in posting order."""
    ids: list[int] = [0] * len(priorities)
    gate = asyncio.Semaphore(in_flight)

    async def one(n: int, priority: int) -> None:
        body: dict[str, Any] = {"title": f"priority {priority} #{n}", "plan": PLAN, "priority": priority,
                                "target_type": "device_count", "target_value": per_job}
        async with gate:
            ids[n] = (await op.call("POST", "/api/jobs", body, expect=201))["id"]

    await asyncio.gather(*(one(n, p) for n, p in enumerate(priorities)))
    return ids


def draw_priorities(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(-50, 50) for _ in range(n)]


@contextlib.asynccontextmanager
async def fleet_and_server(root: str, size: Size, what_if: frozenset[str]) -> AsyncIterator[tuple[Operator, Watcher]]:
    """A scratch database, the server, and ``size.phones`` instant phones, all idle."""
    async with scratch_database(root) as dsn, running_server(dsn, what_if=what_if) as server, session() as http:
        fleet = await Fleet.start(server.url, dsn, size.agents, size.phones_each, auto_finish=True)
        watcher = await Watcher.connect(dsn)
        try:
            await watcher.wait_idle(size.phones, timeout=60)
            yield Operator(http, server.url), watcher
        finally:
            await watcher.close()
            await fleet.stop()


async def measure_arrivals(root: str, size: Size, seed: int, what_if: frozenset[str]) -> None:
    priorities = draw_priorities(seed, size.jobs)
    async with fleet_and_server(root, size, what_if) as (op, watcher):
        t0 = time.perf_counter()
        ids = await post_jobs(op, priorities, size.per_job, IN_FLIGHT)
        t_end = await wait_all_completed(watcher.conn, ids, timeout=600)
        total = int(await watcher.conn.fetchval(
            "SELECT sum(completed_count) FROM jobs WHERE id = ANY($1::bigint[])", ids))
        violations = {g: int(await watcher.conn.fetchval(VIOLATIONS_SQL, ids, g / 1000)) for g in GRACES_MS}
    assert total == size.jobs * size.per_job, total
    elapsed = t_end - t0
    print(f"\n-- arrivals: {size.jobs} jobs x {size.per_job} phones posted while distribution runs "
          f"({IN_FLIGHT} in flight, seed {seed}), {size.phones} phones")
    print(f"completed assignments/s            {total / elapsed:9,.0f} /s   ({total:,} in {elapsed:.2f} s, first POST "
          "to last job completed)")
    for grace, n in violations.items():
        print(f"priority violations, grace {grace:3d} ms {n:8d}     ({n / total:.2%} of assignments went to a job "
              f"while a higher one, open > {grace} ms and short of phones, could take that phone)")
    sys.stdout.flush()


async def measure(root: str, size: Size, seed: int, what_if: frozenset[str]) -> None:
    priorities = draw_priorities(seed, size.jobs)
    async with fleet_and_server(root, size, what_if) as (op, watcher):
        await op.call("POST", "/api/scheduler/stop")
        ids = await post_jobs(op, priorities, size.per_job, IN_FLIGHT)
        assigned = await watcher.conn.fetchval("SELECT count(*) FROM assignments")
        assert assigned == 0, f"{assigned} assignments made while distribution was stopped"
        t0 = time.perf_counter()
        await op.call("POST", "/api/scheduler/start")
        t_end = await wait_all_completed(watcher.conn, ids, timeout=600)
        rows = await watcher.conn.fetch(
            """SELECT j.id, j.priority, j.completed_count, min(a.created_at) AS first, max(a.created_at) AS last
               FROM jobs j JOIN assignments a ON a.job_id = j.id WHERE j.id = ANY($1::bigint[])
               GROUP BY j.id ORDER BY j.id""",
            ids,
        )

    total = sum(r["completed_count"] for r in rows)
    assert total == size.jobs * size.per_job, total
    elapsed = t_end - t0
    f = fidelity(list(rows))
    levels = len(set(priorities))
    print(f"\n-- {size.jobs} jobs x {size.per_job} phones, priorities {min(priorities)}..{max(priorities)} "
          f"({levels} levels, seed {seed}), {size.phones} phones = {size.agents} agents x {size.phones_each}")
    print(f"completed assignments/s            {total / elapsed:9,.0f} /s   ({total:,} in {elapsed:.2f} s, "
          f"{total / size.phones:.0f} waves of the fleet)")
    print(f"order fidelity (pairs agreeing)    {f.agreeing / f.pairs:9.4f}     ({f.agreeing:,} of {f.pairs:,} pairs "
          "of different priority: higher got its first phone no later)")
    print(f"Kendall tau, priority vs service   {f.tau:9.4f}")
    print(f"strict inversions                  {f.strict_inversions:9d}     (lower-priority job fully served "
          "before a higher one started)")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    size = Size(4, 100, 40, 50) if args.quick else Size(10, 100, 200, 50)
    what_if = what_if_of(args)
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
        for seed in args.seed:
            await measure(root, size, seed, what_if)
        for seed in args.seed:
            await measure_arrivals(root, size, seed, what_if)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 phones, 40 jobs")
    parser.add_argument("--seed", type=int, action="append", help="priority draw (repeatable; default 1 and 2)")
    add_server_options(parser)
    args = parser.parse_args()
    args.seed = args.seed or [1, 2]
    print_header(MODULE, "priority: 200 mixed-priority jobs competing for 1,000 phones")
    run(main_async(args))


if __name__ == "__main__":
    main()
