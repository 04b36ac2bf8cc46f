"""SQL of teams and their members (migration 0016)."""

from phonefleet.server.store import Conn


async def exists(conn: Conn, team_id: int) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)", team_id))
