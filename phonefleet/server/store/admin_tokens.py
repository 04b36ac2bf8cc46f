"""SQL of admin tokens: named, unique by name, revocable; only their hashes are stored."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from phonefleet.server.store import Conn
from phonefleet.server.store.records import AdminTokenRecord

COLUMNS = "id, name, created_at, last_used_at"

LAST_USED_EVERY_SEC = 60
"""``last_used_at`` is written at most this often per token: a busy dashboard must not write on every request."""


async def add(conn: Conn, name: str, token_hash: str) -> AdminTokenRecord | None:
    """The new token's row, or None when the name is taken (by another process too: the key decides)."""
    return await conn.fetchrow(
        f"""INSERT INTO admin_tokens (name, token_hash) VALUES ($1, $2)
            ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}""",
        name, token_hash, record_class=AdminTokenRecord,
    )


async def by_hash(conn: Conn, token_hash: str) -> AdminTokenRecord | None:
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM admin_tokens WHERE token_hash = $1", token_hash,
                               record_class=AdminTokenRecord)


async def mark_used(conn: Conn, token: AdminTokenRecord) -> None:
    """Record a use, unless one was recorded within the last minute."""
    last = token.last_used_at
    if last is None or datetime.now(UTC) - last > timedelta(seconds=LAST_USED_EVERY_SEC):
        await conn.execute("UPDATE admin_tokens SET last_used_at = now() WHERE id = $1", token.id)


async def list_all(conn: Conn) -> list[AdminTokenRecord]:
    return await conn.fetch(f"SELECT {COLUMNS} FROM admin_tokens ORDER BY name", record_class=AdminTokenRecord)


async def count(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM admin_tokens"))


async def delete(conn: Conn, name: str) -> int | None:
    """Revoke by name; the id of the token removed, or None when no token has that name."""
    token_id = await conn.fetchval("DELETE FROM admin_tokens WHERE name = $1 RETURNING id", name)
    return int(token_id) if token_id is not None else None


async def existing_ids(conn: Conn, ids: Sequence[int]) -> set[int]:
    rows = await conn.fetch("SELECT id FROM admin_tokens WHERE id = ANY($1::bigint[])", list(ids))
    return {r["id"] for r in rows}
