"""The JobDistributor: match idle eligible phones to jobs with open slots, then push the work.

Every fill is a set of short transactions (one per job, highest priority first): lock the job
row, claim phones with ``FOR UPDATE SKIP LOCKED``, bulk-insert the assignments, bump the job's
counters. Nothing is held in memory between fills, so any number of server processes may fill
the same database at once without over-assigning.
"""

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from phonefleet.protocol.events import JobAssignAck
from phonefleet.server import orders
from phonefleet.server.batching import Coalescer
from phonefleet.server.metrics import Metrics
from phonefleet.server.outage import DATABASE_ERRORS
from phonefleet.server.realtime import Realtime
from phonefleet.server.store import Conn, waiting
from phonefleet.server.store import assignments as assignments_store
from phonefleet.server.store import jobs as jobs_store
from phonefleet.server.store import scheduler as scheduler_store
from phonefleet.server.store.records import AgentOrderRecord, ClaimedRow, JobRecord

log = logging.getLogger(__name__)

FILL_BATCH = 200
"""Jobs a pass reads at a time: a backlog of thousands is taken in bounded steps."""
PASS_WAIT_SEC = 5.0
"""How long a job event waits for the pass that serves it before making one itself."""
ANY_PHONES = 1_000_000
"""A claim's limit when the job's own room is the only bound."""
CLAIM_CHUNK = 2_000
"""Phones one claim statement takes at most on a node with many agent sockets: a larger fan-out is claimed in
chunks, each pushed to its agents while the database claims the next, so the claim and the sends overlap.
Measured at 10,000 phones (``bench.fanout``, quiet): on 500 agents p50 266 vs 302 ms and p99 431 vs 563 ms
against one statement; on 20 agents the chunks cost +30-45 ms at p50 (five statements, each working out the
eligible phones again), hence ``CHUNKED_FROM_AGENTS``."""
CHUNKED_FROM_AGENTS = 100
"""Agent sockets on this node from which a fan-out is claimed in chunks."""


class Distributor:
    def __init__(self, pool: asyncpg.Pool, realtime: Realtime, metrics: Metrics) -> None:
        self.pool = pool
        self.realtime = realtime
        self.metrics = metrics
        self._requested = asyncio.Event()
        self._pass_due = True
        """Phones may have come free since the last complete pass: the next fill must be a whole pass."""
        self._passes_started = 0
        self._passes_finished = 0
        self._pass_done = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._acks: Coalescer[tuple[int, int], None] = Coalescer(self._deliver, name="delivery-acks")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="distributor")
        self._acks.start()

    async def _deliver(self, pairs: list[tuple[int, int]]) -> list[None]:
        async with self.pool.acquire() as conn:
            await assignments_store.mark_delivered(conn, pairs)
        return [None] * len(pairs)

    async def stop(self) -> None:
        await self._acks.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def request_fill(self) -> None:
        """Ask for a fill soon; many requests while one runs collapse into one more pass."""
        self._pass_due = True
        self._requested.set()

    async def _loop(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()
            try:
                await self.fill()
            except DATABASE_ERRORS:
                log.warning("fill failed; will retry on the next event", exc_info=True)
            except Exception:  # a bug must not stop distribution on this node
                log.exception("fill crashed; will retry on the next event")

    async def fill(self, job_ids: Sequence[int] | None = None) -> int:
        """A fill; returns the number of assignments it created and pushed (0 when a pass served it).

        Without ``job_ids``: a pass over every active job that may claim a phone now, in priority order,
        in bounded batches (jobs waiting for phones that are not there are skipped at the index).

        With ``job_ids`` (a job was created, resumed, requeued or activated) only those jobs are filled,
        concurrently with other such fills: every idle phone was already offered to every waiting job by
        the pass that left it idle, so nothing else can change, and the cost does not grow with the
        backlog. If phones came free since the last pass, the next pass (which starts after these jobs
        were committed) serves them instead, in priority order: a new job never takes a phone a waiting
        job of higher priority could use, and many creates share one pass.
        """
        if job_ids is None:
            return await self._pass()
        if self._pass_due:
            return await self._next_pass()
        return await self._fill_jobs(job_ids)

    async def _pass(self) -> int:
        started = time.perf_counter()
        fill = _Fill(self._push)
        async with self._lock:  # one pass at a time on a node
            self._passes_started += 1
            seq = self._passes_started
            self._pass_due = False  # a request made while this pass runs sets it again
            complete = False
            try:
                async with self.pool.acquire() as conn:
                    complete = await self._fill_pass(conn, fill)
            finally:
                if not complete:  # the phones were not offered to every job: the next fill is a pass
                    self._pass_due = True
                async with self._pass_done:
                    self._passes_finished = seq
                    self._pass_done.notify_all()
        return await self._finish_fill(fill, started)

    async def _next_pass(self) -> int:
        """Wait for a pass that starts from now (asking for one); a pass that does not come soon (its
        node's loop is busy with a large fan-out) is not waited for longer than ``PASS_WAIT_SEC``."""
        target = self._passes_started + 1
        self.request_fill()
        try:
            async with self._pass_done:
                await asyncio.wait_for(self._pass_done.wait_for(lambda: self._passes_finished >= target),
                                       PASS_WAIT_SEC)
        except TimeoutError:
            return await self._pass()
        return 0

    async def _fill_jobs(self, job_ids: Sequence[int]) -> int:
        started = time.perf_counter()
        fill = _Fill(self._push)
        async with self.pool.acquire() as conn:
            context = None
            for job_id in job_ids:
                job: JobRecord | None
                job, claimed = await self._claim_simple(conn, job_id, ANY_PHONES, fill)
                if job is None:  # not the common case: the general path, with the fleet's facts
                    context = context or await scheduler_store.fill_context(conn)
                    if not context.running:
                        break
                    rows, job, stopped = await self._claim_general(conn, job_id, max(0, context.idle),
                                                                   agent_caps=context.agent_caps)
                    if stopped:
                        break
                    if rows and job is not None:
                        fill.push(job, rows)
                    claimed = len(rows)
                if not claimed and job is not None and job.status == "active" and job.retry_pending == 0:
                    await waiting.mark(conn, [job_id])  # no phone now: is there none connected at all?
        return await self._finish_fill(fill, started)

    async def _claim_simple(self, conn: Conn, job_id: int, limit: int, fill: "_Fill"
                            ) -> tuple[JobRecord | None, int]:
        """The common claim (``claim_simple``) in chunks of ``CLAIM_CHUNK`` phones, each chunk's orders pushed
        while the next chunk is claimed: at 10,000 phones the database claims while this process emits.
        Returns (the job, the phones claimed), or (None, 0) when the job is not the common case.

        Only on a node holding ``CHUNKED_FROM_AGENTS`` agent sockets or more: each chunk's statement works out the
        eligible phones again, which costs more than it saves when a few sockets make the sends cheap."""
        chunked = self.realtime.presence.agent_count() >= CHUNKED_FROM_AGENTS
        claimed = 0
        job: JobRecord | None = None
        while claimed < limit:
            chunk = min(CLAIM_CHUNK if chunked else limit, limit - claimed)
            got, rows = await assignments_store.claim_simple(conn, job_id, chunk)
            if got is None:  # the first chunk: not the common case; a later one: the job changed meanwhile
                break
            job = got
            if rows:
                fill.push(job, rows)
            claimed += len(rows)
            if len(rows) < chunk:
                break
        return job, claimed

    async def _fill_pass(self, conn: Conn, fill: "_Fill") -> bool:
        """Claim for every job that may, pushing what each claims at once; False when distribution is stopped,
        so no job was offered the idle phones."""
        context = await scheduler_store.fill_context(conn)
        idle = context.idle
        if not context.running:
            return False
        after: jobs_store.FillCursor | None = None
        while idle > 0:
            batch = await jobs_store.fillable(conn, None, after=after, limit=FILL_BATCH)
            for candidate in batch:
                claimed, stopped = await self._claim(conn, candidate.id, idle, fill, agent_caps=context.agent_caps)
                if stopped:  # distribution was stopped since this pass began
                    return False
                idle -= claimed
                if idle <= 0:
                    break
            if len(batch) < FILL_BATCH:
                break
            after = jobs_store.FillCursor.of(batch[-1])
        return True

    async def _claim(self, conn: Conn, job_id: int, idle: int, fill: "_Fill", *, agent_caps: bool
                     ) -> tuple[int, bool]:
        """Claim phones for one job in short transactions, pushing them: (the phones claimed, whether
        distribution was stopped since the pass began). The common case is one statement per chunk; retries,
        ``max_parallel``, agents' caps and stopped distribution take the general path."""
        if not agent_caps:
            job, claimed = await self._claim_simple(conn, job_id, idle, fill)
            if job is not None:
                return claimed, False
        rows, job, stopped = await self._claim_general(conn, job_id, idle, agent_caps=agent_caps)
        if rows and job is not None:
            fill.push(job, rows)
        return len(rows), stopped

    async def _claim_general(self, conn: Conn, job_id: int, idle: int, *, agent_caps: bool
                             ) -> tuple[list[ClaimedRow], JobRecord | None, bool]:
        async with conn.transaction():
            job = await jobs_store.get_for_fill(conn, job_id)
            if job is None or job.status != "active" or job.target_count is None:
                return [], job, job is not None and not job.distribution_running
            if not job.distribution_running:
                return [], job, True
            limit = max(0, job.target_count - job.assigned_count) + job.retry_pending
            return await assignments_store.claim(conn, job, min(limit, idle), agent_caps=agent_caps), job, False

    async def _finish_fill(self, fill: "_Fill", started: float) -> int:
        total = fill.total
        if total:
            self.metrics.assignments_created.inc(total)
            await fill.pushed()
            self.metrics.fanout_seconds.observe(time.perf_counter() - started)
        self.metrics.fill_seconds.observe(time.perf_counter() - started)
        return total

    async def _push(self, created: list[tuple[JobRecord, list[ClaimedRow]]]) -> None:
        jobs = {job.id: orders.job_fields(job) for job, _ in created}
        by_agent: dict[int, list[dict[str, Any]]] = defaultdict(list)
        device_ids: list[int] = []
        for job, rows in created:
            for row, made in zip(rows, orders.claimed(job, rows), strict=True):
                by_agent[row["agent_id"]].append(made)
                device_ids.append(row["device_id"])
        sent = await asyncio.gather(*(self.realtime.send_claimed(a, jobs, slots, self.on_ack)
                                      for a, slots in by_agent.items()))
        elsewhere = [a for a, here in zip(by_agent, sent, strict=True) if not here]
        if elsewhere:  # agents held by other nodes: they read their orders from the database
            await self.realtime.kick(elsewhere)
        self.realtime.jobs_changed(job.id for job, _ in created)
        self.realtime.devices_changed(device_ids)

    async def on_ack(self, agent_id: int, data: Any) -> None:
        """The agent confirmed a ``job:assign``: its assignments are delivered."""
        try:
            ack = JobAssignAck.model_validate(data)
        except ValueError:
            log.warning("malformed job:assign ack", extra={"agent_id": agent_id})
            return
        if ack.received:
            try:
                await self._acks.submit([(agent_id, aid) for aid in ack.received])
            except DATABASE_ERRORS:
                log.warning("delivery ack not recorded; the agent's next hello or poll re-syncs it", exc_info=True)

    async def resend_pending(self, agent_ids: Sequence[int]) -> None:
        """Re-send these agents' assignments that were never acknowledged (an agent reconnected, or a kick), read
        in one query."""
        async with self.pool.acquire() as conn:
            rows = await assignments_store.pending_orders(conn, agent_ids)
        by_agent: dict[int, list[AgentOrderRecord]] = defaultdict(list)
        for row in rows:
            by_agent[row.agent_id].append(row)
        await asyncio.gather(*(self.realtime.send_orders(agent_id, orders.of_rows(mine), self.on_ack)
                               for agent_id, mine in by_agent.items()))


class _Fill:
    """What one fill claimed. Claims are gathered and pushed to the agents together (one ``job:assign`` per
    agent for many small jobs), but as soon as ``CLAIM_CHUNK`` phones are waiting they go, while the fill
    claims on."""

    def __init__(self, push: Callable[[list[tuple[JobRecord, list[ClaimedRow]]]], Coroutine[Any, Any, None]]
                 ) -> None:
        self._push = push
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: list[tuple[JobRecord, list[ClaimedRow]]] = []
        self._waiting_rows = 0
        self.total = 0

    def push(self, job: JobRecord, rows: list[ClaimedRow]) -> None:
        self.total += len(rows)
        self._waiting.append((job, rows))
        self._waiting_rows += len(rows)
        if self._waiting_rows >= CLAIM_CHUNK:
            self._send()

    def _send(self) -> None:
        if self._waiting:
            self._tasks.append(asyncio.get_running_loop().create_task(self._pushing(self._waiting)))
            self._waiting, self._waiting_rows = [], 0

    async def _pushing(self, created: list[tuple[JobRecord, list[ClaimedRow]]]) -> None:
        try:
            await self._push(created)
        except Exception:  # the orders are stored: the agents' next hello, poll or kick sends them
            log.exception("push of %d orders failed; the agents will read them", sum(len(r) for _, r in created))

    async def pushed(self) -> None:
        """Until every claim has been handed to the sockets (or the bus)."""
        self._send()
        if self._tasks:
            await asyncio.gather(*self._tasks)
