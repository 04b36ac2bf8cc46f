"""Runs plans on phones: one worker per phone, one assignment at a time, highest priority first.

Every report (started, progress, finished) goes to the outbox; a cancel stops the plan between
steps (or at once when the server asks to abort), and a phone that disappears mid-run fails its
assignment so the server can hand the slot to another phone.
"""

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phonefleet.agent.actions import Registry, Shell, StepContext, StepError
from phonefleet.agent.journal import RunJournal
from phonefleet.protocol import events as ev

log = logging.getLogger(__name__)

Report = Callable[[str, dict[str, Any]], None]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(order=True)
class _Queued:
    sort_key: tuple[int, int]
    order: dict[str, Any] = field(compare=False)


class PhoneWorker:
    def __init__(self, serial: str, phone: Shell, registry: Registry, report: Report, artifacts_dir: Path,
                 *, journal: RunJournal, notify: Callable[[], None], fetch: Any = None) -> None:
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
        self.paused = False
        self.paused_jobs: set[int] = set()
        self.online = True
        self.refused = False
        """Another connected agent drives this phone (two agents on one adb server): run nothing on it."""
        self._queue: list[_Queued] = []
        self._held: dict[int, dict[str, Any]] = {}  # assignments set aside by a job pause
        self._known: set[int] = set()
        self._wake = asyncio.Event()
        self.current: dict[str, Any] | None = None
        self._cancel_current = False
        self._lost = False
        self._current_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.done_count = 0

    # ------------------------------------------------------------------ queue

    def offer(self, order: dict[str, Any]) -> bool:
        """Queue an assignment unless this phone has already seen it (the server may re-send)."""
        aid = int(order["assignment_id"])
        if aid in self._known:
            return False
        self._known.add(aid)
        heapq.heappush(self._queue, _Queued((-int(order["priority"]), aid), order))
        self._wake.set()
        return True

    def queued_ids(self) -> list[int]:
        return sorted(q.order["assignment_id"] for q in self._queue)

    def drop(self, ids: set[int], *, stop_running: bool = False, now: bool = False, hold: bool = False) -> list[int]:
        """Remove queued assignments (kept aside when ``hold``); stop the running one between steps
        (``stop_running``) or at once (``now``)."""
        dropped = [q for q in self._queue if q.order["assignment_id"] in ids]
        self._queue = [q for q in self._queue if q.order["assignment_id"] not in ids]
        heapq.heapify(self._queue)
        for q in dropped:
            if hold:
                self._held[q.order["assignment_id"]] = q.order
            else:
                self._known.discard(q.order["assignment_id"])
        if self.current is not None and self.current["assignment_id"] in ids and (stop_running or now):
            self._cancel_current = True
            if now and self._current_task is not None:
                self._current_task.cancel()
        return [q.order["assignment_id"] for q in dropped]

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

    def _next(self) -> dict[str, Any] | None:
        if self.paused or not self.online or self.refused:
            return None
        skipped: list[_Queued] = []
        chosen = None
        while self._queue:
            item = heapq.heappop(self._queue)
            if item.order["job_id"] in self.paused_jobs:
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

    async def run(self, order: dict[str, Any]) -> None:
        aid = int(order["assignment_id"])
        self.current = order
        self._cancel_current = False
        self._lost = False
        started = _now()
        rerun = self.reruns.pop(aid, None)
        self.report(ev.ASSIGNMENT_STARTED, {"items": [{"assignment_id": aid, "at": started,
                                                       **({"rerun_after_step": rerun} if rerun is not None else {})}]})
        ctx = StepContext(serial=self.serial, phone=self.phone, assignment_id=aid,
                          artifacts_dir=self.artifacts_dir, allow_shell=bool(order.get("allow_shell")),
                          cancelled=lambda: self._cancel_current, fetch=self.fetch)
        outcome, error, code, retryable, result = "completed", None, None, True, None
        t0 = time.monotonic()
        self._current_task = asyncio.current_task()
        try:
            result = await asyncio.wait_for(self._steps(ctx, order, started),
                                            timeout=float(order["timeout_sec"]))
        except TimeoutError:
            outcome, error, code = "timed_out", f"timed out after {order['timeout_sec']} s", "timeout"
        except asyncio.CancelledError:
            if not self._cancel_current:
                raise
            self._uncancel()
            if self._lost:
                outcome, error, code = "failed", "phone disconnected mid-run", "device_lost"
            else:
                outcome, error, code = "cancelled", "cancelled", "cancelled"
        except StepError as exc:
            outcome, error, code, retryable = "failed", str(exc), exc.code, exc.retryable
        except Exception as exc:  # an ADB failure: the phone went away, a command broke
            outcome, error, code = "failed", f"{type(exc).__name__}: {exc}", "adb_error"
            if not self.online:
                error, code = f"phone disconnected: {exc}", "device_lost"
        finally:
            self._current_task = None
        self.journal.finish(aid, {  # the result and the end of the journal entry land together
            "assignment_id": aid, "outcome": outcome, "error": error, "error_code": code, "retryable": retryable,
            "result": {**(result or {}), "duration_sec": round(time.monotonic() - t0, 3),
                       "artifacts": ctx.artifacts},
            "started_at": started, "finished_at": _now(),
        })
        self.notify()
        for artifact in ctx.artifacts:
            self.report(ev.ARTIFACT_UPLOAD, {"assignment_id": aid, "name": artifact["file"]})
        self.done_count += 1
        self.current = None

    def _uncancel(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    async def _steps(self, ctx: StepContext, order: dict[str, Any], started: str) -> dict[str, Any]:
        plan: list[dict[str, Any]] = order["plan"]
        results: list[Any] = []
        for index, step in enumerate(plan):
            if self._cancel_current:
                raise asyncio.CancelledError
            if not self.online:
                raise StepError("phone disconnected", code="device_lost")
            fn = self.registry.get(str(step.get("type")))
            await self.journal.step_started(order, index, str(step.get("type")), started)  # a crash now is known
            results.append(await fn(ctx, step))
            self.report(ev.ASSIGNMENT_PROGRESS, {"items": [{
                "assignment_id": ctx.assignment_id, "step_index": index, "step_count": len(plan),
                "progress": round((index + 1) / len(plan), 4), "message": step.get("name") or step.get("type"),
            }]})
        return {"steps": results}
