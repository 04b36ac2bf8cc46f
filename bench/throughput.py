"""Throughput: assignments completed per second, end to end, with phones that finish at once.

The simulated agents run with ``auto_finish=True``: each ``job:assign`` is acked and its assignments are
reported ``completed`` right away (batched ``assignment:finished``, as a real agent's outbox does). The
driver posts jobs back to back, each to every phone, and waits for each to be ``completed`` in the
database before posting the next: an assignment counts once it was assigned, run, reported and recorded.
Rate = assignments / (last job completed - first POST). One warm-up job is excluded.
"""

import argparse
import sys
import time
from dataclasses import dataclass

from bench.floor import db_floor, sio_floor
from bench.harness import (
    Fleet,
    Operator,
    Summary,
    Watcher,
    add_server_options,
    database_facts,
    postgres_root,
    print_header,
    run,
    running_server,
    scratch_database,
    session,
    verdict,
    what_if_of,
)
from bench.spans import Breakdown

MODULE = "bench.throughput"
GOAL_PER_SEC = 10_000


@dataclass
class Size:
    agents: int
    phones_each: int
    jobs: int

    @property
    def phones(self) -> int:
        return self.agents * self.phones_each


async def measure(root: str, size: Size, warmup: int, breakdown: Breakdown | None, what_if: frozenset[str]) -> None:
    async with scratch_database(root) as dsn, \
            running_server(dsn, breakdown=breakdown is not None, what_if=what_if) as server, session() as http:
        fleet = await Fleet.start(server.url, dsn, size.agents, size.phones_each, auto_finish=True)
        watcher = await Watcher.connect(dsn)
        op = Operator(http, server.url)
        per_job: list[float] = []
        try:
            await watcher.wait_idle(size.phones, timeout=30)
            started = 0.0
            for run in range(warmup + size.jobs):
                fleet.forget()
                if breakdown is not None:
                    await op.spans()
                t0 = time.perf_counter()
                if run == warmup:
                    started = t0
                job = await op.create_job(f"throughput {run}")
                assert job["target_count"] == size.phones, job
                t_done = await watcher.wait_job(job["id"], ("completed",), timeout=120)
                row = await watcher.job(job["id"])
                assert row["completed_count"] == size.phones, dict(row)
                if run >= warmup:
                    per_job.append(t_done - t0)
                    if breakdown is not None:
                        breakdown.add(await op.spans(), t0, t_done)
                else:
                    await watcher.wait_idle(size.phones, timeout=30)
            elapsed = time.perf_counter() - started
        finally:
            await watcher.close()
            await fleet.stop()
        floor_db = await db_floor(dsn, size.phones, 5)
        floor_sio = await sio_floor(size.agents, size.phones_each, 5)

    total = size.phones * size.jobs
    rate = total / sum(per_job)
    jobs = Summary.of(per_job)
    floor_sec = Summary.of([i + u + s for i, u, s in zip(floor_db.insert, floor_db.update, floor_sio, strict=True)])
    floor_rate = size.phones / floor_sec.p50
    print(f"\n-- {size.phones} phones = {size.agents} agents x {size.phones_each}, {size.jobs} jobs back to back "
          f"(+{warmup} warm-up)")
    print(f"completed assignments/s            {rate:9,.0f} /s   ({total:,} in {sum(per_job):.2f} s; "
          f"wall incl. polling {total / elapsed:,.0f} /s)")
    print(f"per job, POST -> completed in DB   {jobs.ms()}")
    print(f"floor: db INSERT {size.phones:>5} rows       {Summary.of(floor_db.insert).ms()}")
    print(f"floor: db UPDATE {size.phones:>5} rows       {Summary.of(floor_db.update).ms()}")
    print(f"floor: socket.io emit same size    {Summary.of(floor_sio).ms()}")
    print(f"floor: INSERT + UPDATE + emit      {floor_rate:9,.0f} /s   (p50 {floor_sec.p50 * 1e3:.1f} ms per "
          f"{size.phones} assignments)")
    print(f"ratio to floor: {floor_rate / rate:.1f}x slower")
    print(f"goal >= {GOAL_PER_SEC:,}/s: {verdict(rate, GOAL_PER_SEC, lower_is_better=False)} ({rate:,.0f}/s)")
    if breakdown is not None:
        print("(with --breakdown the server is instrumented: figures above are slightly pessimistic)")
        breakdown.print(f"job completed at p50 {jobs.p50 * 1e3:.1f} ms")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    if args.agents:  # issue 14 part 6: 2,000 and 10,000 phones over this many agent connections
        sizes = [Size(args.agents, 2_000 // args.agents, 10), Size(args.agents, 10_000 // args.agents, 8)]
    else:
        sizes = [Size(10, 200, 5)] if args.quick else [Size(10, 200, 10), Size(20, 500, 8)]
    if args.only_10k:
        sizes = sizes[1:]
    what_if = what_if_of(args)
    with postgres_root() as root:
        async with scratch_database(root) as dsn:
            print(f"database: {await database_facts(dsn)}")
        for size in sizes:
            await measure(root, size, args.warmup, Breakdown() if args.breakdown else None, what_if)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 phones, 5 jobs")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--agents", type=int, choices=(20, 100, 500),
                        help="spread both sizes over this many agent connections (issue 14 part 6: 500) instead of "
                             "10 and 20")
    parser.add_argument("--only-10k", action="store_true", help="only the 10,000 phones")
    add_server_options(parser)
    args = parser.parse_args()
    print_header(MODULE, "throughput: instant phones, jobs back to back, completed in the database")
    run(main_async(args))


if __name__ == "__main__":
    main()
