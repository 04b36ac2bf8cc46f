"""Ending assignments: results from agents, lost leases, server-side timeouts.

One path for all of them: record the outcome (with retry scheduling), free the phones, complete
the jobs whose every slot has ended, and tell the dashboards. Concurrent reports (many agents
finishing at once) are merged into one transaction by a ``Coalescer``.
"""

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import ErrorCode, FinishOutcome
from phonefleet.server.batching import Coalescer
from phonefleet.server.config import Settings
from phonefleet.server.distributor import Distributor
from phonefleet.server.fleet_health import FleetHealth
from phonefleet.server.metrics import Metrics
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn
from phonefleet.server.store import artifacts as artifacts_store
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import devices as devices_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store import slots as slots_store
from phonefleet.server.store import steps as steps_store
from phonefleet.server.store.records import DeviceChange, Ended, JobRecord
from phonefleet.server.store.slots import Overturned, Tally
from phonefleet.server.transactions import in_transaction

log = logging.getLogger(__name__)


def _agent_cancel_is_a_failure(item: dict[str, Any]) -> dict[str, Any]:
    """An agent stops a run on its own only when the server said so (the server ended it first, so the
    report changes nothing) or when it believed the server no longer listed it. If the server still
    counts on the run, that belief was wrong: the run is a retryable failure, so its slot is not lost."""
    if str(item.get("outcome")) != FinishOutcome.cancelled:
        return item
    return {**item, "outcome": FinishOutcome.failed, "error_code": str(ErrorCode.dropped), "retryable": True,
            "error": "the agent stopped this run on its own: " + str(item.get("error") or "cancelled")}


async def _record_evidence(conn: Conn, items: list[dict[str, Any]], taken: set[int], late: set[int]) -> None:
    """The steps and crashes of the results this transaction took (a late one's replace the server's)."""
    if not any(i.get("steps") or i.get("crashes") for i in items):
        return  # the common case of a batch without evidence (a simulated fleet, a server's own ending)
    first: dict[int, dict[str, Any]] = {}
    for item in items:
        first.setdefault(int(item["assignment_id"]), item)
    await steps_store.record(conn, [first[i] for i in sorted(taken) if i in first])
    if late:  # the report overturn_lost took: the last one of its assignment
        last = {int(item["assignment_id"]): item for item in items}
        await steps_store.record(conn, [last[i] for i in sorted(late) if i in last], replace=True)


class Completion:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, distributor: Distributor, metrics: Metrics,
                 settings: Settings, *, fleet_health: FleetHealth) -> None:
        self.pool = pool
        self.realtime = realtime
        self.distributor = distributor
        self.metrics = metrics
        self.settings = settings
        self.fleet_health = fleet_health
        self.batcher: Coalescer[dict[str, Any], int | None] = Coalescer(self._end_batch, name="completion")

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def end(self, items: Sequence[dict[str, Any]], *, agent_id: int | None) -> list[int]:
        """End these assignments (only the agent's own when ``agent_id`` is given); returns the ids that
        changed (others had already ended, or were not the agent's)."""
        if not items:
            return []
        if agent_id is not None:
            items = [_agent_cancel_is_a_failure(i) for i in items]
        results = await self.batcher.submit([{**i, "agent_id": agent_id} for i in items])
        return [r for r in results if r is not None]

    async def _end_batch(self, items: list[dict[str, Any]]) -> list[int | None]:
        async def work(conn: Conn) -> tuple[list[Ended], list[DeviceChange], list[JobRecord], Overturned]:
            changed = list(await assignments_store.finish(
                conn, items, retry_base_sec=self.settings.retry_base_sec, retry_max_sec=self.settings.retry_max_sec,
            ))
            taken = {r.id for r in changed}
            late = await slots_store.overturn_lost(conn, [i for i in items if int(i["assignment_id"]) not in taken])
            await _record_evidence(conn, items, taken, {r.id for r in late.changed})
            tallies: dict[int, Tally] = defaultdict(Tally)
            for r in changed:
                tally = tallies[r.job_id]  # every touched job, so a cancelled report can complete it too
                if r.settled:
                    continue  # its slot was completed by an earlier attempt's late result: history
                if r.retry_at is not None:
                    tally.retries += 1
                elif r.status == "completed":
                    tally.completed += 1
                elif r.status in ("failed", "timed_out"):
                    tally.failed += 1
            for job_id, tally in late.tallies.items():
                tallies[job_id].add(tally)
            for job_id, data in late.events:
                await jobs_store.add_event(conn, job_id, "late_result", "agent", data)
            changed += late.changed
            if any(i.get("artifacts") for i in items):  # what the runs' files will be, before their bytes
                await artifacts_store.record_expected(conn, items)
            touched = {r.device_id for r in changed} | {r.device_id for r in late.cancelled}
            devices = await devices_store.refresh_states(conn, sorted(touched))
            completed = await jobs_store.apply_outcomes(conn, dict(tallies))
            return changed, devices, completed, late

        changed, devices, completed, late = await in_transaction(self.pool, work)
        ids = {r.id for r in changed}
        if changed:
            self._count(changed)
            self.realtime.jobs_changed(r.job_id for r in changed)
            self.realtime.devices_changed(d.id for d in devices)
            if completed:
                await self.realtime.job_status_changed(r.id for r in completed)
            if devices or any(r.retry_at is not None for r in changed):
                self.distributor.request_fill()
        if late.changed:
            log.info("late results overturned lost assignments", extra={"assignments": [r.id for r in late.changed]})
            await self.realtime.job_status_changed({r.job_id for r in late.changed})
        suspects = {r.device_id for r in changed if r.status in ("failed", "timed_out")}
        if suspects:  # a failure may complete a streak: the quarantine policy looks
            try:
                await self.fleet_health.check_failures(suspects)
            except DATABASE_ERRORS:  # the results are recorded; the health watch looks again soon
                log.warning("failure streak check failed", exc_info=True)
        for retry in late.cancelled:  # unstarted retries a late result made needless: off their phones
            await self.realtime.to_agent(retry.agent_id, ev.JOB_CANCELLED, ev.JobControl(
                job_id=retry.job_id, assignment_ids=[retry.id], abort_running=True).model_dump())
        recorded: list[int | None] = []
        for item in items:
            aid = int(item["assignment_id"])
            recorded.append(aid if aid in ids else None)
            ids.discard(aid)  # a duplicate in one batch is recorded once
        return recorded

    def _count(self, ended: Sequence[Ended]) -> None:
        """The metrics of a batch of ended runs: one ``labels()`` per status, not per run (10,000 runs end in
        a batch at full speed, and each ``labels()`` takes a lock and validates its names)."""
        finished: Counter[str] = Counter()
        seconds: defaultdict[str, list[float]] = defaultdict(list)
        for row in ended:
            finished["retrying" if row.retry_at is not None else row.status] += 1
            if row.started_at is not None and row.status != "cancelled":
                seconds[row.status].append(max(0.0, (row.finished_at - row.started_at).total_seconds()))
        for status, n in finished.items():
            self.metrics.assignments_finished.labels(status=status).inc(n)
        for status, values in seconds.items():
            histogram = self.metrics.run_seconds.labels(status=status)
            for value in values:
                histogram.observe(value)
