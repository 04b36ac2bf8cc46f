"""SQL of agents (and their token) and agent-side job pauses."""

from collections.abc import Sequence
from typing import Any

from phonefleet.protocol.enums import AgentStatus
from phonefleet.protocol.states import AGENT_TRANSITIONS, every_state, sources_of
from phonefleet.server.store import DEFAULT_TEAM, Conn
from phonefleet.server.store.records import AgentIdentity, AgentRecord

AGENT_COLUMNS = """
    a.id, a.name, a.hostname, a.version, a.status, a.paused, a.max_running, a.last_seen_at, a.created_at,
    (a.last_seen_at IS NOT NULL AND a.last_seen_at > now() - make_interval(secs => $1)) AS connected,
    (SELECT count(*) FROM devices d WHERE d.agent_id = a.id AND d.connected)::int AS device_count,
    a.token_hash IS NULL AS token_revoked, a.token_changed_at, a.team_id
"""


async def create(conn: Conn, name: str, token_hash: str, team_id: int = DEFAULT_TEAM) -> int:
    """The new agent's id."""
    return int(await conn.fetchval("INSERT INTO agents (name, token_hash, team_id) VALUES ($1, $2, $3) RETURNING id",
                                   name, token_hash, team_id))


async def get(conn: Conn, agent_id: int, grace_sec: float) -> AgentRecord | None:
    return await conn.fetchrow(f"SELECT {AGENT_COLUMNS} FROM agents a WHERE a.id = $2", grace_sec, agent_id,
                               record_class=AgentRecord)


async def list_all(conn: Conn, grace_sec: float) -> list[AgentRecord]:
    return await conn.fetch(f"SELECT {AGENT_COLUMNS} FROM agents a ORDER BY a.name", grace_sec,
                            record_class=AgentRecord)


async def by_token_hash(conn: Conn, token_hash: str) -> AgentIdentity | None:
    return await conn.fetchrow("SELECT id, name, paused, team_id FROM agents WHERE token_hash = $1", token_hash,
                               record_class=AgentIdentity)


async def online_ids(conn: Conn) -> list[int]:
    """Agents that are connected (online or paused)."""
    rows = await conn.fetch("SELECT id FROM agents WHERE status <> 'offline' ORDER BY id")
    return [r["id"] for r in rows]


async def id_by_name(conn: Conn, name: str) -> int | None:
    agent_id = await conn.fetchval("SELECT id FROM agents WHERE name = $1", name)
    return int(agent_id) if agent_id is not None else None


async def replace_token(conn: Conn, agent_id: int, token_hash: str | None) -> bool:
    """Revoke (None) or rotate the agent's token. The old token stops working with this commit, and the
    lease rescuer retires the agent at its next run, as if its grace had expired (``retire_pending``)."""
    status = await conn.execute(
        """UPDATE agents SET token_hash = $2, token_changed_at = now(), retire_pending = true
           WHERE id = $1""",
        agent_id, token_hash,
    )
    return str(status).endswith(" 1")


async def token_hashes(conn: Conn, agent_ids: list[int]) -> dict[int, str | None]:
    """The current token hash of each of these agents (None: revoked); unknown ids are left out."""
    rows = await conn.fetch("SELECT id, token_hash FROM agents WHERE id = ANY($1::bigint[])", agent_ids)
    return {r["id"]: r["token_hash"] for r in rows}


async def max_running(conn: Conn, agent_id: int) -> int | None:
    """The agent's cap (locked for the change that follows); None when uncapped or unknown."""
    value = await conn.fetchval("SELECT max_running FROM agents WHERE id = $1 FOR UPDATE", agent_id)
    return None if value is None else int(value)


async def set_max_running(conn: Conn, agent_id: int, max_running: int | None) -> bool:
    status = await conn.execute("UPDATE agents SET max_running = $2 WHERE id = $1", agent_id, max_running)
    return str(status).endswith(" 1")


async def name_exists(conn: Conn, name: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM agents WHERE name = $1)", name))


async def hello(conn: Conn, agent_id: int, hostname: str | None, version: str | None, paused: bool, *,
                max_running: int | None = None) -> None:
    await conn.execute(
        """UPDATE agents SET hostname = coalesce($2, hostname), version = coalesce($3, version),
               paused = $4, status = CASE WHEN $4 THEN 'paused' ELSE 'online' END, last_seen_at = now(),
               max_running = coalesce($5, max_running), retire_pending = false
           WHERE id = $1 AND status = ANY($6::text[])""",
        agent_id, hostname, version, paused, max_running, every_state(AGENT_TRANSITIONS),
    )


async def touch(conn: Conn, agent_id: int) -> bool:
    """Record that the agent is alive; True when it was considered gone (offline) before."""
    was_offline = await conn.fetchval(
        """UPDATE agents a SET last_seen_at = now(),
               status = CASE WHEN a.paused THEN 'paused' ELSE 'online' END
           FROM (SELECT status FROM agents WHERE id = $1) old
           WHERE a.id = $1 AND a.status = ANY($2::text[]) RETURNING old.status = 'offline'""",
        agent_id, every_state(AGENT_TRANSITIONS),
    )
    return bool(was_offline)


async def touch_many(conn: Conn, agent_ids: Sequence[int]) -> set[int]:
    """``touch`` for many agents in one statement (a batch of heartbeats), their rows locked in id order (as an
    UPDATE locks them: never blocking a key-share lock);
    returns the ids of those that were considered gone (offline) before."""
    rows = await conn.fetch(
        """UPDATE agents a SET last_seen_at = now(),
               status = CASE WHEN a.paused THEN 'paused' ELSE 'online' END
           FROM (SELECT id, status FROM agents WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE) old
           WHERE a.id = old.id AND a.status = ANY($2::text[]) RETURNING a.id, old.status = 'offline' AS gone""",
        list(agent_ids), every_state(AGENT_TRANSITIONS),
    )
    return {r["id"] for r in rows if r["gone"]}


async def set_paused(conn: Conn, agent_id: int, paused: bool) -> None:
    await conn.execute(
        """UPDATE agents SET paused = $2,
               status = CASE WHEN status = 'offline' THEN 'offline'
                             WHEN $2 THEN 'paused' ELSE 'online' END
           WHERE id = $1 AND status = ANY($3::text[])""",
        agent_id, paused, every_state(AGENT_TRANSITIONS),
    )


async def expire_silent(conn: Conn, grace_sec: float, limit: int = 1000) -> list[int]:
    """Mark agents silent past their grace offline, and those whose token was revoked or rotated since
    their last hello (``retire_pending``), at most ``limit``; returns their ids."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT id FROM agents
               WHERE (status = ANY($2::text[]) AND (last_seen_at IS NULL
                      OR last_seen_at < now() - make_interval(secs => $1)))
                  OR retire_pending
               ORDER BY id LIMIT $4)
           UPDATE agents SET status = 'offline', retire_pending = false
           WHERE status = ANY($3::text[])  -- a retired token takes its agent offline from any state
             AND id IN (SELECT id FROM due)
           RETURNING id""",
        grace_sec, sources_of(AGENT_TRANSITIONS, AgentStatus.offline), every_state(AGENT_TRANSITIONS), limit,
    )
    return [r["id"] for r in rows]


async def pause_job(conn: Conn, agent_id: int, job_id: int) -> bool:
    status = await conn.execute(
        """INSERT INTO agent_job_pauses (agent_id, job_id)
           SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $2)
           ON CONFLICT DO NOTHING""",
        agent_id, job_id,
    )
    return str(status).endswith(" 1")


async def resume_job(conn: Conn, agent_id: int, job_id: int) -> bool:
    """Lift an agent's pause of a job; the job may find phones there again (no longer starved)."""
    lifted = await conn.fetchval(
        """WITH lifted AS (DELETE FROM agent_job_pauses WHERE agent_id = $1 AND job_id = $2 RETURNING job_id),
                freed AS (UPDATE jobs SET starved = false WHERE id IN (SELECT job_id FROM lifted) AND starved)
           SELECT count(*) FROM lifted""",
        agent_id, job_id,
    )
    return bool(lifted)


async def paused_job_ids(conn: Conn, agent_id: int) -> list[int]:
    rows = await conn.fetch("SELECT job_id FROM agent_job_pauses WHERE agent_id = $1 ORDER BY job_id", agent_id)
    return [r["job_id"] for r in rows]


async def counts_by_status(conn: Conn, grace_sec: float) -> dict[str, Any]:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'online')::int AS online,
                  count(*) FILTER (WHERE status = 'paused')::int AS paused,
                  count(*) FILTER (WHERE status = 'offline')::int AS offline,
                  count(*) FILTER (WHERE last_seen_at > now() - make_interval(secs => $1))::int AS connected
           FROM agents""",
        grace_sec,
    )
    assert row is not None
    return dict(row.items())
