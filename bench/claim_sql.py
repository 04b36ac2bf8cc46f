"""The distributor's claim, statement by statement: where the database time of a fan-out goes.

Builds a fleet in a scratch database (agents online, N idle phones), then runs the statements of
``store.assignments.claim`` for an all_devices job inside a transaction that is rolled back, each
timed, and prints ``EXPLAIN (ANALYZE)`` trigger times of the INSERT (its foreign-key checks). No
server runs: this isolates PostgreSQL's share of the fan-out.
"""

import argparse
import json
import statistics
import time

import asyncpg

from bench.harness import PLAN, database_facts, postgres_root, print_header, run, scratch_database
from phonefleet.server.store.jobs import filter_args, filter_sql

MODULE = "bench.claim_sql"

SELECT_DEVICES = f"""SELECT d.id, d.agent_id, d.serial FROM devices d JOIN agents ag ON ag.id = d.agent_id
    WHERE d.state = 'idle' AND ag.status = 'online' AND NOT ag.paused AND {filter_sql(3)}
      AND NOT EXISTS (SELECT 1 FROM assignments x WHERE x.job_id = $1 AND x.device_id = d.id)
      AND NOT EXISTS (SELECT 1 FROM agent_job_pauses p WHERE p.agent_id = d.agent_id AND p.job_id = $1)
    ORDER BY d.idle_since NULLS FIRST, d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED"""
UPDATE_DEVICES = "UPDATE devices SET state = 'busy' WHERE id = ANY($1::bigint[])"
INSERT = """INSERT INTO assignments (job_id, device_id, agent_id, attempt)
    SELECT $1, t.device_id, t.agent_id, t.attempt
    FROM unnest($2::bigint[], $3::bigint[], $4::int[]) AS t(device_id, agent_id, attempt)
    RETURNING id, device_id, agent_id, attempt"""


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
    await conn.execute("ANALYZE")
    return job_id


async def claim_once(conn: asyncpg.Connection, job_id: int, limit: int) -> dict[str, float]:
    times: dict[str, float] = {}
    tr = conn.transaction()
    await tr.start()
    try:
        t = time.perf_counter()
        devices = await conn.fetch(SELECT_DEVICES, job_id, limit, *filter_args({}))
        times["SELECT idle devices FOR UPDATE SKIP LOCKED"] = time.perf_counter() - t
        ids = [d["id"] for d in devices]
        agent_ids = [d["agent_id"] for d in devices]
        t = time.perf_counter()
        await conn.execute(UPDATE_DEVICES, ids)
        times["UPDATE devices SET state = 'busy'"] = time.perf_counter() - t
        t = time.perf_counter()
        await conn.execute("UPDATE jobs SET assigned_count = assigned_count + $2 WHERE id = $1", job_id, len(ids))
        times["UPDATE jobs counters"] = time.perf_counter() - t
        t = time.perf_counter()
        await conn.fetch(INSERT, job_id, ids, agent_ids, [1] * len(ids))
        times["INSERT assignments (3 FKs, 6 indexes)"] = time.perf_counter() - t
    finally:
        await tr.rollback()
    if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        tr = conn.transaction()
        await tr.start()
        try:  # the same INSERT without its foreign-key triggers: what the three FK checks cost
            await conn.execute("SET LOCAL session_replication_role = replica")
            t = time.perf_counter()
            await conn.fetch(INSERT, job_id, ids, agent_ids, [1] * len(ids))
            times["  (same INSERT, FK triggers off)"] = time.perf_counter() - t
        finally:
            await tr.rollback()
    return times



async def explain_insert(conn: asyncpg.Connection, job_id: int, limit: int) -> list[str]:
    tr = conn.transaction()
    await tr.start()
    try:
        devices = await conn.fetch("SELECT id, agent_id FROM devices ORDER BY id LIMIT $1", limit)
        rows = await conn.fetch("EXPLAIN (ANALYZE) " + INSERT, job_id, [d["id"] for d in devices],
                                [d["agent_id"] for d in devices], [1] * len(devices))
    finally:
        await tr.rollback()
    return [r[0] for r in rows if "Trigger" in r[0] or "Execution Time" in r[0]]


async def main_async(args: argparse.Namespace) -> None:
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
            conn = await asyncpg.connect(dsn)
            try:
                job_id = await build_fleet(conn, args.agents, args.phones_each)
                limit = args.agents * args.phones_each
                for _ in range(2):
                    await claim_once(conn, job_id, limit)
                runs = [await claim_once(conn, job_id, limit) for _ in range(args.runs)]
                print(f"\n-- claim of {limit} idle phones ({args.agents} agents x {args.phones_each}), "
                      f"median of {args.runs} rolled-back runs")
                total = 0.0
                for step in runs[0]:
                    median = statistics.median(r[step] for r in runs)
                    total += median if not step.startswith(" ") else 0
                    print(f"  {step:<46} {median * 1e3:8.1f} ms")
                print(f"  {'sum':<46} {total * 1e3:8.1f} ms")
                print("EXPLAIN ANALYZE of the INSERT:")
                for line in await explain_insert(conn, job_id, limit):
                    print(f"  {line}")
            finally:
                await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 phones")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--phones-each", type=int, default=500)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.agents, args.phones_each = 10, 100
    print_header(MODULE, "the distributor's claim, statement by statement (no server)")
    run(main_async(args))


if __name__ == "__main__":
    main()
