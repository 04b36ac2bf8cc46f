"""SQL of devices: reports from agents, pauses, listings."""

from collections.abc import Sequence
from typing import Any

from phonefleet.protocol.states import DEVICE_TRANSITIONS, every_state
from phonefleet.server.store import Conn, waiting
from phonefleet.server.store.records import DeviceChange, DeviceRecord

CONNECTED_STATES = ("idle", "busy")
"""States of a phone that may take work now or once it is free."""

DEVICE_COLUMNS = """
    d.id, d.serial, d.agent_id, ag.name AS agent_name, d.model, d.android_version, d.tags, d.battery,
    d.state, d.paused_by, d.last_seen_at
"""

# The state a phone should be in, from the facts about it; used by every write below.
_STATE_EXPR = """
    CASE WHEN NOT {connected} THEN 'offline'
         WHEN NOT {healthy} THEN 'unhealthy'
         WHEN {paused_by} IS NOT NULL THEN 'paused'
         WHEN EXISTS (SELECT 1 FROM assignments x WHERE x.device_id = {id}
                      AND x.status IN ('pending', 'delivered', 'running')) THEN 'busy'
         ELSE 'idle' END
"""


def state_expr(prefix: str = "devices.") -> str:
    return _STATE_EXPR.format(
        connected=f"{prefix}connected", healthy=f"{prefix}healthy", paused_by=f"{prefix}paused_by", id=f"{prefix}id"
    )


SERIAL_LOCK = 0x70667372  # "pfsr": the advisory lock space of phone claims, keyed by serial

HOST_LOCAL_SERIAL = r"^(emulator-[0-9]+|127\.[0-9.]+:[0-9]+|localhost:[0-9]+|\[::1\]:[0-9]+)$"
"""Serials that name a phone only on one host (an emulator, a loopback adb connection): two PCs may both
have an ``emulator-5554`` that are different phones, so these conflict only between agents on one host."""


async def held_elsewhere(conn: Conn, agent_id: int, serials: Sequence[str]) -> dict[str, str]:
    """Which of these serials another connected agent already drives: serial -> that agent's name.

    Locks the serials (advisory, for the transaction, in a fixed order) so two agents claiming one phone
    at the same moment are decided one after the other. Call inside the transaction that records the
    claim."""
    if not serials:
        return {}
    await conn.execute(
        """SELECT pg_advisory_xact_lock($1, k) FROM (
               SELECT DISTINCT hashtext(s) AS k FROM unnest($2::text[]) AS s ORDER BY k) t""",
        SERIAL_LOCK, list(serials),
    )
    rows = await conn.fetch(
        """SELECT DISTINCT ON (d.serial) d.serial, ag.name FROM devices d JOIN agents ag ON ag.id = d.agent_id
           WHERE d.serial = ANY($2::text[]) AND d.connected AND d.agent_id <> $1 AND ag.status <> 'offline'
             AND (d.serial !~ $3 OR ag.hostname IS NOT DISTINCT FROM (SELECT hostname FROM agents WHERE id = $1))
           ORDER BY d.serial, d.id""",
        agent_id, list(serials), HOST_LOCAL_SERIAL,
    )
    return {r["serial"]: r["name"] for r in rows}


async def apply_reports(
    conn: Conn, agent_id: int, reports: Sequence[dict[str, Any]], *, full: bool, paused_serials: set[str] | None
) -> tuple[list[int], list[DeviceChange], dict[str, str]]:
    """Upsert the phones an agent reports; returns the ids touched, the rows whose state changed, and the
    phones refused because another connected agent drives them (serial -> its name; recorded offline here).

    ``paused_serials`` (from ``agent:hello``) makes the agent authoritative about its own pauses.
    """
    refused = await held_elsewhere(conn, agent_id, [r["serial"] for r in reports if r.get("online", True)])
    if refused:
        reports = [{**r, "online": False, "healthy": False, "health_reason": f"driven by agent {refused[r['serial']]}"}
                   if r["serial"] in refused else r for r in reports]
    serials = [r["serial"] for r in reports]
    rows = await conn.fetch(
        """
        WITH input AS (
            SELECT * FROM unnest($2::text[], $3::bool[], $4::bool[], $5::text[], $6::text[], $7::text[],
                                 $8::int[], $9::bool[], $10::text[], $11::bool[])
                AS t(serial, online, healthy, health_reason, model, android_version, battery_s,
                     screen_on, tags_s, agent_paused)
        )
        INSERT INTO devices AS devices (agent_id, serial, connected, healthy, health_reason, model,
                             android_version, battery, screen_on, tags, paused_by, last_seen_at, state)
        SELECT $1, i.serial, i.online, i.healthy, i.health_reason, i.model, i.android_version, i.battery_s,
               i.screen_on, CASE WHEN i.tags_s IS NULL THEN '{}'::text[] ELSE string_to_array(i.tags_s, E'\\x1f') END,
               CASE WHEN i.agent_paused THEN 'agent' END, now(),
               CASE WHEN NOT i.online THEN 'offline' WHEN NOT i.healthy THEN 'unhealthy'
                    WHEN i.agent_paused THEN 'paused' ELSE 'idle' END
        FROM input i
        ON CONFLICT (agent_id, serial) DO UPDATE SET
            connected = EXCLUDED.connected, healthy = EXCLUDED.healthy,
            health_reason = EXCLUDED.health_reason,
            model = coalesce(EXCLUDED.model, devices.model),
            android_version = coalesce(EXCLUDED.android_version, devices.android_version),
            battery = coalesce(EXCLUDED.battery, devices.battery),
            screen_on = coalesce(EXCLUDED.screen_on, devices.screen_on),
            tags = EXCLUDED.tags,
            paused_by = CASE WHEN $12::bool AND EXCLUDED.paused_by = 'agent' AND devices.paused_by IS NULL THEN 'agent'
                             WHEN $12::bool AND EXCLUDED.paused_by IS NULL AND devices.paused_by = 'agent' THEN NULL
                             ELSE devices.paused_by END,
            last_seen_at = now()
        RETURNING devices.id, devices.connected, (devices.xmax = 0) AS inserted
        """,
        agent_id,
        serials,
        [bool(r.get("online", True)) for r in reports],
        [bool(r.get("healthy", True)) for r in reports],
        [r.get("health_reason") for r in reports],
        [r.get("model") for r in reports],
        [r.get("android_version") for r in reports],
        [r.get("battery") for r in reports],
        [r.get("screen_on") for r in reports],
        ["\x1f".join(r.get("tags") or []) or None for r in reports],
        [paused_serials is not None and r["serial"] in paused_serials for r in reports],
        paused_serials is not None,
    )
    ids = [r["id"] for r in rows]
    # New phones, and on a hello every phone (its facts may have changed): jobs waiting for them wait no more.
    await waiting.for_devices(conn, [r["id"] for r in rows if r["connected"] and (full or r["inserted"])])
    if full:
        gone = await conn.fetch(
            "UPDATE devices SET connected = false WHERE agent_id = $1 AND NOT (serial = ANY($2::text[]))"
            " AND connected RETURNING id",
            agent_id, serials,
        )
        ids.extend(r["id"] for r in gone)
    return ids, await refresh_states(conn, ids), refused


async def refresh_states(conn: Conn, device_ids: Sequence[int]) -> list[DeviceChange]:
    """Recompute ``state`` from the facts; returns the rows whose state changed, before and after."""
    if not device_ids:
        return []
    changed = await conn.fetch(
        f"""
        WITH cur AS (
            SELECT devices.id, devices.state AS old_state, {state_expr()} AS new_state
            FROM devices WHERE devices.id = ANY($1::bigint[]) ORDER BY devices.id FOR UPDATE
        )
        UPDATE devices SET state = cur.new_state,
               idle_since = CASE WHEN cur.new_state = 'idle' THEN now() ELSE devices.idle_since END
        FROM cur WHERE devices.id = cur.id AND cur.new_state <> cur.old_state AND devices.state = ANY($2::text[])
        RETURNING devices.id, devices.agent_id, devices.serial, cur.old_state, devices.state
        """,
        list(device_ids), every_state(DEVICE_TRANSITIONS), record_class=DeviceChange,
    )
    back = [r.id for r in changed if r.state in CONNECTED_STATES and r.old_state not in CONNECTED_STATES]
    await waiting.for_devices(conn, back)  # connected again, healthy again, or let go
    return changed


async def disconnect_agent(conn: Conn, agent_id: int) -> list[DeviceChange]:
    rows = await conn.fetch(
        "UPDATE devices SET connected = false WHERE agent_id = $1 AND connected RETURNING id", agent_id
    )
    return await refresh_states(conn, [r["id"] for r in rows])


async def set_paused(
    conn: Conn, device_ids: Sequence[int], paused_by: str | None, *, only_from: str | None
) -> tuple[list[int], list[DeviceChange]]:
    """Pause (``paused_by`` set) or resume (None) phones; ``only_from`` limits a resume to one side's pauses."""
    rows = await conn.fetch(
        """UPDATE devices SET paused_by = $2
           WHERE id = ANY($1::bigint[])
             AND ($2::text IS NULL OR paused_by IS NULL OR $2 = 'server')
             AND ($3::text IS NULL OR paused_by = $3)
           RETURNING id""",
        list(device_ids), paused_by, only_from,
    )
    ids = [r["id"] for r in rows]
    return ids, await refresh_states(conn, ids)


async def ids_of_agent(conn: Conn, agent_id: int, serial: str | None = None) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM devices WHERE agent_id = $1 AND ($2::text IS NULL OR serial = $2) ORDER BY id",
        agent_id, serial,
    )
    return [r["id"] for r in rows]


async def get(conn: Conn, device_id: int) -> DeviceRecord | None:
    return await conn.fetchrow(
        f"SELECT {DEVICE_COLUMNS} FROM devices d JOIN agents ag ON ag.id = d.agent_id WHERE d.id = $1", device_id,
        record_class=DeviceRecord,
    )


async def get_many(conn: Conn, device_ids: Sequence[int]) -> list[DeviceRecord]:
    return await conn.fetch(
        f"SELECT {DEVICE_COLUMNS} FROM devices d JOIN agents ag ON ag.id = d.agent_id"
        " WHERE d.id = ANY($1::bigint[]) ORDER BY d.id",
        list(device_ids), record_class=DeviceRecord,
    )


async def list_all(conn: Conn, *, state: str | None = None, agent_id: int | None = None) -> list[DeviceRecord]:
    return await conn.fetch(
        f"""SELECT {DEVICE_COLUMNS} FROM devices d JOIN agents ag ON ag.id = d.agent_id
            WHERE ($1::text IS NULL OR d.state = $1) AND ($2::bigint IS NULL OR d.agent_id = $2)
            ORDER BY ag.name, d.serial""",
        state, agent_id, record_class=DeviceRecord,
    )


async def paused_serials(conn: Conn, agent_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT serial FROM devices WHERE agent_id = $1 AND paused_by IS NOT NULL ORDER BY serial", agent_id
    )
    return [r["serial"] for r in rows]


async def counts_by_state(conn: Conn) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*)::int AS n FROM devices GROUP BY state")
    counts = {s: 0 for s in ("idle", "busy", "paused", "offline", "unhealthy")}
    counts.update({r["state"]: r["n"] for r in rows})
    return counts


async def count_idle(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM devices WHERE state = 'idle'"))
