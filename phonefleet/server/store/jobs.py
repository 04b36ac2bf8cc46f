"""SQL of jobs: creation, listing, status transitions, counters, target resolution."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from phonefleet.protocol.enums import JobStatus
from phonefleet.protocol.states import (
    JOB_ACTIVATES_FROM,
    JOB_INITIAL,
    JOB_REQUEUE_REOPENS,
    JOB_TRANSITIONS,
    JOB_UNBLOCKS_FROM,
    as_guard,
    checked_initial,
    checked_sources,
    sources_of,
)
from phonefleet.server.store import Conn, teams_arg
from phonefleet.server.store.records import (
    BlockedJob,
    FillJob,
    JobEventRecord,
    JobOutcome,
    JobRecord,
    RenderedJob,
)
from phonefleet.server.store.slots import Tally

JOB_COLUMNS = """
    j.id, j.title, j.plan, j.target_type, j.target_value, j.target_count, j.filters, j.priority, j.status,
    j.timeout_sec, j.max_retries, j.run_at, j.depends_on, j.assigned_count, j.completed_count,
    j.failed_count, j.retry_pending, j.allow_shell, j.created_at, j.updated_at, j.finished_at,
    j.max_parallel, j.blocked_reason, j.schedule_id, j.scheduled_for, j.activated_at, j.on_interrupt, j.team_id
"""

# Eligibility of a phone for a job, minus the per-job "never before" and pause checks.
# Parameters: $F1 models, $F2 android_versions, $F3 tags, $F4 agent names, $F5 serials.
ELIGIBLE_FILTERS = """
    ({m}::text[] IS NULL OR d.model = ANY({m}))
    AND ({v}::text[] IS NULL OR d.android_version = ANY({v}))
    AND ({t}::text[] IS NULL OR d.tags @> {t})
    AND ({a}::text[] IS NULL OR ag.name = ANY({a}))
    AND ({s}::text[] IS NULL OR d.serial = ANY({s}))
"""


def contains_pattern(text: str | None) -> str | None:
    """A LIKE pattern for "contains ``text``", literally: its ``%``, ``_`` and ``\\`` match themselves."""
    if text is None:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


TITLE_CONTAINS = "($2::text IS NULL OR j.title ILIKE $2 ESCAPE '\\')"
"""Parameter $2 is a ``contains_pattern`` (never the raw search: a ``%`` in it would match every title)."""


def filter_sql(first_param: int) -> str:
    n = first_param
    return ELIGIBLE_FILTERS.format(m=f"${n}", v=f"${n + 1}", t=f"${n + 2}", a=f"${n + 3}", s=f"${n + 4}")


def filter_args(filters: dict[str, Any]) -> list[list[str] | None]:
    return [filters.get(k) for k in ("models", "android_versions", "tags", "agents", "serials")]


async def insert(conn: Conn, job: dict[str, Any], *, actor: str) -> JobRecord:
    """Store a job and its ``created`` event in one statement (atomic without a transaction of its own).

    A job with nothing to reach (a target of 0) is stored completed: done at once, and said so."""
    row = await conn.fetchrow(
        f"""WITH j AS (
                INSERT INTO jobs (title, plan, target_type, target_value, target_count, filters, priority, status,
                    timeout_sec, max_retries, run_at, depends_on, allow_shell, max_parallel, schedule_id,
                    scheduled_for, on_interrupt, activated_at, finished_at, team_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 = 'active' AND $5 = 0 THEN 'completed' ELSE $8 END,
                        $9, $10, $11, $12, $13, $14, $15, $16, $17,
                        CASE WHEN $8 = 'active' THEN now() END, CASE WHEN $8 = 'active' AND $5 = 0 THEN now() END, $19)
                RETURNING *),
            e AS (INSERT INTO job_events (job_id, kind, actor, data)
                  SELECT j.id, 'created', $18, jsonb_build_object('target_count', j.target_count) FROM j)
            SELECT {JOB_COLUMNS} FROM j""",
        job["title"], job["plan"], job["target_type"], job["target_value"], job["target_count"], job["filters"],
        job["priority"], checked_initial(JOB_INITIAL, job["status"]),
        job["timeout_sec"], job["max_retries"], job["run_at"],
        sorted(set(job["depends_on"])), job.get("allow_shell", False), job.get("max_parallel"), job.get("schedule_id"),
        job.get("scheduled_for"), str(job.get("on_interrupt", "fail")), actor, job["team_id"], record_class=JobRecord,
    )
    assert row is not None
    return row


async def get_rendered(conn: Conn, job_id: int) -> RenderedJob | None:
    """One job with its running and paused counts, in one query (what ``GET /api/jobs/{id}`` shows)."""
    return await conn.fetchrow(
        f"""SELECT {JOB_COLUMNS},
                   (SELECT count(*) FROM assignments a WHERE a.job_id = j.id AND a.status = 'running')::int
                       AS running_count,
                   (SELECT count(*) FROM assignments a WHERE a.job_id = j.id AND a.status = 'paused')::int
                       AS paused_count
            FROM jobs j WHERE j.id = $1""",
        job_id, record_class=RenderedJob,
    )


async def get(conn: Conn, job_id: int, *, for_update: bool = False) -> JobRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = $1{lock}", job_id,
                               record_class=JobRecord)


async def get_for_fill(conn: Conn, job_id: int) -> FillJob | None:
    """Lock the job row, and share-lock the distribution switch: a stop waits for this claim, and a
    claim after a stop sees ``distribution_running`` false."""
    return await conn.fetchrow(
        f"""SELECT {JOB_COLUMNS}, s.running AS distribution_running FROM jobs j, scheduler_state s
            WHERE j.id = $1 AND s.id = 1 FOR UPDATE OF j FOR SHARE OF s""",
        job_id, record_class=FillJob,
    )


async def get_many(conn: Conn, job_ids: Sequence[int]) -> list[JobRecord]:
    return await conn.fetch(f"SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ANY($1::bigint[]) ORDER BY j.id",
                            list(job_ids), record_class=JobRecord)


async def existing_ids(conn: Conn, job_ids: Sequence[int], teams: Sequence[int] | None = None) -> set[int]:
    """Those of ``job_ids`` that exist (in ``teams``, when given: a job depends only on jobs of its team, a person
    acts only on their teams' jobs)."""
    rows = await conn.fetch("SELECT id FROM jobs WHERE id = ANY($1::bigint[]) AND ($2::bigint[] IS NULL OR "
                            "team_id = ANY($2))", list(job_ids), teams_arg(teams))
    return {r["id"] for r in rows}


async def list_page(
    conn: Conn, *, statuses: Sequence[str] | None, search: str | None, limit: int, offset: int,
    schedule_id: int | None = None, teams: Sequence[int] | None = None,
) -> tuple[list[JobRecord], int]:
    """A page of jobs, newest first; ``teams``: only jobs of these teams (None: every team)."""
    where = (f"($1::text[] IS NULL OR j.status = ANY($1)) AND {TITLE_CONTAINS}"
             " AND ($3::bigint IS NULL OR j.schedule_id = $3) AND ($4::bigint[] IS NULL OR j.team_id = ANY($4))")
    args = (list(statuses) if statuses else None, contains_pattern(search), schedule_id, teams_arg(teams))
    rows = await conn.fetch(
        f"SELECT {JOB_COLUMNS} FROM jobs j WHERE {where} ORDER BY j.id DESC LIMIT $5 OFFSET $6",
        *args, limit, offset, record_class=JobRecord,
    )
    total = await conn.fetchval(f"SELECT count(*) FROM jobs j WHERE {where}", *args)
    return rows, int(total)


async def assignment_counts(conn: Conn, job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    rows = await conn.fetch(
        """SELECT job_id, status, count(*)::int AS n FROM assignments
           WHERE job_id = ANY($1::bigint[]) AND status IN ('pending', 'delivered', 'running', 'paused')
           GROUP BY job_id, status""",
        list(job_ids),
    )
    out: dict[int, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["job_id"], {})[r["status"]] = r["n"]
    return out


async def transition(conn: Conn, job_id: int, target: str, sources: Sequence[str]) -> JobRecord | None:
    """Move a job to ``target`` if it is in one of ``sources``; None when it was not."""
    finished = target in ("completed", "cancelled")
    return await conn.fetchrow(
        f"""UPDATE jobs j SET status = $2, updated_at = now(), starved = false,
                finished_at = CASE WHEN $4 THEN now() ELSE j.finished_at END
            WHERE j.id = $1 AND j.status = ANY($3::text[]) RETURNING {JOB_COLUMNS}""",
        job_id, target, checked_sources(JOB_TRANSITIONS, target, sources), finished, record_class=JobRecord,
    )


async def update_fields(conn: Conn, job_id: int, fields: dict[str, Any]) -> JobRecord | None:
    allowed = ("title", "priority", "timeout_sec", "max_retries", "max_parallel")
    sets = [f"{k} = ${i}" for i, k in enumerate((k for k in allowed if k in fields), start=2)]
    if not sets:
        return await get(conn, job_id)
    values = [fields[k] for k in allowed if k in fields]
    return await conn.fetchrow(
        f"UPDATE jobs j SET {', '.join(sets)}, updated_at = now() WHERE j.id = $1 RETURNING {JOB_COLUMNS}",
        job_id, *values, record_class=JobRecord,
    )


async def delete(conn: Conn, job_id: int) -> bool:
    return str(await conn.execute("DELETE FROM jobs WHERE id = $1", job_id)).endswith(" 1")


async def count_eligible_connected(conn: Conn, filters: dict[str, Any], team_id: int) -> int:
    """Phones that may take a job of ``team_id`` now or once they are free: connected, healthy, not paused (nor
    their agent), of the team's agents, matching the filters: the phones a claim may take."""
    return int(
        await conn.fetchval(
            f"""SELECT count(*) FROM devices d JOIN agents ag ON ag.id = d.agent_id
                WHERE d.state IN ('idle', 'busy') AND ag.status = 'online' AND NOT ag.paused AND ag.team_id = $6
                  AND {filter_sql(1)}""",
            *filter_args(filters), team_id,
        )
    )


async def activate(conn: Conn, job_id: int, target_count: int) -> JobRecord | None:
    return await conn.fetchrow(
        f"""UPDATE jobs j SET status = 'active', target_count = coalesce(j.target_count, $2), updated_at = now(),
                starved = false,
                activated_at = coalesce(j.activated_at, now())
            WHERE j.id = $1 AND j.status = ANY($3::text[]) RETURNING {JOB_COLUMNS}""",
        job_id, target_count, as_guard(JOB_ACTIVATES_FROM), record_class=JobRecord,
    )


async def set_target(conn: Conn, job_id: int, target_count: int) -> None:
    await conn.execute("UPDATE jobs SET target_count = $2 WHERE id = $1 AND target_count IS NULL", job_id, target_count)


async def due_scheduled(conn: Conn, now: datetime | None = None, limit: int = 1000) -> list[JobRecord]:
    """Scheduled jobs whose time has come and whose prerequisites all completed without a failed slot,
    highest priority first, at most ``limit``."""
    return await conn.fetch(
        f"""SELECT {JOB_COLUMNS} FROM jobs j
            WHERE j.status = 'scheduled' AND (j.run_at IS NULL OR j.run_at <= coalesce($1, now()))
              AND (SELECT count(*) FROM jobs p WHERE p.id = ANY(j.depends_on) AND p.status = 'completed'
                   AND p.failed_count = 0) = cardinality(j.depends_on)
            ORDER BY j.priority DESC, j.created_at, j.id
            LIMIT $2
            FOR UPDATE SKIP LOCKED""",
        now, limit, record_class=JobRecord,
    )


# Why a prerequisite stops its dependents: it was deleted, cancelled, is blocked itself, or
# completed with failed slots. Shared by blocking and unblocking so the two never disagree.
_PREREQUISITE_FAILED = """
    p.id IS NULL OR p.status IN ('cancelled', 'blocked') OR (p.status = 'completed' AND p.failed_count > 0)
"""


async def block_dependents(conn: Conn) -> list[BlockedJob]:
    """Scheduled jobs with a failed prerequisite become ``blocked``, with the reason; returns them.

    Blocking cascades: a blocked job is itself a failed prerequisite on the next pass."""
    return await conn.fetch(
        f"""WITH reasons AS (
                SELECT j.id, string_agg(
                    CASE WHEN p.id IS NULL THEN format('job %s was deleted', d.pid)
                         WHEN p.status = 'cancelled' THEN format('job %s was cancelled', p.id)
                         WHEN p.status = 'blocked' THEN format('job %s is blocked', p.id)
                         ELSE format('job %s completed with %s failed slot(s)', p.id, p.failed_count) END,
                    '; ' ORDER BY d.pid) AS reason
                FROM jobs j CROSS JOIN LATERAL unnest(j.depends_on) AS d(pid) LEFT JOIN jobs p ON p.id = d.pid
                WHERE j.status = ANY($1::text[]) AND cardinality(j.depends_on) > 0 AND ({_PREREQUISITE_FAILED})
                GROUP BY j.id)
            UPDATE jobs j SET status = 'blocked', blocked_reason = reasons.reason, updated_at = now()
            FROM reasons WHERE j.id = reasons.id AND j.status = ANY($1::text[])
            RETURNING j.id, j.blocked_reason""",
        sources_of(JOB_TRANSITIONS, JobStatus.blocked), record_class=BlockedJob,
    )


async def unblock_ready(conn: Conn) -> list[int]:
    """Blocked jobs whose prerequisites no longer fail (one was requeued) wait again as ``scheduled``;
    returns their ids."""
    rows = await conn.fetch(
        f"""UPDATE jobs j SET status = 'scheduled', blocked_reason = NULL, updated_at = now()
            WHERE j.status = ANY($1::text[]) AND NOT EXISTS (
                SELECT 1 FROM unnest(j.depends_on) AS d(pid) LEFT JOIN jobs p ON p.id = d.pid
                WHERE {_PREREQUISITE_FAILED})
            RETURNING j.id""",
        as_guard(JOB_UNBLOCKS_FROM),
    )
    return [r["id"] for r in rows]


async def would_cycle(conn: Conn, job_id: int, depends_on: Sequence[int]) -> bool:
    """Would ``job_id`` depending on ``depends_on`` close a cycle (is the job reachable from them)?"""
    return bool(await conn.fetchval(
        """WITH RECURSIVE reach(id) AS (
               SELECT unnest($2::bigint[])
               UNION
               SELECT unnest(j.depends_on) FROM jobs j JOIN reach r ON j.id = r.id)
           SELECT EXISTS (SELECT 1 FROM reach WHERE id = $1)""",
        job_id, list(depends_on),
    ))


async def set_depends_on(conn: Conn, job_id: int, depends_on: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE jobs SET depends_on = $2, updated_at = now() WHERE id = $1", job_id, sorted(set(depends_on))
    )


async def requeue(conn: Conn, job_id: int, scope: str) -> int:
    """Reopen a job's ended slots so they run again; returns how many. The caller holds the job row.

    ``failed``: slots that finally failed or timed out (not those another phone retried). ``all``:
    every ended slot, and pending retries, with the counters reset. The old assignments are kept as
    history, marked ``superseded``, so the same phones may take the job again.
    """
    if scope == "failed":
        n = int(await conn.fetchval(
            """WITH s AS (UPDATE assignments SET superseded = true
                          WHERE job_id = $1 AND status IN ('failed', 'timed_out') AND NOT superseded
                            AND NOT retried AND retry_at IS NULL
                          RETURNING 1)
               SELECT count(*) FROM s""",
            job_id,
        ))
        await conn.execute(
            """UPDATE jobs SET failed_count = greatest(0, failed_count - $2),
                   assigned_count = greatest(0, assigned_count - $2), updated_at = now()
               WHERE id = $1""",
            job_id, n,
        )
    else:
        await conn.execute(
            """UPDATE assignments SET superseded = true, retry_at = NULL
               WHERE job_id = $1 AND NOT superseded
                 AND status IN ('completed', 'failed', 'timed_out', 'cancelled')""",
            job_id,
        )
        n = int(await conn.fetchval(
            """WITH live AS (SELECT count(*) AS k FROM assignments WHERE job_id = $1 AND NOT superseded)
               UPDATE jobs j SET completed_count = 0, failed_count = 0, retry_pending = 0,
                   assigned_count = live.k, updated_at = now()
               FROM live WHERE j.id = $1
               RETURNING greatest(0, coalesce(j.target_count, 0) - live.k)""",
            job_id,
        ))
    if n:
        await conn.execute(
            """UPDATE jobs SET status = 'active', finished_at = NULL, updated_at = now()
               WHERE id = $1 AND status = ANY($2::text[])""",
            job_id, as_guard(JOB_REQUEUE_REOPENS),
        )
        # Its old phones may run it again: it no longer waits for phones that are not there.
        await conn.execute("UPDATE jobs SET starved = false WHERE id = $1 AND starved", job_id)
    return n


async def ids_matching(conn: Conn, *, statuses: Sequence[str] | None, search: str | None,
                       schedule_id: int | None, limit: int, teams: Sequence[int] | None = None) -> list[int]:
    rows = await conn.fetch(
        f"""SELECT j.id FROM jobs j
           WHERE ($1::text[] IS NULL OR j.status = ANY($1)) AND {TITLE_CONTAINS}
             AND ($3::bigint IS NULL OR j.schedule_id = $3) AND ($5::bigint[] IS NULL OR j.team_id = ANY($5))
           ORDER BY j.id LIMIT $4""",
        list(statuses) if statuses else None, contains_pattern(search), schedule_id, limit, teams_arg(teams),
    )
    return [r["id"] for r in rows]


JOB_FILTERS_MATCH = """
    (j.filters->'models' IS NULL OR d.model = ANY(ARRAY(SELECT jsonb_array_elements_text(j.filters->'models'))))
    AND (j.filters->'android_versions' IS NULL
         OR d.android_version = ANY(ARRAY(SELECT jsonb_array_elements_text(j.filters->'android_versions'))))
    AND (j.filters->'tags' IS NULL OR d.tags @> ARRAY(SELECT jsonb_array_elements_text(j.filters->'tags')))
    AND (j.filters->'agents' IS NULL OR ag.name = ANY(ARRAY(SELECT jsonb_array_elements_text(j.filters->'agents'))))
    AND (j.filters->'serials' IS NULL OR d.serial = ANY(ARRAY(SELECT jsonb_array_elements_text(j.filters->'serials'))))
"""
"""``ELIGIBLE_FILTERS`` over a job row ``j`` (its stored filters) instead of parameters: for set-based checks."""

def phone_for_job(states: str, *, among: str = "true", phones: str = "devices") -> str:
    """SQL (over a job row ``j``): a phone in one of ``states`` (a SQL list), and matching ``among``, that may
    run the job: its agent online and not paused, the job's filters matched, the job never run on it, the
    job not paused there. ``phones``: where to look for it (``devices``, or a subset read once)."""
    return f"""EXISTS (
        SELECT 1 FROM {phones} d JOIN agents ag ON ag.id = d.agent_id
        WHERE d.state IN ({states}) AND {among} AND ag.status = 'online' AND NOT ag.paused AND {JOB_FILTERS_MATCH}
          AND NOT EXISTS (SELECT 1 FROM assignments x WHERE x.job_id = j.id AND x.device_id = d.id AND NOT x.superseded)
          AND NOT EXISTS (SELECT 1 FROM agent_job_pauses p WHERE p.agent_id = d.agent_id AND p.job_id = j.id))"""


_IDLE_PHONES = """idle_phones AS MATERIALIZED (
    SELECT id, agent_id, state, model, android_version, tags, serial FROM devices WHERE state = 'idle')"""
"""The idle phones, read once per statement (devices has no index on state: a claim or release must stay a
HOT update), so that checking many jobs against them scans the few idle phones, not the whole fleet."""

_CAN_CLAIM = f"""(
    (j.assigned_count < j.target_count AND {phone_for_job("'idle'", phones="idle_phones")})
    OR (j.retry_pending > 0 AND EXISTS (SELECT 1 FROM assignments a WHERE a.job_id = j.id AND a.retry_at <= now()))
)"""
"""A job that may claim a phone now: an open slot and an idle phone it may run on, or a retry that is due."""


@dataclass(frozen=True)
class FillCursor:
    """Where a pass over fillable jobs stopped, in their order (priority first, then oldest)."""

    priority: int
    created_at: datetime
    id: int

    @classmethod
    def of(cls, job: JobRecord) -> "FillCursor":
        return cls(job.priority, job.created_at, job.id)


async def fillable(conn: Conn, job_ids: Sequence[int] | None, *, after: FillCursor | None = None,
                   limit: int = 200) -> list[JobRecord]:
    """Active jobs that may claim a phone now, highest priority first, then oldest: the given ones (a
    job event), or every one (a pass), ``limit`` at a time after ``after``. A job waiting for phones
    that are not there is left out in SQL, so a backlog of them costs a pass one query, not one
    transaction each; and one no connected phone may run at all (``starved``) is skipped at the index."""
    which = "j.id = ANY($1::bigint[])" if job_ids is not None else "NOT j.starved AND $1::bigint[] IS NULL"
    return await conn.fetch(
        f"""WITH {_IDLE_PHONES}
            SELECT {JOB_COLUMNS} FROM jobs j
            WHERE j.status = 'active' AND {which}
              AND ($2::int IS NULL OR (j.priority, -extract(epoch FROM j.created_at), -j.id)
                                      < ($2, -extract(epoch FROM $3::timestamptz), -$4::bigint))
              AND {_CAN_CLAIM}
            ORDER BY j.priority DESC, j.created_at, j.id
            LIMIT $5""",
        list(job_ids) if job_ids is not None else None,
        after.priority if after else None, after.created_at if after else None, after.id if after else None,
        limit, record_class=JobRecord,
    )


async def apply_outcomes(conn: Conn, tallies: dict[int, Tally]) -> list[JobRecord]:
    """Add each job's tally to its counters, then complete the jobs whose every slot has ended; returns the
    jobs that completed. Meant as the last statements of a transaction, so the job rows stay locked only
    briefly."""
    if not tallies:
        return []
    ids = sorted(tallies)
    rows = await conn.fetch(
        """UPDATE jobs j SET completed_count = j.completed_count + t.completed,
                             failed_count = j.failed_count + t.failed,
                             retry_pending = j.retry_pending + t.retries,
                             starved = j.starved AND t.retries <= 0,  -- a retry may go back to a phone
                             assigned_count = j.assigned_count + t.assigned, updated_at = now()
           FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[], $5::int[])
                AS t(id, completed, failed, retries, assigned)
           WHERE j.id = t.id
           RETURNING j.id, j.status, j.target_count, j.assigned_count, j.retry_pending""",
        ids, [tallies[i].completed for i in ids], [tallies[i].failed for i in ids],
        [tallies[i].retries for i in ids], [tallies[i].assigned for i in ids], record_class=JobOutcome,
    )
    done = [r.id for r in rows if r.status == "active" and r.target_count is not None
            and r.assigned_count >= r.target_count and r.retry_pending == 0]
    return await complete_finished(conn, done) if done else []


async def complete_finished(conn: Conn, job_ids: Sequence[int]) -> list[JobRecord]:
    """Complete active jobs whose every slot has ended; returns them."""
    return await conn.fetch(
        f"""UPDATE jobs j SET status = 'completed', finished_at = now(), updated_at = now()
            WHERE j.id = ANY($1::bigint[]) AND j.status = ANY($2::text[]) AND j.target_count IS NOT NULL
              AND j.assigned_count >= j.target_count AND j.retry_pending = 0
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.job_id = j.id
                              AND a.status IN ('pending', 'delivered', 'running', 'paused'))
            RETURNING {JOB_COLUMNS}""",
        list(job_ids), sources_of(JOB_TRANSITIONS, JobStatus.completed), record_class=JobRecord,
    )


async def counts_by_status(conn: Conn, teams: Sequence[int] | None = None) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*)::int AS n FROM jobs WHERE $1::bigint[] IS NULL OR "
                            "team_id = ANY($1) GROUP BY status", teams_arg(teams))
    counts = {str(s): 0 for s in JobStatus}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def add_event(conn: Conn, job_id: int | None, kind: str, actor: str, data: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO job_events (job_id, kind, actor, data) VALUES ($1, $2, $3, $4)", job_id, kind, actor, data
    )


async def events(conn: Conn, job_id: int) -> list[JobEventRecord]:
    return await conn.fetch(
        "SELECT id, kind, actor, data, created_at FROM job_events WHERE job_id = $1 ORDER BY id", job_id,
        record_class=JobEventRecord,
    )
