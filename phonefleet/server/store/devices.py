"""SQL of devices: reports from agents, pauses, listings."""

from collections.abc import Sequence
from typing import Any

from phonefleet.protocol.enums import DeviceEventKind, DeviceState
from phonefleet.protocol.states import DEVICE_STATE_PRECEDENCE, DEVICE_TRANSITIONS, every_state
from phonefleet.server.store import Conn, Row, device_events, teams_arg, waiting
from phonefleet.server.store.records import AttentionRecord, DeviceChange, DeviceDetailRecord, DeviceRecord

CONNECTED_STATES = ("idle", "busy")
"""States of a phone that may take work now or once it is free."""

DEVICE_COLUMNS = """
    d.id, d.serial, d.agent_id, ag.name AS agent_name, d.model, d.android_version, d.tags, d.battery,
    d.state, d.paused_by, d.pause_reason, d.last_seen_at, d.health_reason,
    (d.health->>'battery_temp_c')::real AS battery_temp_c,
    d.quarantine_reason, d.recovering
"""

DETAIL_COLUMNS = f"""{DEVICE_COLUMNS},
    d.health, d.broken, d.unhealthy_since, d.quarantined_at, d.quarantined_by, d.released_at
"""

_STATE_FACTS: dict[DeviceState, str] = {
    DeviceState.quarantined: "{p}quarantined_at IS NOT NULL",
    DeviceState.recovering: "{p}recovering IS NOT NULL",
    DeviceState.offline: "NOT {p}connected",
    DeviceState.unhealthy: "NOT {p}healthy",
    DeviceState.paused: "{p}paused_by IS NOT NULL",
    DeviceState.busy: "EXISTS (SELECT 1 FROM assignments x WHERE x.device_id = {p}id"
                      " AND x.status IN ('pending', 'delivered', 'running'))",
}
"""The fact that puts a phone in each state; ``DEVICE_STATE_PRECEDENCE`` orders them (idle: none holds)."""


def state_expr(prefix: str = "devices.") -> str:
    """SQL: the state a phone should be in, from the facts about it; used by every write of ``state``."""
    whens = " ".join(f"WHEN {_STATE_FACTS[s].format(p=prefix)} THEN '{s}'"
                     for s in DEVICE_STATE_PRECEDENCE if s is not DeviceState.idle)
    return f"CASE {whens} ELSE 'idle' END"


HEALTH_FACTS = ("adb_state", "boot_completed", "battery", "battery_temp_c", "charging", "screen_on",
                "screen_locked", "data_free_mb", "probe_ms")
"""What the agent's probe reports of a phone, kept as it said it (``devices.health``)."""


def _health(report: dict[str, Any]) -> dict[str, Any] | None:
    facts = {k: report[k] for k in HEALTH_FACTS if report.get(k) is not None}
    return facts or None


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
                                 $8::int[], $9::bool[], $10::text[], $11::bool[], $13::jsonb[], $14::text[])
                AS t(serial, online, healthy, health_reason, model, android_version, battery_s,
                     screen_on, tags_s, agent_paused, health, broken_s)
        ), old AS (  -- the rows as they were: the statement's snapshot, before its own upsert
            SELECT d.id, d.connected, d.healthy, d.health_reason, d.recovering FROM devices d
            WHERE d.agent_id = $1 AND d.serial = ANY($2::text[])
        ), up AS (
        INSERT INTO devices AS devices (agent_id, serial, connected, healthy, health_reason, model,
                             android_version, battery, screen_on, tags, paused_by, last_seen_at, state, health,
                             broken, unhealthy_since)
        SELECT $1, i.serial, i.online, i.healthy, i.health_reason, i.model, i.android_version, i.battery_s,
               i.screen_on, CASE WHEN i.tags_s IS NULL THEN '{}'::text[] ELSE string_to_array(i.tags_s, E'\\x1f') END,
               CASE WHEN i.agent_paused THEN 'agent' END, now(),
               CASE WHEN NOT i.online THEN 'offline' WHEN NOT i.healthy THEN 'unhealthy'
                    WHEN i.agent_paused THEN 'paused' ELSE 'idle' END,
               i.health, CASE WHEN i.broken_s IS NULL THEN '{}'::text[] ELSE string_to_array(i.broken_s, E'\\x1f') END,
               CASE WHEN i.online AND NOT i.healthy THEN now() END
        FROM input i
        ON CONFLICT (agent_id, serial) DO UPDATE SET
            connected = EXCLUDED.connected, healthy = EXCLUDED.healthy,
            health_reason = EXCLUDED.health_reason,
            health = coalesce(EXCLUDED.health, devices.health),
            broken = EXCLUDED.broken,
            unhealthy_since = CASE WHEN EXCLUDED.connected AND NOT EXCLUDED.healthy
                                   THEN coalesce(devices.unhealthy_since, now()) END,
            model = coalesce(EXCLUDED.model, devices.model),
            android_version = coalesce(EXCLUDED.android_version, devices.android_version),
            battery = coalesce(EXCLUDED.battery, devices.battery),
            screen_on = coalesce(EXCLUDED.screen_on, devices.screen_on),
            tags = EXCLUDED.tags,
            paused_by = CASE WHEN $12::bool AND EXCLUDED.paused_by = 'agent' AND devices.paused_by IS NULL THEN 'agent'
                             WHEN $12::bool AND EXCLUDED.paused_by IS NULL AND devices.paused_by = 'agent' THEN NULL
                             ELSE devices.paused_by END,
            -- seen while connected, and at the moment it drops; an offline phone reported again keeps its time
            last_seen_at = CASE WHEN EXCLUDED.connected OR devices.connected THEN now() ELSE devices.last_seen_at END
        RETURNING devices.id, devices.connected, devices.healthy, devices.health_reason, devices.broken,
                  (devices.xmax = 0) AS inserted)
        SELECT up.*, old.connected AS was_connected, old.healthy AS was_healthy, old.health_reason AS old_reason,
               old.recovering
        FROM up LEFT JOIN old ON old.id = up.id
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
        [_health(r) for r in reports],
        ["\x1f".join(r.get("broken") or []) or None for r in reports],
    )
    await device_events.add_many(conn, _report_events(rows))
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
        await device_events.add_many(conn, [device_events.NewEvent(r["id"], DeviceEventKind.disconnected, "agent",
                                                                   "no longer listed by its agent") for r in gone])
    if paused_serials is not None:  # a hello: the agent (re)started, so no rung of its ladder runs any more
        ids.extend(await end_recoveries(conn, agent_id, "the agent started again"))
    return ids, await refresh_states(conn, ids), refused


def _report_events(rows: Sequence[Row]) -> list[device_events.NewEvent]:
    """What the reports changed in each phone's life: connected, disconnected, health changed."""
    out: list[device_events.NewEvent] = []
    for r in rows:
        was_connected = bool(r["was_connected"])  # None: a phone seen for the first time
        if r["connected"] != was_connected:
            kind = DeviceEventKind.connected if r["connected"] else DeviceEventKind.disconnected
            data: dict[str, Any] = {"first_seen": bool(r["inserted"])} if r["connected"] else {}
            if r["recovering"]:  # a rung (a reconnect, a reboot) takes it off: no flapping of its own
                data["recovering"] = r["recovering"]
            out.append(device_events.NewEvent(r["id"], kind, "agent", None, data))
        if r["connected"] and (r["healthy"] != r["was_healthy"] or r["health_reason"] != r["old_reason"]) and not (
                r["inserted"] and r["healthy"]):
            out.append(device_events.NewEvent(r["id"], DeviceEventKind.health_changed, "agent", r["health_reason"],
                                              {"healthy": r["healthy"], "broken": list(r["broken"])}))
    return out


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
    """The agent is gone: its phones are offline (not counted as the phones' own disconnects)."""
    rows = await conn.fetch(
        """UPDATE devices SET connected = false,  -- last seen when its agent last was (or now)
                  last_seen_at = greatest(last_seen_at, coalesce((SELECT a.last_seen_at FROM agents a WHERE a.id = $1),
                                                                 now()))
           WHERE agent_id = $1 AND connected RETURNING id""", agent_id
    )
    await device_events.add_many(conn, [device_events.NewEvent(r["id"], DeviceEventKind.disconnected, "server",
                                                               "its agent went away") for r in rows])
    ended = await end_recoveries(conn, agent_id, "its agent went away")
    return await refresh_states(conn, sorted({*(r["id"] for r in rows), *ended}))


async def end_recoveries(conn: Conn, agent_id: int, reason: str) -> list[int]:
    """Rungs the agent can no longer be running (it went away, or started again) end, unfinished."""
    rows = await conn.fetch(
        """WITH old AS (SELECT id, recovering FROM devices WHERE agent_id = $1 AND recovering IS NOT NULL
                        ORDER BY id FOR UPDATE)
           UPDATE devices d SET recovering = NULL FROM old WHERE d.id = old.id
           RETURNING d.id, old.recovering AS rung""",
        agent_id,
    )
    await device_events.add_many(conn, [device_events.NewEvent(
        r["id"], DeviceEventKind.recovery_ended, "server", reason, {"rung": r["rung"], "outcome": "abandoned"})
        for r in rows])
    return [r["id"] for r in rows]


async def set_paused(
    conn: Conn, device_ids: Sequence[int], paused_by: str | None, *, only_from: str | None
) -> tuple[list[int], list[DeviceChange]]:
    """Pause (``paused_by`` set) or resume (None) phones; ``only_from`` limits a resume to one side's pauses.
    Returns the phones whose pause changed (and the states that changed with them)."""
    rows = await conn.fetch(
        """UPDATE devices SET paused_by = $2, pause_reason = NULL
           WHERE id = ANY($1::bigint[]) AND paused_by IS DISTINCT FROM $2
             AND ($2::text IS NULL OR paused_by IS NULL OR $2 = 'server')
             AND ($3::text IS NULL OR paused_by = $3)
           RETURNING id""",
        list(device_ids), paused_by, only_from,
    )
    ids = [r["id"] for r in rows]
    return ids, await refresh_states(conn, ids)


async def set_control_pause(conn: Conn, device_id: int, reason: str | None) -> tuple[bool, list[DeviceChange]]:
    """Pause a phone for remote control (``reason`` set: only a phone nobody paused) or end that pause (None: only
    a control pause; a server or agent pause made meanwhile stays). True when the pause changed."""
    if reason is not None:
        row = await conn.fetchrow(
            "UPDATE devices SET paused_by = 'control', pause_reason = $2 WHERE id = $1 AND paused_by IS NULL "
            "RETURNING id", device_id, reason)
    else:
        row = await conn.fetchrow(
            "UPDATE devices SET paused_by = NULL, pause_reason = NULL WHERE id = $1 AND paused_by = 'control' "
            "RETURNING id", device_id)
    if row is None:
        return False, []
    return True, await refresh_states(conn, [device_id])


async def end_control_pauses(conn: Conn) -> list[int]:
    """Control pauses no session holds (a server stopped with phones under control): given back."""
    rows = await conn.fetch("UPDATE devices SET paused_by = NULL, pause_reason = NULL WHERE paused_by = 'control' "
                            "RETURNING id")
    ids = [r["id"] for r in rows]
    await refresh_states(conn, ids)
    return ids


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


async def get_detail(conn: Conn, device_id: int) -> DeviceDetailRecord | None:
    return await conn.fetchrow(
        f"SELECT {DETAIL_COLUMNS} FROM devices d JOIN agents ag ON ag.id = d.agent_id WHERE d.id = $1", device_id,
        record_class=DeviceDetailRecord,
    )


async def needing_attention(conn: Conn, limit: int = 1000, teams: Sequence[int] | None = None,
                            ) -> list[AttentionRecord]:
    """Quarantined, recovering and unhealthy phones (of ``teams``' agents; None: all), with since when."""
    return await conn.fetch(
        f"""SELECT {DEVICE_COLUMNS},
                   CASE d.state WHEN 'quarantined' THEN d.quarantined_at WHEN 'unhealthy' THEN d.unhealthy_since
                   END AS since
            FROM devices d JOIN agents ag ON ag.id = d.agent_id
            WHERE d.state IN ('quarantined', 'recovering', 'unhealthy')
              AND ($2::bigint[] IS NULL OR ag.team_id = ANY($2))
            ORDER BY d.id LIMIT $1""",
        limit, teams_arg(teams), record_class=AttentionRecord,
    )


def of_teams(param: int) -> str:
    """SQL: phone ``d`` hangs off an agent of the teams in parameter ``param`` (a ``teams_arg``; None: any)."""
    return (f"(${param}::bigint[] IS NULL OR (SELECT tg.team_id FROM agents tg WHERE tg.id = d.agent_id)"
            f" = ANY(${param}))")


async def connected_ids(conn: Conn, teams: Sequence[int] | None = None) -> list[int]:
    rows = await conn.fetch(f"SELECT d.id FROM devices d WHERE d.connected AND {of_teams(1)} ORDER BY d.id",
                            teams_arg(teams))
    return [r["id"] for r in rows]


async def get_many(conn: Conn, device_ids: Sequence[int]) -> list[DeviceRecord]:
    return await conn.fetch(
        f"SELECT {DEVICE_COLUMNS} FROM devices d JOIN agents ag ON ag.id = d.agent_id"
        " WHERE d.id = ANY($1::bigint[]) ORDER BY d.id",
        list(device_ids), record_class=DeviceRecord,
    )


async def list_all(conn: Conn, *, state: str | None = None, agent_id: int | None = None,
                   teams: Sequence[int] | None = None) -> list[DeviceRecord]:
    """Phones by agent and serial; ``teams``: only those of these teams' agents (None: every team)."""
    return await conn.fetch(
        f"""SELECT {DEVICE_COLUMNS} FROM devices d JOIN agents ag ON ag.id = d.agent_id
            WHERE ($1::text IS NULL OR d.state = $1) AND ($2::bigint IS NULL OR d.agent_id = $2)
              AND ($3::bigint[] IS NULL OR ag.team_id = ANY($3))
            ORDER BY ag.name, d.serial""",
        state, agent_id, teams_arg(teams), record_class=DeviceRecord,
    )


async def paused_serials(conn: Conn, agent_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT serial FROM devices WHERE agent_id = $1 AND paused_by IS NOT NULL ORDER BY serial", agent_id
    )
    return [r["serial"] for r in rows]


async def counts_by_state(conn: Conn, teams: Sequence[int] | None = None) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT d.state, count(*)::int AS n FROM devices d WHERE {of_teams(1)} GROUP BY d.state",
                            teams_arg(teams))
    counts = {str(s): 0 for s in DeviceState}
    counts.update({r["state"]: r["n"] for r in rows})
    return counts


async def count_connected(conn: Conn, teams: Sequence[int] | None = None) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM devices d WHERE d.connected AND {of_teams(1)}",
                                   teams_arg(teams)))


async def count_idle(conn: Conn, teams: Sequence[int] | None = None) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM devices d WHERE d.state = 'idle' AND {of_teams(1)}",
                                   teams_arg(teams)))
