"""SQL of recurring schedules: definitions, the due ones (locked, skipping those another node holds),
and the advance after a firing."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from phonefleet.server.store import Conn, teams_arg
from phonefleet.server.store.records import NextDue, ScheduleRecord

SCHEDULE_COLUMNS = """
    s.id, s.name, s.template, s.cron, s.timezone, s.interval_sec, s.misfire_policy, s.enabled,
    s.next_run_at, s.last_run_at, s.last_job_id, s.created_at, s.updated_at, s.team_id
"""

EDITABLE = ("name", "template", "cron", "timezone", "interval_sec", "misfire_policy", "enabled", "next_run_at")


async def insert(conn: Conn, schedule: dict[str, Any]) -> ScheduleRecord:
    """Raises ``asyncpg.UniqueViolationError`` when the name is taken."""
    row = await conn.fetchrow(
        f"""INSERT INTO schedules AS s (name, template, cron, timezone, interval_sec, misfire_policy, enabled,
                next_run_at, team_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {SCHEDULE_COLUMNS}""",
        schedule["name"], schedule["template"], schedule["cron"], schedule["timezone"], schedule["interval_sec"],
        schedule["misfire_policy"], schedule["enabled"], schedule["next_run_at"], schedule["team_id"],
        record_class=ScheduleRecord,
    )
    assert row is not None
    return row


async def get(conn: Conn, schedule_id: int, *, for_update: bool = False) -> ScheduleRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {SCHEDULE_COLUMNS} FROM schedules s WHERE s.id = $1{lock}", schedule_id,
                               record_class=ScheduleRecord)


async def exists(conn: Conn, schedule_id: int) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM schedules WHERE id = $1)", schedule_id))


async def list_page(conn: Conn, *, enabled: bool | None, limit: int, offset: int,
                    teams: Sequence[int] | None = None) -> tuple[list[ScheduleRecord], int]:
    """By id; ``teams``: only these teams' schedules (None: every team)."""
    where = "($1::boolean IS NULL OR s.enabled = $1) AND ($2::bigint[] IS NULL OR s.team_id = ANY($2))"
    rows = await conn.fetch(
        f"SELECT {SCHEDULE_COLUMNS} FROM schedules s WHERE {where} ORDER BY s.id LIMIT $3 OFFSET $4",
        enabled, teams_arg(teams), limit, offset, record_class=ScheduleRecord,
    )
    total = await conn.fetchval(f"SELECT count(*) FROM schedules s WHERE {where}", enabled, teams_arg(teams))
    return rows, int(total)


async def update(conn: Conn, schedule_id: int, fields: dict[str, Any]) -> ScheduleRecord | None:
    """Set the given ``EDITABLE`` columns; raises ``asyncpg.UniqueViolationError`` when a new name is taken."""
    names = [k for k in EDITABLE if k in fields]
    sets = [f"{k} = ${i}" for i, k in enumerate(names, start=2)]
    return await conn.fetchrow(
        f"""UPDATE schedules s SET {', '.join([*sets, 'updated_at = now()'])}
            WHERE s.id = $1 RETURNING {SCHEDULE_COLUMNS}""",
        schedule_id, *(fields[k] for k in names), record_class=ScheduleRecord,
    )


async def delete(conn: Conn, schedule_id: int) -> bool:
    """The jobs it created stay; the foreign key sets their ``schedule_id`` to null."""
    return str(await conn.execute("DELETE FROM schedules WHERE id = $1", schedule_id)).endswith(" 1")


async def claim_due(conn: Conn, now: datetime, *, limit: int = 1) -> list[ScheduleRecord]:
    """Enabled schedules due at ``now``, oldest first, locked for this transaction; rows another
    transaction is firing are skipped, so each firing is handled by one node."""
    return await conn.fetch(
        f"""SELECT {SCHEDULE_COLUMNS} FROM schedules s
            WHERE s.enabled AND s.next_run_at <= $1
            ORDER BY s.next_run_at, s.id
            LIMIT $2
            FOR UPDATE SKIP LOCKED""",
        now, limit, record_class=ScheduleRecord,
    )


async def advance(conn: Conn, schedule_id: int, next_run_at: datetime, *, ran_at: datetime | None = None,
                  job_id: int | None = None) -> None:
    """Move a fired (or skipped) schedule to its next firing; ``ran_at``/``job_id`` when a job was created."""
    await conn.execute(
        """UPDATE schedules SET next_run_at = $2, last_run_at = coalesce($3, last_run_at),
               last_job_id = coalesce($4, last_job_id), updated_at = now()
           WHERE id = $1""",
        schedule_id, next_run_at, ran_at, job_id,
    )


async def record_run(conn: Conn, schedule_id: int, ran_at: datetime, job_id: int) -> None:
    """A run-now: the schedule's last run changes, its next firing does not."""
    await conn.execute(
        "UPDATE schedules SET last_run_at = $2, last_job_id = $3, updated_at = now() WHERE id = $1",
        schedule_id, ran_at, job_id,
    )


async def next_due(conn: Conn, teams: Sequence[int] | None = None) -> NextDue | None:
    """The soonest enabled schedule (id, name, next_run_at) of ``teams`` (None: any), for status displays."""
    return await conn.fetchrow(
        """SELECT id, name, next_run_at FROM schedules
           WHERE enabled AND next_run_at IS NOT NULL AND ($1::bigint[] IS NULL OR team_id = ANY($1))
           ORDER BY next_run_at, id LIMIT 1""",
        teams_arg(teams), record_class=NextDue,
    )

