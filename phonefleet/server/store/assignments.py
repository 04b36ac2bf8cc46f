"""SQL of assignments: claiming phones for a job, and every status change after that.

Status guards come from ``protocol.states`` so no statement can make a transition the state
machine does not list.
"""

from collections.abc import Sequence
from typing import Any, cast

from phonefleet.protocol.enums import LIVE_ASSIGNMENT_STATUSES, OPEN_ASSIGNMENT_STATUSES
from phonefleet.protocol.enums import AssignmentStatus as A
from phonefleet.protocol.states import (
    ASSIGNMENT_ENDING_FROM,
    ASSIGNMENT_ENDINGS,
    ASSIGNMENT_HAND_BACK_FROM,
    ASSIGNMENT_RERUN_FROM,
    ASSIGNMENT_TRANSITIONS,
    DEVICE_CLAIM_FROM,
    LOST_ERROR_CODE,
    as_guard,
    sources_of,
)
from phonefleet.server.store import Conn, Row, teams_arg
from phonefleet.server.store.jobs import JOB_COLUMNS, filter_args, filter_sql
from phonefleet.server.store.records import (
    AgentOrderRecord,
    AssignmentRecord,
    AssignmentRef,
    ClaimedJob,
    ClaimedRow,
    Ended,
    JobPlacement,
    JobRecord,
    OrderRecord,
    Placement,
    Rerun,
)
from phonefleet.server.store.slots import SLOT_SETTLED

ASSIGNMENT_COLUMNS = """
    a.id, a.job_id, a.device_id, a.agent_id, a.status, a.attempt, a.progress, a.progress_message, a.step_index,
    a.result,
    a.error, a.error_code, a.lease_until, a.retry_at, a.created_at, a.started_at, a.finished_at, a.retried,
    a.superseded, a.slot_id, a.reruns, a.crashes,
    (SELECT count(*)::int FROM artifacts x WHERE x.assignment_id = a.id AND x.status = 'uploading')
        AS artifacts_pending
"""

ORDER_COLUMNS = """
    a.id AS assignment_id, a.job_id, a.device_id, d.serial, j.title, j.plan, j.priority, j.timeout_sec,
    a.attempt, a.status, j.allow_shell, j.on_interrupt
"""

def _from(target: A) -> list[str]:
    return sources_of(ASSIGNMENT_TRANSITIONS, target)


FRESH = "NOT EXISTS (SELECT 1 FROM assignments x WHERE x.job_id = $1 AND x.device_id = d.id AND NOT x.superseded)"
"""A phone that has not run the job: one run per phone per job (a requeue supersedes the old run)."""

NOT_RUNNING_IT = """NOT EXISTS (SELECT 1 FROM assignments x WHERE x.job_id = $1 AND x.device_id = d.id
                                   AND x.status IN ('pending', 'delivered', 'running', 'paused'))"""
"""A phone that may run the job again: only for retries, and only when no fresh phone is connected."""

IDLE = "d.state = 'idle'"
CONNECTED = "d.state IN ('idle', 'busy')"

_ELIGIBLE = """
    {state} AND ag.status = 'online' AND NOT ag.paused AND {filters} AND {runs}
    AND ag.team_id = (SELECT tj.team_id FROM jobs tj WHERE tj.id = $1)
    AND NOT EXISTS (SELECT 1 FROM agent_job_pauses p WHERE p.agent_id = d.agent_id AND p.job_id = $1)
"""

_ELIGIBLE_IDLE = f"""
    SELECT d.id, d.agent_id, d.serial FROM devices d JOIN agents ag ON ag.id = d.agent_id
    WHERE {_ELIGIBLE}
    ORDER BY d.idle_since NULLS FIRST, d.id
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
"""

# Agents with a ``max_running`` cap: each may take only as many more phones as its cap leaves. The
# window cannot run under FOR UPDATE, so the phones are picked first and locked after (a phone
# another fill took meanwhile is skipped; the next fill covers it). Callers hold the capped
# agents' advisory locks, so two fills never both spend an agent's last free place.
_ELIGIBLE_IDLE_CAPPED = f"""
    WITH open_per_agent AS (
        SELECT o.agent_id, count(*) AS n FROM assignments o JOIN agents c ON c.id = o.agent_id
        WHERE c.max_running IS NOT NULL AND o.status IN ('pending', 'delivered', 'running')
        GROUP BY o.agent_id
    ), ranked AS (
        SELECT d.id, d.idle_since,
               row_number() OVER (PARTITION BY d.agent_id ORDER BY d.idle_since NULLS FIRST, d.id) AS rn,
               ag.max_running - coalesce(op.n, 0) AS room
        FROM devices d JOIN agents ag ON ag.id = d.agent_id LEFT JOIN open_per_agent op ON op.agent_id = ag.id
        WHERE {_ELIGIBLE}
    ), picked AS (
        SELECT id FROM ranked WHERE room IS NULL OR rn <= room
        ORDER BY idle_since NULLS FIRST, id LIMIT $2
    )
    SELECT d.id, d.agent_id, d.serial FROM devices d
    WHERE d.id IN (SELECT id FROM picked) AND d.state = 'idle'
    ORDER BY d.idle_since NULLS FIRST, d.id
    FOR UPDATE OF d SKIP LOCKED
"""

AGENT_CAP_LOCK = 0x70666370  # "pfcp": the advisory lock space of agents' max_running


async def open_count(conn: Conn, job_id: int) -> int:
    """The job's assignments that occupy a phone now (for its ``max_parallel``)."""
    return int(await conn.fetchval(
        "SELECT count(*) FROM assignments WHERE job_id = $1 AND status IN ('pending', 'delivered', 'running')",
        job_id,
    ))


_FILTER_KEYS = ("models", "android_versions", "tags", "agents", "serials")
_FILTER_ARRAYS = ",\n".join(
    f"CASE WHEN jj.filters->'{key}' IS NULL THEN NULL"
    f" ELSE ARRAY(SELECT jsonb_array_elements_text(jj.filters->'{key}')) END AS f_{key}"
    for key in _FILTER_KEYS)
"""The job's filters as text arrays, read once per claim (in ``j``) rather than once per phone."""
_M, _V, _T, _A, _S = (f"(SELECT f_{key} FROM j)::text[]" for key in _FILTER_KEYS)

CLAIM_SIMPLE_SQL = f"""
    WITH j AS (
        SELECT {JOB_COLUMNS.replace("j.", "jj.")}, {_FILTER_ARRAYS}
        FROM jobs jj, scheduler_state s
        WHERE jj.id = $1 AND s.id = 1 AND s.running AND jj.status = 'active' AND jj.target_count IS NOT NULL
          AND jj.retry_pending = 0 AND jj.max_parallel IS NULL
          AND NOT EXISTS (SELECT 1 FROM agents c WHERE c.max_running IS NOT NULL AND c.status = 'online')
        FOR UPDATE OF jj FOR SHARE OF s),
    picked AS (
        SELECT d.id, d.agent_id, d.serial FROM devices d
        WHERE EXISTS (SELECT FROM j) AND d.state = 'idle'
          AND ({_M} IS NULL OR d.model = ANY({_M})) AND ({_V} IS NULL OR d.android_version = ANY({_V}))
          AND ({_T} IS NULL OR d.tags @> {_T}) AND ({_S} IS NULL OR d.serial = ANY({_S}))
          AND d.agent_id NOT IN (SELECT ag.id FROM agents ag WHERE (
              ag.status = 'online' AND NOT ag.paused AND ag.team_id = (SELECT team_id FROM j)
              AND ({_A} IS NULL OR ag.name = ANY({_A}))
              AND NOT EXISTS (SELECT 1 FROM agent_job_pauses p WHERE p.agent_id = ag.id AND p.job_id = $1)
          ) IS NOT TRUE)
          AND d.id NOT IN (SELECT x.device_id FROM assignments x WHERE x.job_id = $1 AND NOT x.superseded)
        ORDER BY d.idle_since NULLS FIRST, d.id
        LIMIT least($2, (SELECT greatest(0, target_count - assigned_count) FROM j))
        FOR UPDATE OF d SKIP LOCKED),
    busy AS (UPDATE devices SET state = 'busy' FROM picked
             WHERE devices.id = picked.id AND devices.state = ANY($3::text[])),
    bump AS (UPDATE jobs SET assigned_count = assigned_count + (SELECT count(*) FROM picked), updated_at = now()
             WHERE id = $1 AND EXISTS (SELECT 1 FROM picked)),
    ins AS (INSERT INTO assignments (job_id, device_id, agent_id, attempt)
            SELECT $1, picked.id, picked.agent_id, 1 FROM picked
            RETURNING id, device_id, agent_id)
    SELECT {JOB_COLUMNS}, c.ids AS claimed_ids, c.device_ids AS claimed_device_ids,
           c.agent_ids AS claimed_agent_ids, p.ids AS picked_ids, p.serials AS picked_serials
    FROM j,
         (SELECT coalesce(array_agg(ins.id), '{{}}') AS ids, coalesce(array_agg(ins.device_id), '{{}}') AS device_ids,
                 coalesce(array_agg(ins.agent_id), '{{}}') AS agent_ids FROM ins) c,
         (SELECT coalesce(array_agg(picked.id), '{{}}') AS ids, coalesce(array_agg(picked.serial), '{{}}') AS serials
          FROM picked) p
"""
"""The common claim in one statement, its per-job facts computed once, not once per phone: the filters,
the agents that may not take the job (offline, paused, filtered out, or the job paused there) and the
phones that ran it, each hashed once (NOT IN over ids, never NULL) and devices scanned alone. The new rows
come back as arrays, each phone's serial from the rows picked, so nothing is looked up again per row."""


async def claim_simple(conn: Conn, job_id: int, limit: int) -> tuple[ClaimedJob | None, list[ClaimedRow]]:
    """The common claim as one statement, its own transaction: an active job with no retry due and no
    ``max_parallel``, distribution running, no agent capping its phones. Returns (the job row, the new
    assignments, all first attempts), or (None, []) when that is not the case (``claim`` in a transaction
    of the caller's serves it then)."""
    row = await conn.fetchrow(CLAIM_SIMPLE_SQL, job_id, limit, as_guard(DEVICE_CLAIM_FROM), record_class=ClaimedJob)
    if row is None:
        return None, []
    serials = dict(zip(row.picked_ids, row.picked_serials, strict=True))
    rows: list[ClaimedRow] = [
        {"id": a, "device_id": d, "agent_id": g, "attempt": 1, "serial": serials[d]}
        for a, d, g in zip(row.claimed_ids, row.claimed_device_ids, row.claimed_agent_ids, strict=True)
    ]
    return row, rows


async def claim(conn: Conn, job: JobRecord, limit: int, *, agent_caps: bool = False) -> list[ClaimedRow]:
    """Claim up to ``limit`` idle eligible phones for ``job`` and create their assignments.

    Runs inside the caller's transaction, which holds the job row locked. Phones are locked with
    ``FOR UPDATE SKIP LOCKED`` so concurrent fills (any process) never take the same phone, and
    the unique (job_id, device_id) key keeps one run per phone per job (a requeue supersedes the
    old run). The job's ``max_parallel`` and, when ``agent_caps``, each agent's ``max_running`` cap
    the claim. Without due retries or caps this is a single statement (pick, mark busy, insert,
    count), the hot path of a fan-out.
    """
    if job.max_parallel is not None and limit > 0:
        limit = min(limit, job.max_parallel - await open_count(conn, job.id))
    if limit <= 0:
        return []
    if job.retry_pending == 0 and not agent_caps:
        rows = await conn.fetch(
            f"""WITH picked AS ({_ELIGIBLE_IDLE.format(state=IDLE, filters=filter_sql(4), runs=FRESH)}),
                busy AS (UPDATE devices SET state = 'busy' FROM picked
                         WHERE devices.id = picked.id AND devices.state = ANY($3::text[])),
                bump AS (UPDATE jobs SET assigned_count = assigned_count + (SELECT count(*) FROM picked),
                                         updated_at = now()
                         WHERE id = $1 AND EXISTS (SELECT 1 FROM picked)),
                ins AS (INSERT INTO assignments (job_id, device_id, agent_id, attempt)
                        SELECT $1, picked.id, picked.agent_id, 1 FROM picked
                        RETURNING id, device_id, agent_id, attempt)
            SELECT ins.id, ins.device_id, ins.agent_id, ins.attempt,
                   (SELECT d.serial FROM devices d WHERE d.id = ins.device_id) AS serial
            FROM ins""",  # serial by primary key: joining the two CTEs would be quadratic (no index)
            job.id, min(limit, max(0, (job.target_count or 0) - job.assigned_count)),
            as_guard(DEVICE_CLAIM_FROM), *filter_args(job.filters),
        )
        return [cast(ClaimedRow, dict(r.items())) for r in rows]
    if agent_caps:
        await conn.execute(
            """SELECT pg_advisory_xact_lock($1, (a.id % 2147483647)::int) FROM (
                   SELECT id FROM agents WHERE max_running IS NOT NULL AND status = 'online' ORDER BY id) a""",
            AGENT_CAP_LOCK,
        )
        query = _ELIGIBLE_IDLE_CAPPED
    else:
        query = _ELIGIBLE_IDLE
    devices = list(await conn.fetch(query.format(state=IDLE, filters=filter_sql(3), runs=FRESH), job.id, limit,
                                    *filter_args(job.filters)))
    reused: list[Row] = []
    if job.retry_pending and len(devices) < limit:
        reused = await _phones_to_retry_on_again(conn, job, query, min(limit, job.retry_pending) - len(devices))
    if not devices and not reused:
        return []
    retries = await conn.fetch(
        """SELECT id, attempt, coalesce(slot_id, id) AS slot FROM assignments WHERE job_id = $1 AND retry_at <= now()
           ORDER BY retry_at, id LIMIT $2 FOR UPDATE SKIP LOCKED""",
        job.id, len(devices) + len(reused),
    )
    # Retries take the phones that ran the job before first (they may serve nothing else), then fresh ones.
    reused = reused[: len(retries)]
    retry_phones = (reused + devices)[: len(retries)]
    fresh_phones = devices[max(0, len(retries) - len(reused)):]
    fresh_phones = fresh_phones[: max(0, (job.target_count or 0) - job.assigned_count)]
    chosen = retry_phones + fresh_phones
    if not chosen:
        return []
    device_ids = [d["id"] for d in chosen]
    agent_ids = [d["agent_id"] for d in chosen]
    attempts = [r["attempt"] + 1 for r in retries] + [1] * len(fresh_phones)
    slots = [r["slot"] for r in retries] + [None] * len(fresh_phones)
    await conn.execute(
        "UPDATE devices SET state = 'busy' WHERE id = ANY($1::bigint[]) AND state = ANY($2::text[])", device_ids,
        as_guard(DEVICE_CLAIM_FROM),
    )
    if reused:  # their earlier runs become history, so the phone's new run is its one run of the job
        await conn.execute(
            """UPDATE assignments SET superseded = true
               WHERE job_id = $1 AND device_id = ANY($2::bigint[]) AND NOT superseded""",
            job.id, [d["id"] for d in reused],
        )
    if retries:
        await conn.execute(
            "UPDATE assignments SET retry_at = NULL, retried = true WHERE id = ANY($1::bigint[])",
            [r["id"] for r in retries],
        )
    await conn.execute(
        """UPDATE jobs SET assigned_count = assigned_count + $2, retry_pending = retry_pending - $3,
               updated_at = now() WHERE id = $1""",
        job.id, len(fresh_phones), len(retries),
    )
    rows = await conn.fetch(
        """INSERT INTO assignments (job_id, device_id, agent_id, attempt, slot_id)
           SELECT $1, t.device_id, t.agent_id, t.attempt, t.slot_id
           FROM unnest($2::bigint[], $3::bigint[], $4::int[], $5::bigint[]) AS t(device_id, agent_id, attempt, slot_id)
           RETURNING id, device_id, agent_id, attempt""",
        job.id, device_ids, agent_ids, attempts, slots,
    )
    serials = {d["id"]: d["serial"] for d in chosen}
    return [ClaimedRow(id=r["id"], device_id=r["device_id"], agent_id=r["agent_id"], attempt=r["attempt"],
                       serial=serials[r["device_id"]]) for r in rows]


async def _phones_to_retry_on_again(conn: Conn, job: JobRecord, query: str, wanted: int) -> list[Row]:
    """Idle phones that ran the job before, for its due retries, but only when no connected eligible
    phone is left that never ran it (idle or busy: a busy one will come free): a retry goes to another
    phone where one is eligible, else back to one that ran it, rather than never."""
    if wanted <= 0:
        return []
    due = int(await conn.fetchval(
        "SELECT count(*) FROM assignments WHERE job_id = $1 AND retry_at <= now()", job.id))
    wanted = min(wanted, due)
    if wanted <= 0:
        return []
    fresh_left = await conn.fetchval(
        f"""SELECT EXISTS (SELECT 1 FROM devices d JOIN agents ag ON ag.id = d.agent_id
            WHERE {_ELIGIBLE.format(state=CONNECTED, filters=filter_sql(2), runs=FRESH)})""",
        job.id, *filter_args(job.filters),
    )
    if fresh_left:
        return []
    again = query.format(state=IDLE, filters=filter_sql(3), runs=NOT_RUNNING_IT)
    return list(await conn.fetch(again, job.id, wanted, *filter_args(job.filters)))


async def mark_delivered(conn: Conn, pairs: Sequence[tuple[int, int]]) -> int:
    """(agent_id, assignment_id) pairs an agent acknowledged: those still pending are delivered.

    Rows are locked in id order, and rows another statement holds (a completion batch ending them)
    are skipped: marking them delivered would be moot, and two batches never deadlock."""
    status = await conn.execute(
        """WITH t AS (SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS t(agent_id, id)),
                locked AS (SELECT a.id FROM assignments a JOIN t ON t.id = a.id AND t.agent_id = a.agent_id
                           WHERE a.status = ANY($3::text[]) ORDER BY a.id FOR UPDATE OF a SKIP LOCKED)
           UPDATE assignments a SET status = 'delivered' FROM locked
           WHERE a.id = locked.id AND a.status = ANY($3::text[])""",
        [p[0] for p in pairs], [p[1] for p in pairs],
        _from(A.delivered),
    )
    return int(str(status).rsplit(" ", 1)[-1])


async def mark_delivered_all(conn: Conn, agent_id: int) -> None:
    """The agent is about to receive its whole open list (hello ack or poll): pending ones are delivered."""
    await conn.execute(
        "UPDATE assignments SET status = 'delivered' WHERE agent_id = $1 AND status = ANY($2::text[])", agent_id,
        _from(A.delivered),
    )


async def mark_started(conn: Conn, agent_id: int, ids: Sequence[int], lease_sec: float) -> list[AssignmentRef]:
    return await conn.fetch(
        """UPDATE assignments SET status = 'running', started_at = coalesce(started_at, now()),
               lease_until = now() + make_interval(secs => $3)
           WHERE id = ANY($1::bigint[]) AND agent_id = $2 AND status = ANY($4::text[])
           RETURNING id, job_id""",
        list(ids), agent_id, lease_sec, _from(A.running), record_class=AssignmentRef,
    )


async def record_reruns(conn: Conn, agent_id: int, ids: Sequence[int], lease_sec: float) -> list[Rerun]:
    """Runs the agent starts again from their first step after a crash interrupted them (``on_interrupt:
    rerun``): each rerun is counted, so no run happens twice without a record of both."""
    return await conn.fetch(
        """UPDATE assignments SET status = 'running', reruns = reruns + 1, progress = 0, step_index = NULL,
               progress_message = NULL,
               started_at = coalesce(started_at, now()), lease_until = now() + make_interval(secs => $3)
           WHERE id = ANY($1::bigint[]) AND agent_id = $2 AND status = ANY($4::text[])
           RETURNING id, job_id, reruns""",
        list(ids), agent_id, lease_sec, as_guard(ASSIGNMENT_RERUN_FROM), record_class=Rerun,
    )


async def record_progress(conn: Conn, agent_id: int, items: Sequence[dict[str, Any]]) -> list[AssignmentRef]:
    return await conn.fetch(
        """WITH t AS (SELECT * FROM unnest($1::bigint[], $2::real[], $3::int[], $5::text[])
                           AS t(id, progress, step_index, message)),
                locked AS (SELECT a.id FROM assignments a JOIN t ON t.id = a.id  -- in id order: no deadlocks
                           WHERE a.agent_id = $4 AND a.status IN ('pending', 'delivered', 'running')
                           ORDER BY a.id FOR UPDATE OF a)
           UPDATE assignments a SET progress = t.progress, step_index = t.step_index,
                                    progress_message = coalesce(t.message, a.progress_message)
           FROM t, locked WHERE a.id = t.id AND a.id = locked.id
           RETURNING a.id, a.job_id""",
        [i["assignment_id"] for i in items], [i["progress"] for i in items], [i["step_index"] for i in items],
        agent_id, [i.get("message") for i in items], record_class=AssignmentRef,
    )


async def extend_leases(conn: Conn, agent_id: int, lease_sec: float) -> None:
    """Rows another statement holds (a progress batch) are skipped: the next heartbeat extends them,
    long before the lease runs out, and two statements locking one agent's rows never deadlock."""
    await extend_leases_many(conn, [agent_id], lease_sec)


async def extend_leases_many(conn: Conn, agent_ids: Sequence[int], lease_sec: float) -> None:
    """``extend_leases`` for many agents in one statement (a batch of heartbeats)."""
    await conn.execute(
        """WITH running AS (SELECT id FROM assignments WHERE agent_id = ANY($1::bigint[]) AND status = 'running'
                            ORDER BY id FOR UPDATE SKIP LOCKED)
           UPDATE assignments a SET lease_until = now() + make_interval(secs => $2)
           FROM running WHERE a.id = running.id""",
        list(agent_ids), lease_sec,
    )


async def finish(
    conn: Conn,
    items: Sequence[dict[str, Any]],
    *,
    retry_base_sec: float,
    retry_max_sec: float,
) -> list[Ended]:
    """End open assignments with the reported outcome, in one statement for a whole batch.

    Each item may carry the ``agent_id`` that reported it (an agent may end only its own work;
    None for the server itself). A retryable failure within the job's ``max_retries`` keeps its
    slot and gets a ``retry_at`` (exponential backoff with jitter); the fill later hands that slot
    to another phone. Reports for assignments that have already ended change nothing, so an
    agent's outbox may replay freely (``slots.overturn_lost`` takes the late results among them).
    Returns, per changed assignment: id, job_id, device_id, agent_id, status, retry_at, started_at,
    finished_at, and ``settled`` (its slot was already completed by an earlier attempt's late result:
    this end is history, neither counted nor retried). The job counters are the caller's next
    statement (``jobs.apply_outcomes``), so the job row is locked for as short a time as possible.
    """
    if not items:
        return []
    return await conn.fetch(
        f"""
        WITH input AS (
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::jsonb[],
                                 $7::timestamptz[], $8::timestamptz[], $9::bigint[])
                AS t(id, outcome, error, error_code, retryable, result, started_at, finished_at, agent_id)
        )
        UPDATE assignments a SET
            status = i.outcome,
            error = i.error, error_code = i.error_code, result = i.result,
            progress = CASE WHEN i.outcome = 'completed' THEN 1 ELSE a.progress END,
            started_at = coalesce(a.started_at, i.started_at),
            finished_at = coalesce(i.finished_at, now()),
            lease_until = NULL,
            retry_at = CASE WHEN i.outcome IN ('failed', 'timed_out') AND i.retryable
                                 AND a.attempt <= j.max_retries AND j.status IN ('active', 'paused')
                                 AND NOT {SLOT_SETTLED}
                            THEN now() + make_interval(secs => least($10 * 2 ^ (a.attempt - 1), $11)
                                                               * (0.5 + random() / 2))
                       END
        FROM input i, jobs j
        WHERE a.id = i.id AND j.id = a.job_id AND (i.agent_id IS NULL OR a.agent_id = i.agent_id)
          AND a.status = ANY($12::text[]) AND i.outcome = ANY($13::text[])
        RETURNING a.id, a.job_id, a.device_id, a.agent_id, a.status, a.retry_at, a.started_at, a.finished_at,
                  {SLOT_SETTLED} AS settled, a.error_code
        """,
        [i["assignment_id"] for i in items],
        [str(i["outcome"]) for i in items],
        [i.get("error") for i in items],
        [i.get("error_code") for i in items],
        [bool(i.get("retryable", True)) for i in items],
        [i.get("result") for i in items],
        [i.get("started_at") for i in items],
        [i.get("finished_at") for i in items],
        [i.get("agent_id") for i in items],
        retry_base_sec,
        retry_max_sec,
        as_guard(ASSIGNMENT_ENDING_FROM),
        as_guard(ASSIGNMENT_ENDINGS), record_class=Ended,
    )


async def pause_job(conn: Conn, job_id: int) -> list[Placement]:
    """Unstarted assignments of a paused job wait as ``paused``; their phones are free meanwhile."""
    return await conn.fetch(
        """UPDATE assignments SET status = 'paused' WHERE job_id = $1 AND status = ANY($2::text[])
           RETURNING id, device_id, agent_id""",
        job_id, _from(A.paused), record_class=Placement,
    )


async def resume_job(conn: Conn, job_id: int) -> list[Placement]:
    return await conn.fetch(
        """UPDATE assignments SET status = 'pending' WHERE job_id = $1 AND status = ANY($2::text[])
           RETURNING id, device_id, agent_id""",
        job_id, _from(A.pending), record_class=Placement,
    )


async def cancel(conn: Conn, *, job_id: int | None = None, ids: Sequence[int] | None = None,
                 error_code: str = "cancelled", error: str | None = None) -> list[JobPlacement]:
    """End live assignments as cancelled (by job or by id); returns id, device_id, agent_id, job_id."""
    return await conn.fetch(
        """UPDATE assignments SET status = 'cancelled', finished_at = now(), lease_until = NULL,
               error_code = $3, error = $4, retry_at = NULL
           WHERE ($1::bigint IS NULL OR job_id = $1) AND ($2::bigint[] IS NULL OR id = ANY($2))
             AND status = ANY($5::text[])
           RETURNING id, device_id, agent_id, job_id""",
        job_id, list(ids) if ids is not None else None, error_code, error, _from(A.cancelled),
        record_class=JobPlacement,
    )


async def cancel_retries(conn: Conn, job_id: int) -> None:
    """A cancelled job's pending retries will never run; their slots end as failed."""
    await conn.execute(
        """WITH r AS (UPDATE assignments SET retry_at = NULL WHERE job_id = $1 AND retry_at IS NOT NULL
                      RETURNING id)
           UPDATE jobs SET retry_pending = 0, failed_count = failed_count + (SELECT count(*) FROM r)
           WHERE id = $1""",
        job_id,
    )


async def hand_back(conn: Conn, *, device_ids: Sequence[int], job_id: int | None = None,
                    reason: str) -> list[JobPlacement]:
    """Give unstarted assignments on these phones back to their jobs: the slot opens for another phone."""
    return await conn.fetch(
        """WITH c AS (
               UPDATE assignments SET status = 'cancelled', finished_at = now(), error_code = 'handed_back',
                      error = $3
               WHERE device_id = ANY($1::bigint[]) AND ($2::bigint IS NULL OR job_id = $2)
                 AND status = ANY($4::text[])
               RETURNING id, device_id, agent_id, job_id
           ), j AS (
               UPDATE jobs SET assigned_count = assigned_count - n.k, updated_at = now()
               FROM (SELECT job_id, count(*) AS k FROM c GROUP BY job_id) n WHERE jobs.id = n.job_id
           )
           SELECT * FROM c""",
        list(device_ids), job_id, reason, as_guard(ASSIGNMENT_HAND_BACK_FROM), record_class=JobPlacement,
    )


async def open_orders(conn: Conn, agent_id: int) -> list[OrderRecord]:
    """Everything an agent should be holding: its pending, delivered and running assignments."""
    return await conn.fetch(
        f"""SELECT {ORDER_COLUMNS} FROM assignments a
            JOIN jobs j ON j.id = a.job_id JOIN devices d ON d.id = a.device_id
            WHERE a.agent_id = $1 AND a.status IN ('pending', 'delivered', 'running')
            ORDER BY j.priority DESC, a.id""",
        agent_id, record_class=OrderRecord,
    )


async def orders_by_ids(conn: Conn, ids: Sequence[int]) -> list[AgentOrderRecord]:
    return await conn.fetch(
        f"""SELECT {ORDER_COLUMNS}, a.agent_id FROM assignments a
            JOIN jobs j ON j.id = a.job_id JOIN devices d ON d.id = a.device_id
            WHERE a.id = ANY($1::bigint[]) ORDER BY a.id""",
        list(ids), record_class=AgentOrderRecord,
    )


async def pending_orders(conn: Conn, agent_ids: Sequence[int]) -> list[AgentOrderRecord]:
    """The unacknowledged orders of these agents, each agent's highest priority first."""
    return await conn.fetch(
        f"""SELECT {ORDER_COLUMNS}, a.agent_id FROM assignments a
            JOIN jobs j ON j.id = a.job_id JOIN devices d ON d.id = a.device_id
            WHERE a.agent_id = ANY($1::bigint[]) AND a.status = 'pending' ORDER BY j.priority DESC, a.id""",
        list(agent_ids), record_class=AgentOrderRecord,
    )


async def lost(conn: Conn, limit: int = 1000) -> list[dict[str, Any]]:
    """Open work of agents that are gone (offline: an agent past its grace or retired), and running work
    whose lease ran out: to be failed as lost, at most ``limit`` at a time."""
    rows = await conn.fetch(
        """SELECT a.id FROM assignments a JOIN agents ag ON ag.id = a.agent_id
           WHERE (ag.status = 'offline' AND a.status = ANY($1::text[]))
              OR (a.status = 'running' AND a.lease_until < now())
           ORDER BY a.id LIMIT $2""",
        [str(s) for s in OPEN_ASSIGNMENT_STATUSES], limit,
    )
    return [{"assignment_id": r["id"], "outcome": "failed", "error": "lost: agent gone or lease expired",
             "error_code": LOST_ERROR_CODE, "retryable": True} for r in rows]


async def overdue(conn: Conn, limit: int = 1000) -> list[dict[str, Any]]:
    """Running assignments past their job's timeout, at most ``limit``: the server ends them as timed out."""
    rows = await conn.fetch(
        """SELECT a.id FROM assignments a JOIN jobs j ON j.id = a.job_id
           WHERE a.status = 'running' AND a.started_at + make_interval(secs => j.timeout_sec) < now()
           ORDER BY a.id LIMIT $1""",
        limit,
    )
    return [{"assignment_id": r["id"], "outcome": "timed_out", "error": "timed out (detected by server)",
             "error_code": "timeout", "retryable": True} for r in rows]


async def list_for_job(conn: Conn, job_id: int, status: str | None = None) -> list[AssignmentRecord]:
    return await conn.fetch(
        f"""SELECT {ASSIGNMENT_COLUMNS}, d.serial FROM assignments a JOIN devices d ON d.id = a.device_id
            WHERE a.job_id = $1 AND ($2::text IS NULL OR a.status = $2) ORDER BY a.id""",
        job_id, status, record_class=AssignmentRecord,
    )


_DEAD = """a.status IN ('failed', 'timed_out') AND NOT a.retried AND NOT a.superseded AND a.retry_at IS NULL"""
"""Dead letters: attempts that ended a slot for good (not retried on another phone, not requeued)."""


def of_teams(param: int) -> str:
    """SQL: assignment ``a`` is of a job of the teams in parameter ``param`` (a ``teams_arg``; None: any)."""
    return f"(${param}::bigint[] IS NULL OR (SELECT tj.team_id FROM jobs tj WHERE tj.id = a.job_id) = ANY(${param}))"


async def list_page(conn: Conn, *, status: str | None, dead: bool = False, device_id: int | None = None,
                    limit: int, offset: int, teams: Sequence[int] | None = None,
                    ) -> tuple[list[AssignmentRecord], int]:
    """Newest first; ``teams``: only assignments of these teams' jobs (None: every team)."""
    where = (f"($1::text IS NULL OR a.status = $1) AND (NOT $2 OR ({_DEAD}))"
             " AND ($3::bigint IS NULL OR a.device_id = $3)"
             f" AND {of_teams(4)}")
    args = (status, dead, device_id, teams_arg(teams))
    rows = await conn.fetch(
        f"""SELECT {ASSIGNMENT_COLUMNS}, d.serial FROM assignments a JOIN devices d ON d.id = a.device_id
            WHERE {where} ORDER BY a.id DESC LIMIT $5 OFFSET $6""",
        *args, limit, offset, record_class=AssignmentRecord,
    )
    total = await conn.fetchval(f"SELECT count(*) FROM assignments a WHERE {where}", *args)
    return rows, int(total)


async def owned_by(conn: Conn, agent_id: int, ids: Sequence[int]) -> set[int]:
    rows = await conn.fetch(
        "SELECT id FROM assignments WHERE id = ANY($1::bigint[]) AND agent_id = $2", list(ids), agent_id
    )
    return {r["id"] for r in rows}


async def open_counts(conn: Conn, teams: Sequence[int] | None = None) -> dict[str, int]:
    """Assignments that can still end, by status (the scheduler's status), of ``teams``' jobs (None: all)."""
    live = [str(s) for s in LIVE_ASSIGNMENT_STATUSES]
    rows = await conn.fetch(
        f"SELECT a.status, count(*)::int AS n FROM assignments a WHERE a.status = ANY($1::text[]) AND {of_teams(2)}"
        " GROUP BY a.status", live, teams_arg(teams))
    counts = {s: 0 for s in live}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def counts_by_status(conn: Conn, teams: Sequence[int] | None = None) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT a.status, count(*)::int AS n FROM assignments a WHERE {of_teams(1)}"
                            " GROUP BY a.status", teams_arg(teams))
    counts = {str(s): 0 for s in A}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def jobs_with_due_retries(conn: Conn, limit: int) -> list[int]:
    """Active jobs with a retry whose backoff has ended, oldest due first, at most ``limit``."""
    rows = await conn.fetch(
        """SELECT a.job_id FROM assignments a JOIN jobs j ON j.id = a.job_id
           WHERE a.retry_at <= now() AND j.status = 'active'
           GROUP BY a.job_id ORDER BY min(a.retry_at) LIMIT $1""",
        limit,
    )
    return [r["job_id"] for r in rows]
