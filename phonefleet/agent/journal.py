"""The run journal: which step each running assignment is on, kept durably beside the outbox.

A run's entry is written before its first step (synced to disk) and updated as each step starts;
it leaves in the same transaction that puts the run's result in the outbox. So after a crash, every
entry left is a run that was cut short, and what it was doing is known: the agent reports it as
``interrupted`` (or runs it again, recorded, when its job says ``on_interrupt: rerun``), and never
silently runs a plan twice.
"""

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from phonefleet.agent.outbox import Outbox
from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import OnInterrupt


@dataclass(frozen=True, slots=True)
class JournalEntry:
    assignment_id: int
    job_id: int
    attempt: int
    on_interrupt: OnInterrupt
    step_index: int
    step_type: str
    started_at: datetime
    """When the run started, as reported in its ``assignment:started``."""


class RunJournal:
    """A run's first write goes through one thread in group commits: however many phones start a run at once,
    they share one disk sync, and the event loop never waits on the disk. Later steps only move the entry on
    (no sync), on the loop."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-journal")
        with outbox.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS run_journal ("
                " assignment_id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, attempt INTEGER NOT NULL,"
                " on_interrupt TEXT NOT NULL, step_index INTEGER NOT NULL, step_type TEXT NOT NULL,"
                " started_at TEXT NOT NULL, updated_at REAL NOT NULL)"
            )

    async def step_started(self, order: ev.AssignmentOrder, step_index: int, step_type: str,
                           started_at: datetime) -> None:
        """Record that the run is entering this step; returns once it is written (the first step's entry
        synced to disk), so a crash from then on is known."""
        row = (order.assignment_id, order.job_id, order.attempt, str(order.on_interrupt), step_index, step_type,
               started_at.isoformat(), time.time())
        if step_index > 0:  # the entry is on disk since step 0: moving it on is one small unsynced write,
            self._write([row])  # cheaper here than a hop through the writer thread on every step
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="run-journal")
        await done

    async def _write_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await loop.run_in_executor(self._executor, self._write, [row for row, _ in batch])
            except Exception as exc:  # a full disk: the step may not start unrecorded
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        with self.outbox.transaction(durable=any(r[4] == 0 for r in rows)) as db:
            db.executemany(
                "INSERT INTO run_journal (assignment_id, job_id, attempt, on_interrupt, step_index, step_type,"
                " started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (assignment_id) DO UPDATE SET step_index = excluded.step_index,"
                " step_type = excluded.step_type, updated_at = excluded.updated_at",
                rows,
            )

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def finish(self, result: ev.FinishedItem, uploads: Sequence[BaseModel] = ()) -> int:
        """Put the run's ``assignment:finished`` item and its files' uploads in the outbox and end its entry,
        atomically (a crash never leaves a result whose files are not queued)."""
        with self.outbox.transaction() as db:
            row_id = Outbox.insert(db, ev.ASSIGNMENT_FINISHED, ev.AssignmentFinished(results=[result]))
            for upload in uploads:
                Outbox.insert(db, ev.ARTIFACT_UPLOAD, upload)
            db.execute("DELETE FROM run_journal WHERE assignment_id = ?", (result.assignment_id,))
        return row_id

    def forget(self, assignment_ids: Sequence[int]) -> None:
        with self.outbox.transaction() as db:
            db.executemany("DELETE FROM run_journal WHERE assignment_id = ?", [(i,) for i in assignment_ids])

    def entries(self) -> list[JournalEntry]:
        """Runs that were on a step when the agent last stopped (every entry, read at start-up)."""
        with self.outbox.transaction() as db:
            rows = db.execute(
                "SELECT assignment_id, job_id, attempt, on_interrupt, step_index, step_type, started_at"
                " FROM run_journal ORDER BY assignment_id"
            ).fetchall()
        return [JournalEntry(r[0], r[1], r[2], OnInterrupt(r[3]), r[4], r[5], datetime.fromisoformat(r[6]))
                for r in rows]
