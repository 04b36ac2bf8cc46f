"""Pause propagation: ``PATCH /api/jobs/{id} {"status": "paused"}`` until every agent holding an assignment of
that job has received ``job:paused``.

Each run: post a job to every phone and wait until all its ``job:assign`` have arrived (the agents ack
them, so they are delivered, and do not finish them); then time the PATCH until the last holder has
``job:paused``. Afterwards (untimed) the job is cancelled and the driver waits until every phone is idle.
Warm-up runs are excluded.
"""

import argparse
import asyncio
import sys
import time

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
from phonefleet.protocol import events as ev

MODULE = "bench.pause"
GOAL_SEC = 0.1


async def measure(root: str, *, agents: int, phones_each: int, runs: int, warmup: int,
                  breakdown: Breakdown | None, what_if: frozenset[str]) -> None:
    phones = agents * phones_each
    async with scratch_database(root) as dsn, \
            running_server(dsn, breakdown=breakdown is not None, what_if=what_if) as server, session() as http:
        print(f"database: {await database_facts(dsn)}")
        fleet = await Fleet.start(server.url, dsn, agents, phones_each)
        watcher = await Watcher.connect(dsn)
        op = Operator(http, server.url)
        arrive: list[float] = []
        respond: list[float] = []
        try:
            await watcher.wait_idle(phones, timeout=30)
            for run in range(warmup + runs):
                fleet.forget()
                job = await op.create_job(f"pause {run}")
                await fleet.wait_assigned(job["id"], timeout=60)
                holders = [a for a in fleet.agents if any(o["job_id"] == job["id"] for o in a.orders.values())]
                if breakdown is not None:
                    await asyncio.sleep(0.05)  # the acks of job:assign, outside the timed part
                    await op.spans()
                t0 = time.perf_counter()
                paused = await op.set_status(job["id"], "paused")
                t_resp = time.perf_counter()
                assert paused["status"] == "paused", paused
                t_last = await fleet.wait_control(ev.JOB_PAUSED, job["id"], holders, timeout=30)
                if run >= warmup:
                    arrive.append(t_last - t0)
                    respond.append(t_resp - t0)
                    if breakdown is not None:
                        breakdown.add(await op.spans(), t0, t_last)
                await op.set_status(job["id"], "cancelled")
                await watcher.wait_job(job["id"], ("cancelled",), timeout=30, interval=0.01)
                await watcher.wait_idle(phones, timeout=30)
        finally:
            await watcher.close()
            await fleet.stop()
        floor_db = await db_floor(dsn, phones, runs)
        floor_sio = await sio_floor(agents, phones_each, runs, event=ev.JOB_PAUSED)

    got = Summary.of(arrive)
    floor = Summary.of([d + s for d, s in zip(floor_db.update, floor_sio, strict=True)])
    print(f"\n-- {phones} phones = {agents} agents x {phones_each}, {runs} runs (+{warmup} warm-up)")
    print(f"PATCH paused -> last job:paused arrived   {got.ms()}")
    print(f"PATCH paused -> 200 response              {Summary.of(respond).ms()}")
    print(f"floor: db UPDATE {phones:>5} rows              {Summary.of(floor_db.update).ms()}")
    print(f"floor: socket.io job:paused to {agents:>3} agents  {Summary.of(floor_sio).ms()}")
    print(f"floor: UPDATE + emit                      {floor.ms()}")
    print(f"ratio to floor: p50 {got.p50 / floor.p50:.1f}x, p99 {got.p99 / floor.p99:.1f}x")
    print(f"goal p99 <= {GOAL_SEC * 1e3:.0f} ms: {verdict(got.p99, GOAL_SEC)} (p99 {got.p99 * 1e3:.1f} ms)")
    if breakdown is not None:
        print("(with --breakdown the server is instrumented: figures above are slightly pessimistic)")
        breakdown.print(f"last job:paused arrived at p50 {got.p50 * 1e3:.1f} ms")
    sys.stdout.flush()


async def main_async(args: argparse.Namespace) -> None:
    what_if = what_if_of(args)
    with postgres_root() as root:
        await measure(root, agents=args.agents, phones_each=args.phones_each, runs=10 if args.quick else args.runs,
                      warmup=args.warmup, breakdown=Breakdown() if args.breakdown else None, what_if=what_if)


def main() -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 runs instead of 30")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--phones-each", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    add_server_options(parser)
    args = parser.parse_args()
    print_header(MODULE, "pause propagation: PATCH paused until every holder has job:paused")
    run(main_async(args))


if __name__ == "__main__":
    main()
