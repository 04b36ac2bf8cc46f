"""SQL of jobs waiting for phones that are not there ("starved").

A job is starved when it has an open slot, no retry pending, and no connected phone may run it
(filters, one run per phone, pauses). Fill passes skip starved jobs at the index, so a backlog of
them costs a pass nothing. What can end a starvation un-starves the jobs it concerns: a phone that
connects, comes back, or is let go (``for_devices``), a requeue, resume or lifted job pause
(``jobs``). The maintenance sweep checks the waiting jobs in bounded batches, and re-checks the
starved ones more slowly, so a change no event reported is healed within a bounded time.
"""

from collections.abc import Sequence

from phonefleet.server.store import Conn
from phonefleet.server.store.jobs import phone_for_job

_STARVED = f"""j.status = 'active' AND j.retry_pending = 0 AND j.target_count IS NOT NULL
    AND j.assigned_count < j.target_count AND NOT {phone_for_job("'idle', 'busy'")}"""


async def mark(conn: Conn, job_ids: Sequence[int]) -> list[int]:
    """Mark these jobs starved if they are (a fill found no phone for them); returns those marked."""
    rows = await conn.fetch(
        f"""UPDATE jobs j SET starved = true WHERE j.id = ANY($1::bigint[]) AND NOT j.starved AND {_STARVED}
            RETURNING j.id""",
        list(job_ids),
    )
    return [r["id"] for r in rows]


async def sweep(conn: Conn, *, starved: bool, after_id: int, limit: int) -> tuple[int, int]:
    """One bounded step over active jobs by id after ``after_id``: among the waiting ones (``starved``
    false) mark those no connected phone may run; among the starved, free those a phone may run now.
    Returns (how many changed, where the next step starts: 0 after the last job)."""
    row = await conn.fetchrow(
        f"""WITH step AS (
                SELECT j.id, ({_STARVED}) AS now_starved FROM jobs j
                WHERE j.status = 'active' AND j.starved = $3 AND j.id > $1 ORDER BY j.id LIMIT $2),
            changed AS (
                UPDATE jobs j SET starved = step.now_starved FROM step
                WHERE j.id = step.id AND j.starved <> step.now_starved RETURNING j.id)
            SELECT (SELECT count(*) FROM changed)::int AS changed, (SELECT max(id) FROM step) AS last,
                   (SELECT count(*) FROM step)::int AS n""",
        after_id, limit, starved,
    )
    assert row is not None
    return int(row["changed"]), 0 if row["n"] < limit else int(row["last"])


async def jobs(conn: Conn, job_ids: Sequence[int]) -> None:
    """These jobs may find a phone again (requeued, resumed, a job pause lifted): no longer starved."""
    await conn.execute("UPDATE jobs SET starved = false WHERE id = ANY($1::bigint[]) AND starved", list(job_ids))


async def for_devices(conn: Conn, device_ids: Sequence[int]) -> int:
    """Phones that connected, came back or were let go: the starved jobs any of them may run wait no more."""
    if not device_ids:
        return 0
    status = await conn.execute(
        f"""UPDATE jobs j SET starved = false
            WHERE j.status = 'active' AND j.starved
              AND {phone_for_job("'idle', 'busy'", among="d.id = ANY($1::bigint[])")}""",
        list(device_ids),
    )
    return int(str(status).rsplit(" ", 1)[-1])
