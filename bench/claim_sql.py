"""The distributor's claim beside a bare INSERT of the same rows: PostgreSQL's share of a fan-out.

For each fleet size a scratch database gets agents online, N idle phones and an all_devices job. Then,
alternating run by run, each inside a transaction that is rolled back (and a VACUUM after each pair, so
neither side inherits the other's dead rows):

- the claim: ``store.assignments.claim_simple`` exactly as the distributor calls it (pick with
  ``FOR UPDATE SKIP LOCKED``, mark busy, bump the job, insert, and the rows decoded in Python);
- the floor: a bare ``INSERT ... SELECT FROM unnest(...) RETURNING`` of the same rows (same job, devices,
  agents, attempts) into a table ``LIKE assignments INCLUDING ALL`` (same columns, checks, indexes; no
  foreign keys), as ``bench.floor`` measures it for the fan-out.

It prints the medians (and minima), the ratio claim / floor, and ``EXPLAIN (ANALYZE, BUFFERS)`` of the
claim statement by node (its CTEs, triggers). No server runs.
"""

import argparse
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.harness import PLAN, database_facts, postgres_root, print_header, run, scratch_database
from phonefleet.protocol.states import DEVICE_CLAIM_FROM, as_guard
from phonefleet.server.distributor import ANY_PHONES
from phonefleet.server.store import assignments as assignments_store

MODULE = "bench.claim_sql"

BARE_INSERT = """INSERT INTO bench_floor (job_id, device_id, agent_id, attempt)
    SELECT $1, t.device_id, t.agent_id, t.attempt
    FROM unnest($2::bigint[], $3::bigint[], $4::int[]) AS t(device_id, agent_id, attempt)
    RETURNING id, device_id, agent_id, attempt"""

PLAN_NODES = ("CTE ", "Insert on", "Update on", "LockRows", "Sort  ", "Trigger", "Execution Time", "Planning Time")


@dataclass
class Size:
    agents: int
    phones_each: int

    @property
    def phones(self) -> int:
        return self.agents * self.phones_each


async def build_fleet(conn: asyncpg.Connection, agents: int, phones_each: int) -> int:
    for a in range(agents):
        agent_id = await conn.fetchval(
            "INSERT INTO agents (name, token_hash, status) VALUES ($1, $2, 'online') RETURNING id",
            f"pc{a}", f"hash{a}")
        await conn.execute(
            """INSERT INTO devices (agent_id, serial, state, connected, idle_since)
               SELECT $1::bigint, 'pc' || $1::text || '-' || g, 'idle', true, now() FROM generate_series(1, $2) g""",
            agent_id, phones_each)
    job_id: int = await conn.fetchval(
        """INSERT INTO jobs (title, plan, target_type, target_count, status, timeout_sec)
           VALUES ('claim', $1::jsonb, 'all_devices', $2, 'active', 3600) RETURNING id""",
        json.dumps(PLAN), agents * phones_each)
    await conn.execute("CREATE TABLE bench_floor (LIKE assignments INCLUDING ALL)")
    await conn.execute("VACUUM ANALYZE")
    return job_id


async def rolled_back(conn: asyncpg.Connection, work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    tr = conn.transaction()
    await tr.start()
    try:
        t = time.perf_counter()
        result = await work()
        return time.perf_counter() - t, result
    finally:
        await tr.rollback()


async def measure(conn: asyncpg.Connection, job_id: int, size: Size, runs: int, warmup: int
                  ) -> tuple[list[float], list[float]]:
    devices = await conn.fetch("SELECT id, agent_id FROM devices ORDER BY idle_since NULLS FIRST, id")
    ids, agent_ids, ones = [d["id"] for d in devices], [d["agent_id"] for d in devices], [1] * len(devices)
    claim: list[float] = []
    bare: list[float] = []
    for n in range(warmup + runs):
        took, (_, rows) = await rolled_back(conn, lambda: assignments_store.claim_simple(conn, job_id, ANY_PHONES))
        assert len(rows) == size.phones, (len(rows), size.phones)
        took_bare, bare_rows = await rolled_back(conn, lambda: conn.fetch(BARE_INSERT, job_id, ids, agent_ids, ones))
        assert len(bare_rows) == size.phones
        await conn.execute("VACUUM assignments, devices, jobs, bench_floor")
        if n >= warmup:
            claim.append(took)
            bare.append(took_bare)
    return claim, bare


async def explain_claim(conn: asyncpg.Connection, job_id: int) -> list[str]:
    tr = conn.transaction()
    await tr.start()
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + assignments_store.CLAIM_SIMPLE_SQL,
                                job_id, ANY_PHONES, as_guard(DEVICE_CLAIM_FROM))
    finally:
        await tr.rollback()
    await conn.execute("VACUUM assignments, devices, jobs")
    lines = [str(r[0]) for r in rows]
    keep: list[str] = []
    for i, line in enumerate(lines):
        if any(node in line for node in PLAN_NODES):
            keep.append(line)
            if i + 1 < len(lines) and "Buffers:" in lines[i + 1]:
                keep.append(lines[i + 1])
    return keep


def ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1e3:7.1f} ms  (min {min(xs) * 1e3:6.1f}, max {max(xs) * 1e3:6.1f})"


async def one_size(root: str, size: Size, args: argparse.Namespace) -> None:
    async with scratch_database(root) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            job_id = await build_fleet(conn, size.agents, size.phones_each)
            claim, bare = await measure(conn, job_id, size, args.runs, args.warmup)
            plan = await explain_claim(conn, job_id) if not args.no_explain else []
        finally:
            await conn.close()
    ratio = statistics.median(claim) / statistics.median(bare)
    print(f"\n-- {size.phones} idle phones ({size.agents} agents x {size.phones_each}), {args.runs} runs each "
          f"(+{args.warmup} warm-up), alternating, each rolled back")
    print(f"  claim (claim_simple, as the distributor calls it)  {ms(claim)}")
    print(f"  bare INSERT ... unnest of the same rows            {ms(bare)}")
    print(f"  ratio claim / bare INSERT (medians): {ratio:.2f}x "
          f"(per-run ratios: median {statistics.median(c / b for c, b in zip(claim, bare, strict=True)):.2f}x); "
          f"goal <= 1.30x: {'MEETS' if ratio <= 1.3 else 'MISSES'}")
    if plan:
        print("  EXPLAIN (ANALYZE, BUFFERS) of the claim, by node:")
        for line in plan:
            print(f"    {line}")


async def main_async(args: argparse.Namespace) -> None:
    sizes = [Size(10, 100)] if args.quick else [Size(10, 100), Size(20, 500)]
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
        for size in sizes:
            await one_size(root, size, args)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 phones only")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-explain", action="store_true")
    args = parser.parse_args()
    print_header(MODULE, "the distributor's claim beside a bare INSERT of the same rows (no server)")
    run(main_async(args))


if __name__ == "__main__":
    main()
