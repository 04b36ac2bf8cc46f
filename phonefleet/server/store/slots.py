"""SQL of slots: the attempts that share one of a job's target places, and late results settling them.

A retry points at its slot's first attempt (``slot_id``); a first attempt's own id names the slot.
``overturn_lost`` applies ``protocol.states.LATE_RESULT_RULE``: a result from the phone that ran an
assignment the server had declared lost replaces the guess, and its slot is counted exactly once.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from phonefleet.protocol.enums import AssignmentStatus as A
from phonefleet.protocol.enums import ErrorCode
from phonefleet.protocol.states import (
    ASSIGNMENT_TRANSITIONS,
    ASSIGNMENT_UNSTARTED,
    LATE_RESULTS,
    LOST_ERROR_CODE,
    as_guard,
    sources_of,
)
from phonefleet.server.store import Conn, Row
from phonefleet.server.store.records import Ended, JobPlacement

SLOT_SETTLED = """(a.slot_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM assignments s WHERE (s.id = a.slot_id OR s.slot_id = a.slot_id) AND s.id <> a.id
                                  AND s.status = 'completed' AND NOT s.superseded))"""
"""SQL (over ``assignments a``): another attempt of a's slot completed, so a's own end is history."""

UNSTARTED = tuple(as_guard(ASSIGNMENT_UNSTARTED))
CANCEL_UNSTARTED_FROM = [s for s in sources_of(ASSIGNMENT_TRANSITIONS, A.cancelled) if s in UNSTARTED]


@dataclass
class Tally:
    """Changes to one job's counters."""

    completed: int = 0
    failed: int = 0
    retries: int = 0
    assigned: int = 0

    def add(self, other: "Tally") -> None:
        self.completed += other.completed
        self.failed += other.failed
        self.retries += other.retries
        self.assigned += other.assigned


@dataclass
class Overturned:
    """What late results changed: the assignments they ended, unstarted retries they cancelled, and
    the job counters to correct."""

    changed: list[Ended] = field(default_factory=list)
    cancelled: list[JobPlacement] = field(default_factory=list)
    tallies: dict[int, Tally] = field(default_factory=dict)
    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(job_id, data) for the job's audit trail."""


async def overturn_lost(conn: Conn, items: Sequence[dict[str, Any]]) -> Overturned:
    """Apply agents' results to their assignments that the server had ended as lost; a rare path.

    ``items`` are finished reports (each with the reporting ``agent_id``) that ``assignments.finish``
    did not take because their assignment had already ended. Runs in the caller's transaction.
    """
    out = Overturned()
    reports = {int(i["assignment_id"]): i for i in reversed(items)
               if i.get("agent_id") is not None and str(i["outcome"]) in {str(s) for s in LATE_RESULTS[A.failed]}}
    if not reports:
        return out
    rows = await conn.fetch(
        """SELECT a.id, a.job_id, a.retry_at, coalesce(a.slot_id, a.id) AS slot, a.attempt
           FROM assignments a JOIN unnest($1::bigint[], $2::bigint[]) AS t(id, agent_id)
                ON t.id = a.id AND t.agent_id = a.agent_id
           WHERE a.status = ANY($3::text[]) AND a.error_code = $4 AND NOT a.superseded
           ORDER BY a.id FOR UPDATE OF a""",
        list(reports), [reports[i]["agent_id"] for i in reports], sorted(str(s) for s in LATE_RESULTS),
        LOST_ERROR_CODE,
    )
    for row in rows:
        item = reports[row["id"]]
        outcome = str(item["outcome"])
        changed = await conn.fetchrow(
            """UPDATE assignments a SET status = $2, error = $3, error_code = $4, result = $5,
                   progress = CASE WHEN $2 = 'completed' THEN 1 ELSE a.progress END,
                   started_at = coalesce(a.started_at, $6), finished_at = coalesce($7, now()),
                   retry_at = CASE WHEN $2 = 'completed' THEN NULL ELSE a.retry_at END
               WHERE a.id = $1 AND a.status = ANY($8::text[]) AND $2 = ANY($9::text[])
               RETURNING a.id, a.job_id, a.device_id, a.agent_id, a.status, a.retry_at, a.started_at,
                         a.finished_at, true AS settled, a.error_code""",
            row["id"], outcome, item.get("error"), item.get("error_code"), item.get("result"),
            item.get("started_at"), item.get("finished_at"),
            as_guard(LATE_RESULTS), as_guard(LATE_RESULTS[A.failed]), record_class=Ended,
        )
        assert changed is not None
        out.changed.append(changed)
        how = "outcome" if outcome != A.completed else await _settle_slot(conn, row, out)
        out.events.append((row["job_id"], {"assignment_id": row["id"], "attempt": row["attempt"],
                                           "outcome": outcome, "slot": how}))
    return out


async def _settle_slot(conn: Conn, lost: Row, out: Overturned) -> str:
    """The lost attempt completed after all: count its slot as completed once; returns how."""
    tally = out.tallies.setdefault(lost["job_id"], Tally())
    already = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM assignments s WHERE (s.id = $1 OR s.slot_id = $1) AND s.id <> $2
                                 AND s.status = 'completed' AND NOT s.superseded)""",
        lost["slot"], lost["id"],
    )
    if already:
        return "history: the slot had completed"
    tally.completed += 1
    if lost["retry_at"] is not None:
        tally.retries -= 1
        return "its retry was dropped"
    later = await conn.fetchrow(
        """SELECT id, status, retry_at, error_code, device_id, agent_id, job_id FROM assignments
           WHERE slot_id = $1 AND id > $2 AND NOT superseded ORDER BY id DESC LIMIT 1 FOR UPDATE""",
        lost["slot"], lost["id"],
    )
    if later is None:
        tally.failed -= 1
        return "failed slot completed"
    if later["status"] in UNSTARTED:
        cancelled = await conn.fetchrow(
            """UPDATE assignments SET status = 'cancelled', finished_at = now(), lease_until = NULL, retry_at = NULL,
                   error_code = $2, error = $3
               WHERE id = $1 AND status = ANY($4::text[])
               RETURNING id, device_id, agent_id, job_id""",
            later["id"], str(ErrorCode.superseded), f"attempt {lost['attempt']} completed after all",
            CANCEL_UNSTARTED_FROM, record_class=JobPlacement,
        )
        if cancelled is not None:
            out.cancelled.append(cancelled)
        return f"unstarted retry {later['id']} cancelled"
    if later["status"] == A.running:
        return f"retry {later['id']} runs on as history"
    if later["retry_at"] is not None:
        await conn.execute("UPDATE assignments SET retry_at = NULL WHERE id = $1", later["id"])
        tally.retries -= 1
        return f"retry after {later['id']} dropped"
    if later["status"] in (A.failed, A.timed_out):
        tally.failed -= 1
        return "failed slot completed"
    if later["error_code"] == ErrorCode.handed_back:  # the retry gave its slot back to the job: take it again
        tally.assigned += 1
    return "slot completed"

