"""SQL of each phone's append-only timeline (``device_events``; the table refuses updates and deletes)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from phonefleet.server.store import Conn
from phonefleet.server.store.records import DeviceEventRecord

EVENT_COLUMNS = "e.id, e.device_id, e.kind, e.actor, e.reason, e.data, e.created_at"


class NewEvent(NamedTuple):
    device_id: int
    kind: str
    actor: str
    reason: str | None = None
    data: dict[str, Any] = {}


async def add_many(conn: Conn, events: Sequence[NewEvent]) -> list[DeviceEventRecord]:
    """Append events (in one statement); returns them as stored."""
    if not events:
        return []
    return await conn.fetch(
        f"""INSERT INTO device_events AS e (device_id, kind, actor, reason, data)
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
            RETURNING {EVENT_COLUMNS}""",
        [e.device_id for e in events], [str(e.kind) for e in events], [e.actor for e in events],
        [e.reason for e in events], [e.data for e in events], record_class=DeviceEventRecord,
    )


async def page(conn: Conn, device_id: int, *, before: int | None, limit: int,
               kinds: Sequence[str] | None = None) -> list[DeviceEventRecord]:
    """A phone's events, newest first, ``limit`` at a time before the event id ``before``."""
    return await conn.fetch(
        f"""SELECT {EVENT_COLUMNS} FROM device_events e
            WHERE e.device_id = $1 AND ($2::bigint IS NULL OR e.id < $2) AND ($4::text[] IS NULL OR e.kind = ANY($4))
            ORDER BY e.id DESC LIMIT $3""",
        device_id, before, limit, list(kinds) if kinds else None, record_class=DeviceEventRecord,
    )


async def newest_id(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM device_events"))


async def after(conn: Conn, after_id: int, limit: int) -> list[DeviceEventRecord]:
    return await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM device_events e WHERE e.id > $1 ORDER BY e.id LIMIT $2", after_id, limit,
        record_class=DeviceEventRecord,
    )


async def disconnects_since(conn: Conn, device_ids: Sequence[int], since: datetime) -> dict[int, int]:
    """Disconnects each phone reported since ``since``: its agent saw it go, not during a recovery rung (a
    reconnect or a reboot takes it off on purpose), nor its agent going away."""
    rows = await conn.fetch(
        """SELECT device_id, count(*)::int AS n FROM device_events
           WHERE device_id = ANY($1::bigint[]) AND kind = 'disconnected' AND actor = 'agent' AND created_at >= $2
             AND data ->> 'recovering' IS NULL
           GROUP BY device_id""",
        list(device_ids), since,
    )
    return {r["device_id"]: r["n"] for r in rows}
