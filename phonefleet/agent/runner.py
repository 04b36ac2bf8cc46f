"""Runs plans on phones: one worker per phone, one assignment at a time, highest priority first.

Every report (started, progress, finished) goes to the outbox; a cancel stops the plan between
steps (or at once when the server asks to abort), and a phone that disappears mid-run fails its
assignment so the server can hand the slot to another phone.
"""

import asyncio
import contextlib
import functools
import heapq
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from phonefleet.agent.actions import Fetch, Registry, Shell, StepContext, StepError
from phonefleet.agent.evidence import LogcatSpan, StepLog
from phonefleet.agent.journal import RunJournal
from phonefleet.agent.outbox import ArtifactUpload
from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import ErrorCode, FinishOutcome
from phonefleet.protocol.plan import UnknownStep
from phonefleet.protocol.timeline import StepOutcome

log = logging.getLogger(__name__)

PROGRESS_EVERY_SEC = 0.8
"""While a step runs, its progress is reported this often (at least once a second, as the dashboard promises);
a timer in the agent, never a poll of the phone. The link keeps only the newest report per run in a batch.
0.8 s, not 0.5: at 10,000 busy phones 0.5 s overloaded the database (bench/RESULTS.md, "the cost of progress
reports"), and 1.0 s plus the ack's round trip left half the gaps over a second."""

Report = Callable[[str, BaseModel], None]


@dataclass(order=True)
class _Queued:
    sort_key: tuple[int, int]
    order: ev.AssignmentOrder = field(compare=False)


@dataclass
class _Ending:
    """How a run ended, before it becomes its ``FinishedItem``."""

    outcome: FinishOutcome = FinishOutcome.completed
    error: str | None = None
    code: str | None = None
    retryable: bool = True
    result: dict[str, Any] = field(default_factory=dict)

    def failed(self, outcome: FinishOutcome, error: str, code: str, *, retryable: bool = True) -> None:
        self.outcome, self.error, self.code, self.retryable = outcome, error[:10_000], code[:100], retryable


class PhoneWorker:
    def __init__(self, serial: str, phone: Shell, registry: Registry, report: Report, artifacts_dir: Path,
                 *, journal: RunJournal, notify: Callable[[], None], fetch: Fetch | None = None,
                 clock: Callable[[], float | None] = lambda: None) -> None:
        self.serial = serial
        self.phone = phone
        self.registry = registry
        self.report = report
        self.journal = journal
        self.notify = notify
        self.reruns: dict[int, int] = {}
        """Assignments to run again from their first step, with the step a crash interrupted (set by the agent)."""
        self.artifacts_dir = artifacts_dir
        self.fetch = fetch
        self.clock = clock
        """The phone's clock as the health probes know it (a run's logcat span starts by it)."""
        self.paused = False
        self.paused_jobs: set[int] = set()
        self.online = True
        self.refused = False
        """Another connected agent drives this phone (two agents on one adb server): run nothing on it."""
        self.recovering: str | None = None
        """Who runs a recovery rung on the phone now (the ladder, or an operator): no work starts meanwhile."""
        self._queue: list[_Queued] = []
        self._held: dict[int, ev.AssignmentOrder] = {}  # assignments set aside by a job pause
        self._known: set[int] = set()
        self._wake = asyncio.Event()
        self.current: ev.AssignmentOrder | None = None
        self._cancel_current = False
        self._lost = False
        self._current_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.done_count = 0

    # ------------------------------------------------------------------ queue

    def offer(self, order: ev.AssignmentOrder) -> bool:
        """Queue an assignment unless this phone has already seen it (the server may re-send)."""
        aid = order.assignment_id
        if aid in self._known:
            return False
        self._known.add(aid)
        heapq.heappush(self._queue, _Queued((-order.priority, aid), order))
        self._wake.set()
        return True

    def queued_ids(self) -> list[int]:
        return sorted(q.order.assignment_id for q in self._queue)

    def drop(self, ids: set[int], *, stop_running: bool = False, now: bool = False, hold: bool = False) -> list[int]:
        """Remove queued assignments (kept aside when ``hold``); stop the running one between steps
        (``stop_running``) or at once (``now``)."""
        dropped = [q.order for q in self._queue if q.order.assignment_id in ids]
        self._queue = [q for q in self._queue if q.order.assignment_id not in ids]
        heapq.heapify(self._queue)
        for order in dropped:
            if hold:
                self._held[order.assignment_id] = order
            else:
                self._known.discard(order.assignment_id)
        if self.current is not None and self.current.assignment_id in ids and (stop_running or now):
            self._cancel_current = True
            if now and self._current_task is not None:
                self._current_task.cancel()
        return [order.assignment_id for order in dropped]

    def lose_phone(self) -> None:
        """The phone was unplugged: end the running assignment now as failed, so its slot goes elsewhere."""
        self.online = False
        if self.current is not None and self._current_task is not None:
            self._lost = True
            self._cancel_current = True
            self._current_task.cancel()

    def restore(self, ids: set[int]) -> None:
        for aid in sorted(ids):
            order = self._held.pop(aid, None)
            if order is not None:
                self._known.discard(aid)
                self.offer(order)

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"phone-{self.serial}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _next(self) -> ev.AssignmentOrder | None:
        if self.paused or not self.online or self.refused or self.recovering is not None:
            return None
        skipped: list[_Queued] = []
        chosen = None
        while self._queue:
            item = heapq.heappop(self._queue)
            if item.order.job_id in self.paused_jobs:
                skipped.append(item)
                continue
            chosen = item.order
            break
        for item in skipped:
            heapq.heappush(self._queue, item)
        return chosen

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            order = self._next()
            if order is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.run(order)

    async def run(self, order: ev.AssignmentOrder) -> None:
        aid = order.assignment_id
        self.current = order
        self._cancel_current = False
        self._lost = False
        started = datetime.now(UTC)
        self.report(ev.ASSIGNMENT_STARTED, ev.AssignmentStarted(items=[ev.StartedItem(
            assignment_id=aid, at=started, rerun_after_step=self.reruns.pop(aid, None))]))
        ctx = StepContext(serial=self.serial, phone=self.phone, assignment_id=aid, artifacts_dir=self.artifacts_dir,
                          allow_shell=order.allow_shell, cancelled=lambda: self._cancel_current, fetch=self.fetch)
        ending = _Ending()
        steps = StepLog()
        logcat = LogcatSpan(self.phone, self.clock)
        t0 = time.monotonic()
        self._current_task = asyncio.current_task()
        try:
            await logcat.mark_start()
            ending.result = await asyncio.wait_for(self._steps(ctx, order, started, steps), timeout=order.timeout_sec)
        except TimeoutError:
            ending.failed(FinishOutcome.timed_out, f"timed out after {order.timeout_sec} s", ErrorCode.timeout)
            steps.end(ctx, StepOutcome.timed_out, ending.error)
        except asyncio.CancelledError:
            if not self._cancel_current:
                raise
            self._uncancel()
            if self._lost:
                ending.failed(FinishOutcome.failed, "phone disconnected mid-run", ErrorCode.device_lost)
                steps.end(ctx, StepOutcome.failed, ending.error)
            else:
                ending.failed(FinishOutcome.cancelled, "cancelled", ErrorCode.cancelled)
                steps.end(ctx, StepOutcome.cancelled, ending.error)
        except StepError as exc:
            ending.failed(FinishOutcome.failed, str(exc), exc.code, retryable=exc.retryable)
            steps.end(ctx, StepOutcome.failed, ending.error, exc)
        except Exception as exc:  # an ADB failure: the phone went away, a command broke
            if self.online:
                ending.failed(FinishOutcome.failed, f"{type(exc).__name__}: {exc}", ErrorCode.adb_error)
            else:
                ending.failed(FinishOutcome.failed, f"phone disconnected: {exc}", ErrorCode.device_lost)
            steps.end(ctx, StepOutcome.failed, ending.error)
        finally:
            self._current_task = None
        crashes = await logcat.capture(ctx) if self.online and not self._lost else []
        files = ctx.artifact_infos()  # after the logcat capture: it adds its file
        self.journal.finish(ev.FinishedItem(  # the result, its files' uploads and the end of the journal entry
            assignment_id=aid, outcome=ending.outcome, error=ending.error, error_code=ending.code,  # land together
            retryable=ending.retryable, started_at=started, finished_at=datetime.now(UTC), artifacts=files,
            result={**ending.result, "duration_sec": round(time.monotonic() - t0, 3), "artifacts": ctx.artifacts},
            steps=steps.records, crashes=crashes),
            uploads=[ArtifactUpload.of(aid, f) for f in files])
        self.notify()
        self.done_count += 1
        self.current = None

    def _uncancel(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    async def _steps(self, ctx: StepContext, order: ev.AssignmentOrder, started: datetime,
                     steps: StepLog) -> dict[str, Any]:
        results: list[Any] = []
        count = len(order.plan)
        for index, step in enumerate(order.plan):
            if self._cancel_current:
                raise asyncio.CancelledError
            if not self.online:
                raise StepError("phone disconnected", code=ErrorCode.device_lost)
            ctx.begin_step(index)
            steps.begin(index, step)
            bound = self.registry.bind(step)
            await self.journal.step_started(order, index, step.type, started)  # a crash from now on is known
            label = step.type if isinstance(step, UnknownStep) else step.name or step.type
            ticking = _Ticking(functools.partial(self._tick, ctx, index, count, label), f"progress-{ctx.assignment_id}")
            try:
                results.append(await bound(ctx))
            finally:
                ticking.stop()
            steps.end(ctx)
            self.report(ev.ASSIGNMENT_PROGRESS, ev.AssignmentProgress(items=[ev.ProgressItem(
                assignment_id=ctx.assignment_id, step_index=index, step_count=count,
                progress=round((index + 1) / count, 4), message=step_message(index, count, label, "done"))]))
        return {"steps": results}

    async def _tick(self, ctx: StepContext, index: int, count: int, label: str, t0: float) -> None:
        """Report the running step's progress now and every ``PROGRESS_EVERY_SEC`` until it ends (cancelled then)."""
        beat = time.monotonic()
        while True:  # on a fixed beat: a tick the loop ran late does not push the next one back
            elapsed = f"{time.monotonic() - t0:.0f} s"
            self.report(ev.ASSIGNMENT_PROGRESS, ev.AssignmentProgress(items=[ev.ProgressItem(
                assignment_id=ctx.assignment_id, step_index=index, step_count=count,
                progress=round(min(index + ctx.step_fraction, count) / count, 4),
                message=step_message(index, count, label, f"{ctx.step_note} · {elapsed}" if ctx.step_note
                                     else elapsed))]))
            beat = max(beat + PROGRESS_EVERY_SEC, time.monotonic())
            await asyncio.sleep(beat - time.monotonic())


class _Ticking:
    """A step's progress beat, started only once the step has run ``PROGRESS_EVERY_SEC``: a tap of a few
    milliseconds costs a timer, not a task made and cancelled (at 500 phones, thousands of steps a second)."""

    def __init__(self, tick: Callable[[float], Coroutine[Any, Any, None]], name: str) -> None:
        self._task: asyncio.Task[None] | None = None
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()

        def start() -> None:
            self._task = loop.create_task(tick(t0), name=name)

        self._timer = loop.call_later(PROGRESS_EVERY_SEC, start)

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def step_message(index: int, count: int, label: str, state: str) -> str:
    """What a progress report says of its step: "step 2/3 install_apk: pushing 5.0 of 12.0 MB · 4 s"."""
    return f"step {index + 1}/{count} {label}: {state}"[:1000]
