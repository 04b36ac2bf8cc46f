"""A run's files: what the agent said it made, whether their verified bytes arrived, and what retention took."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from phonefleet.protocol.artifacts import ArtifactStatus as R
from phonefleet.protocol.states import ARTIFACT_NEVER_CAME_FROM, ARTIFACT_TRANSITIONS, as_guard, sources_of
from phonefleet.server.store import Conn
from phonefleet.server.store.records import ArtifactRecord

ARTIFACT_COLUMNS = """
    x.id, x.assignment_id, x.device_id, x.name, x.kind, x.bytes, x.sha256, x.step_index, x.taken_at, x.status,
    x.created_at, x.stored_at, x.deleted_at, x.deleted_reason
"""


async def record_expected(conn: Conn, items: Sequence[dict[str, Any]]) -> int:
    """The artifacts that results describe, as ``uploading`` rows, in one statement for a whole batch of results.

    Each item is a ``FinishedItem`` as a dict with the ``agent_id`` that reported it: an agent describes files
    of its own runs only. A row that exists already (its upload came first, or the result is a replay) is left
    as it is. Returns how many rows were added.
    """
    aids: list[int] = []
    agents: list[int | None] = []
    names: list[str] = []
    kinds: list[str] = []
    sizes: list[int] = []
    digests: list[str] = []
    steps: list[int | None] = []
    taken: list[datetime | None] = []
    for item in items:
        for artifact in item.get("artifacts") or ():
            aids.append(int(item["assignment_id"]))
            agents.append(item.get("agent_id"))
            names.append(artifact["name"])
            kinds.append(str(artifact["kind"]))
            sizes.append(int(artifact["bytes"]))
            digests.append(artifact["sha256"])
            steps.append(artifact.get("step_index"))
            taken.append(artifact.get("taken_at"))
    if not aids:
        return 0
    status = await conn.execute(
        """
        INSERT INTO artifacts (assignment_id, device_id, name, kind, bytes, sha256, step_index, taken_at)
        SELECT a.id, a.device_id, i.name, i.kind, i.bytes, i.sha256, i.step_index, i.taken_at
        FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::int[],
                    $8::timestamptz[]) WITH ORDINALITY
             AS i(assignment_id, agent_id, name, kind, bytes, sha256, step_index, taken_at, ord)
        JOIN assignments a ON a.id = i.assignment_id AND (i.agent_id IS NULL OR a.agent_id = i.agent_id)
        ORDER BY i.ord  -- ids in the order the runs made their files: a phone's gallery pages by id
        ON CONFLICT (assignment_id, name) DO NOTHING
        """,
        aids, agents, names, kinds, sizes, digests, steps, taken,
    )
    return int(status.rsplit(" ", 1)[-1])


async def get(conn: Conn, assignment_id: int, name: str) -> ArtifactRecord | None:
    return await conn.fetchrow(
        f"SELECT {ARTIFACT_COLUMNS} FROM artifacts x WHERE x.assignment_id = $1 AND x.name = $2",
        assignment_id, name, record_class=ArtifactRecord,
    )


async def mark_stored(conn: Conn, assignment_id: int, name: str, *, kind: str, size: int, sha256: str,
                      step_index: int | None, taken_at: datetime | None) -> ArtifactRecord | None:
    """Its verified bytes are in place: the row (made now if the result has not landed yet) says ``stored``.
    A deleted row stays deleted. Returns the row as it now stands.

    The run's row is locked (``FOR KEY SHARE``, as the foreign key's check would) before the artifact's key is
    taken, the order in which a result's transaction takes them: the key first and the check after deadlocked
    with a batch that held the run's row (a progress report's ``FOR UPDATE``) and then recorded the same file as
    expected."""
    await conn.execute(
        """
        INSERT INTO artifacts (assignment_id, device_id, name, kind, bytes, sha256, step_index, taken_at, status,
                               stored_at)
        SELECT a.id, a.device_id, $2, $3, $4, $5, $6, $7, 'stored', now() FROM assignments a WHERE a.id = $1
        FOR KEY SHARE OF a  -- the run's row before the artifact's key: see below
        ON CONFLICT (assignment_id, name) DO UPDATE SET status = 'stored', stored_at = now()
        WHERE artifacts.status = ANY($8::text[])
        """,
        assignment_id, name, kind, size, sha256, step_index, taken_at, sources_of(ARTIFACT_TRANSITIONS, R.stored),
    )
    return await get(conn, assignment_id, name)


async def mark_lost(conn: Conn, assignment_id: int, name: str, reason: str, described: dict[str, Any] | None
                    ) -> ArtifactRecord | None:
    """The agent's copy is gone or changed before it was sent: the artifact will never arrive. ``described`` (an
    ``ArtifactInfo`` as a dict) records it when its run's result has not landed yet."""
    if described is None:
        await conn.execute(
            """UPDATE artifacts SET status = 'deleted', deleted_at = now(), deleted_reason = $3
               WHERE assignment_id = $1 AND name = $2 AND status = ANY($4::text[])""",
            assignment_id, name, reason, as_guard(ARTIFACT_NEVER_CAME_FROM),
        )
    else:
        await conn.execute(
            """
            INSERT INTO artifacts (assignment_id, device_id, name, kind, bytes, sha256, step_index, taken_at, status,
                                   deleted_at, deleted_reason)
            SELECT a.id, a.device_id, $2, $3, $4, $5, $6, $7, 'deleted', now(), $8 FROM assignments a WHERE a.id = $1
            FOR KEY SHARE OF a  -- the run's row before the artifact's key, as mark_stored
            ON CONFLICT (assignment_id, name) DO UPDATE SET status = 'deleted', deleted_at = now(),
                                                            deleted_reason = excluded.deleted_reason
            WHERE artifacts.status = ANY($9::text[])
            """,
            assignment_id, name, str(described["kind"]), described["bytes"], described["sha256"],
            described.get("step_index"), described.get("taken_at"), reason, as_guard(ARTIFACT_NEVER_CAME_FROM),
        )
    return await get(conn, assignment_id, name)


async def list_for_assignment(conn: Conn, assignment_id: int) -> list[ArtifactRecord]:
    return await conn.fetch(
        f"SELECT {ARTIFACT_COLUMNS} FROM artifacts x WHERE x.assignment_id = $1 ORDER BY x.step_index NULLS LAST,"
        " x.taken_at NULLS LAST, x.id", assignment_id, record_class=ArtifactRecord,
    )


async def list_for_device(conn: Conn, device_id: int, *, kind: str | None, before: int | None, limit: int
                          ) -> list[ArtifactRecord]:
    """A phone's artifacts, newest first, a page at a time (``before``: an id of the previous page)."""
    return await conn.fetch(
        f"""SELECT {ARTIFACT_COLUMNS} FROM artifacts x
            WHERE x.device_id = $1 AND ($2::text IS NULL OR x.kind = $2) AND ($3::bigint IS NULL OR x.id < $3)
            ORDER BY x.id DESC LIMIT $4""",
        device_id, kind, before, limit, record_class=ArtifactRecord,
    )


async def expire_older_than(conn: Conn, max_age_sec: float, batch: int) -> list[ArtifactRecord]:
    """Mark up to ``batch`` artifacts older than ``max_age_sec`` deleted (reason ``age``), oldest first."""
    return await conn.fetch(
        f"""
        WITH victims AS (
            SELECT id FROM artifacts WHERE status = ANY($4::text[]) AND created_at < now() - make_interval(secs => $1)
            ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
        )
        UPDATE artifacts x SET status = 'deleted', deleted_at = now(),
                               deleted_reason = 'age: older than ' || $3::text
        FROM victims v WHERE x.id = v.id AND x.status = ANY($4::text[])
        RETURNING {ARTIFACT_COLUMNS}
        """,
        max_age_sec, batch, _days(max_age_sec), sources_of(ARTIFACT_TRANSITIONS, R.deleted),
        record_class=ArtifactRecord,
    )


async def expire_beyond_size(conn: Conn, max_bytes: int, batch: int) -> list[ArtifactRecord]:
    """Mark deleted (reason ``size``) the oldest artifacts beyond the newest ``max_bytes`` kept, up to ``batch``."""
    return await conn.fetch(
        f"""
        WITH kept AS (
            SELECT id, sum(bytes) OVER (ORDER BY created_at DESC, id DESC) AS newer_and_this
            FROM artifacts WHERE status = ANY($3::text[])
        ), victims AS (
            SELECT k.id FROM kept k JOIN artifacts a ON a.id = k.id WHERE k.newer_and_this > $1
            ORDER BY a.created_at, a.id LIMIT $2
        )
        UPDATE artifacts x SET status = 'deleted', deleted_at = now(),
                               deleted_reason = 'size: artifacts above ' || $1::text || ' bytes in all'
        FROM victims v WHERE x.id = v.id AND x.status = ANY($3::text[])
        RETURNING {ARTIFACT_COLUMNS}
        """,
        max_bytes, batch, sources_of(ARTIFACT_TRANSITIONS, R.deleted), record_class=ArtifactRecord,
    )


def _days(seconds: float) -> str:
    days = seconds / 86_400
    return f"{days:g} days" if days >= 1 else f"{seconds:g} s"
