"""SQL of the audit trail (``audit_events``; the table refuses updates, deletes and truncation)."""

import json
from datetime import datetime
from typing import Any, NamedTuple

from phonefleet.server.store import Conn
from phonefleet.server.store.records import AuditRecord

AUDIT_COLUMNS = ("a.id, a.at, a.actor_kind, a.actor_id, a.actor_name, a.team_id, a.action, a.object_kind, "
                 "a.object_id, a.before, a.after, a.via, a.address")


class NewAuditEvent(NamedTuple):
    actor_kind: str
    actor_id: str | None
    actor_name: str
    action: str
    object_kind: str
    object_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    via: str
    address: str | None
    team_id: int | None = None


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


_OBJECT_ID = "CASE WHEN $6 ~ '^[0-9]{1,18}$' THEN $6::bigint END"
OBJECT_TEAM = f"""CASE $5
    WHEN 'job' THEN (SELECT t.team_id FROM jobs t WHERE t.id = {_OBJECT_ID})
    WHEN 'schedule' THEN (SELECT t.team_id FROM schedules t WHERE t.id = {_OBJECT_ID})
    WHEN 'agent' THEN (SELECT t.team_id FROM agents t WHERE t.id = {_OBJECT_ID})
    WHEN 'device' THEN (SELECT g.team_id FROM devices t JOIN agents g ON g.id = t.agent_id WHERE t.id = {_OBJECT_ID})
    WHEN 'team' THEN {_OBJECT_ID}
END"""
"""SQL: the team of the event's object ($5 kind, $6 id), as it stands when the event is written."""


async def add(conn: Conn, e: NewAuditEvent) -> int:
    """Append one event; returns its id. Its team is the one given, else its object's team (a job's, a
    schedule's, an agent's, a phone's agent's), so the trail filters by team. before and after travel as JSON
    text, so any connection writes them alike (the pool's have a jsonb codec; one made by hand, as the CLI and
    tests may, has not)."""
    return int(await conn.fetchval(
        f"""INSERT INTO audit_events (actor_kind, actor_id, actor_name, action, object_kind, object_id, before,
                                      after, via, address, team_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9, $10, coalesce($11, {OBJECT_TEAM}))
            RETURNING id""",
        e.actor_kind, e.actor_id, e.actor_name, e.action, e.object_kind, e.object_id, _json(e.before),
        _json(e.after), e.via, e.address, e.team_id,
    ))


class AuditFilter(NamedTuple):
    """Every given field must match. ``teams``: the caller's teams (None: an admin, every event); a person sees
    only their teams' events, never those of no team (people, tokens, the switch: an admin's business)."""

    actor: str | None = None
    actor_kind: str | None = None
    team_id: int | None = None
    object_kind: str | None = None
    object_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    teams: list[int] | None = None


async def page(conn: Conn, f: AuditFilter, *, before: int | None, limit: int) -> list[AuditRecord]:
    """Events matching every given filter, newest first, ``limit`` at a time before the event id ``before``."""
    return await conn.fetch(
        f"""SELECT {AUDIT_COLUMNS} FROM audit_events a
            WHERE ($1::bigint IS NULL OR a.id < $1)
              AND ($3::text IS NULL OR a.actor_name = $3)
              AND ($4::text IS NULL OR a.actor_kind = $4)
              AND ($5::bigint IS NULL OR a.team_id = $5)
              AND ($6::text IS NULL OR a.object_kind = $6)
              AND ($7::text IS NULL OR a.object_id = $7)
              AND ($8::text IS NULL OR a.action = $8)
              AND ($9::timestamptz IS NULL OR a.at >= $9)
              AND ($10::timestamptz IS NULL OR a.at < $10)
              AND ($11::bigint[] IS NULL OR a.team_id = ANY($11))
            ORDER BY a.id DESC LIMIT $2""",
        before, limit, f.actor, f.actor_kind, f.team_id, f.object_kind, f.object_id, f.action, f.since, f.until,
        f.teams, record_class=AuditRecord,
    )
