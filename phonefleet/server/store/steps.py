"""SQL of a run's evidence: its step timeline (``assignment_steps``) and its crashes (``assignments.crashes``).

Written with the run's result, in the completion's transaction, one statement per batch (and none when no
result in the batch carries steps or crashes): the completion is the throughput hot path.
"""

import json
from collections.abc import Sequence
from typing import Any

from phonefleet.server.store import Conn
from phonefleet.server.store.records import RunEvidence, StepRow

STEP_COLUMNS = "step_index, type, name, started_at, finished_at, outcome, exit_code, output_tail, error"


async def record(conn: Conn, items: Sequence[dict[str, Any]], *, replace: bool = False) -> None:
    """The steps and crashes of these results (finished reports whose assignment this transaction ended).

    ``replace``: a late result's evidence replaces what the server held (the steps of the run it had
    guessed lost, if any)."""
    with_steps = [i for i in items if i.get("steps")]
    with_crashes = [i for i in items if i.get("crashes")]
    if replace and items:
        await conn.execute("DELETE FROM assignment_steps WHERE assignment_id = ANY($1::bigint[])",
                           [int(i["assignment_id"]) for i in items])
    if with_steps:
        rows = [(int(i["assignment_id"]), s) for i in with_steps for s in i["steps"]]
        await conn.execute(
            f"""INSERT INTO assignment_steps (assignment_id, {STEP_COLUMNS})
                SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::timestamptz[],
                                     $6::timestamptz[], $7::text[], $8::int[], $9::text[], $10::text[])
                ON CONFLICT (assignment_id, step_index) DO UPDATE SET
                    type = excluded.type, name = excluded.name, started_at = excluded.started_at,
                    finished_at = excluded.finished_at, outcome = excluded.outcome, exit_code = excluded.exit_code,
                    output_tail = excluded.output_tail, error = excluded.error""",
            [a for a, _ in rows], [s["step_index"] for _, s in rows], [str(s["type"]) for _, s in rows],
            [s.get("name") for _, s in rows], [s.get("started_at") for _, s in rows],
            [s.get("finished_at") for _, s in rows], [str(s["outcome"]) for _, s in rows],
            [s.get("exit_code") for _, s in rows], [s.get("output_tail") for _, s in rows],
            [s.get("error") for _, s in rows],
        )
    if with_crashes or replace:
        chosen = items if replace else with_crashes
        await conn.execute(
            """UPDATE assignments a SET crashes = t.crashes::jsonb
               FROM unnest($1::bigint[], $2::text[]) AS t(id, crashes) WHERE a.id = t.id""",
            [int(i["assignment_id"]) for i in chosen], [json.dumps(list(i.get("crashes") or [])) for i in chosen],
        )


async def of_assignment(conn: Conn, assignment_id: int) -> list[StepRow]:
    return await conn.fetch(
        f"SELECT {STEP_COLUMNS} FROM assignment_steps WHERE assignment_id = $1 ORDER BY step_index", assignment_id,
        record_class=StepRow)


async def run_of(conn: Conn, assignment_id: int) -> RunEvidence | None:
    """What the timeline needs of the run: its status, crashes, failed step (``step_index``) and plan."""
    return await conn.fetchrow(
        """SELECT a.status, a.crashes, a.step_index, j.plan FROM assignments a JOIN jobs j ON j.id = a.job_id
           WHERE a.id = $1""",
        assignment_id, record_class=RunEvidence,
    )
