"""Where Supabase's API roles exist, and which of phonefleet's tables still lack Row Level Security."""

from phonefleet.server.store import Conn

SUPABASE_ROLES = ("anon", "authenticated")
"""The roles PostgREST and Realtime query as (service_role, BYPASSRLS in Supabase, is not limited by RLS)."""


async def supabase_roles_exist(conn: Conn) -> bool:
    found = await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", list(SUPABASE_ROLES))
    return bool(found == len(SUPABASE_ROLES))


async def without_rls(conn: Conn, tables: tuple[str, ...]) -> list[str]:
    """Those of ``tables`` (in this schema) whose rows RLS does not guard, in the order given."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
        " AND c.relname = ANY($1::text[]) AND c.relkind = 'r' AND NOT c.relrowsecurity", list(tables))
    found = {r["relname"] for r in rows}
    return [t for t in tables if t in found]


async def tables(conn: Conn) -> list[str]:
    """Every ordinary table in this schema (to check that none of phonefleet's was left out of RLS)."""
    rows = await conn.fetch("SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                            " AND relkind IN ('r', 'p') ORDER BY relname")
    return [r["relname"] for r in rows]


async def apply(conn: Conn, migration_sql: str, lock_key: int) -> None:
    """Run the RLS migration's SQL again, in one transaction, under the migrations' advisory lock (two nodes
    starting at once apply it one after the other)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(migration_sql)
